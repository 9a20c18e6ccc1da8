"""The suite's registrations: outputs, levels, assets, and no heavy imports when listing."""

from __future__ import annotations

import subprocess
import sys

from vlmbench.plugin.loading import load_plugins
from vlmbench.scoring.rescore import DEFAULT_METRICS
from vlmbench.tasks.spec import load_spec

EXPECTED_OUTPUTS = {
    "exact_match": ("exact_match",),
    "average_mark": ("average_mark",),
    "wups": ("wups_0.0", "wups_0.9", "wups_weighted"),
    "meteor": ("meteor",),
    "sbert": ("sbert",),
    "bertscore": ("bertscore_precision", "bertscore_recall", "bertscore_f1"),
    "bartscore": ("bartscore_precision", "bartscore_recall", "bartscore_f"),
}


def test_every_metric_of_the_suite_is_registered():
    metrics = load_plugins().metrics
    for name, outputs in EXPECTED_OUTPUTS.items():
        entry = metrics.get(name)
        assert entry.outputs == outputs and entry.higher_is_better
        assert entry.level == ("corpus" if name == "average_mark" else "sample")
    assert metrics.get("wups").assets == ("wordnet",) and metrics.get("meteor").assets == ("wordnet",)
    assert "roberta-large" in metrics.get("bertscore").assets
    assert set(DEFAULT_METRICS) == set(EXPECTED_OUTPUTS)


def test_listing_metrics_imports_nothing_heavy():
    code = (
        "import sys; from vlmbench.plugin.loading import load_plugins; p = load_plugins(); list(p.metrics);"
        "heavy = [m for m in ('torch', 'nltk', 'transformers', 'sentence_transformers', 'bert_score') "
        "if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_bundled_tasks_use_the_suite_with_normalised_wups():
    from pathlib import Path

    from vlmbench_tasks import __file__ as tasks_init

    for name in ("abo_sample.yaml", "abo_single_word.yaml"):
        spec = load_spec(Path(tasks_init).parent / name)
        names = [m.name for m in spec.metrics]
        assert names == list(DEFAULT_METRICS)
        wups = next(m for m in spec.metrics if m.name == "wups")
        assert wups.options["mode"] == "normalized"
