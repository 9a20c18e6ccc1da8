"""Scoring answers: metric set-up over unique pairs, bootstrap statistics, metric assets, the scored rows
and blocks of results.json, and re-scoring stored or external predictions."""
