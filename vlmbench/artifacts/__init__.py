"""Run artifacts on disk: results.json and predictions.jsonl (written atomically, read with checks) and
the provenance recorded in them."""
