"""Built-in metric plugins. Registration is lazy: nothing heavy is imported here.

Definitions, defaults and the assets each metric needs are documented in docs/metrics.md.
"""

from vlmbench.api import hookimpl

# One row per metric, the only place a built-in metric is registered: name, implementation ("module:Class"
# below this package), level (average mark is a statistic over the whole set; every other metric scores
# each sample), the assets it needs (for listings), the score columns of a metric that produces more
# than the one column named like it, and what `vlmbench list` says of it.
_METRICS = (
    ("exact_match", "exact_match:ExactMatch", "sample", (), (),
     "1 if prediction and reference are equal after VQA normalisation"),
    ("average_mark", "average_mark:AverageMark", "corpus", (), (),
     "Difficulty-weighted accuracy: sum(correct * weight[difficulty]) / sum(weight[difficulty])"),
    ("wups", "wups:Wups", "sample", ("wordnet",), ("wups_0.0", "wups_0.9", "wups_weighted"),
     "Wu-Palmer set similarity (Malinowski & Fritz) at 0.0 and 0.9, and their weighted mean"),
    ("meteor", "meteor:Meteor", "sample", ("wordnet",), (),
     "METEOR (nltk meteor_score on whitespace tokens, default parameters)"),
    ("sbert", "sbert:SbertCosine", "sample", ("sentence-transformers/all-MiniLM-L6-v2",), (),
     "Cosine similarity of sentence-transformers embeddings (all-MiniLM-L6-v2)"),
    ("bertscore", "bertscore:BertScore", "sample", ("roberta-large", "bert-score rescale baseline"),
     ("bertscore_precision", "bertscore_recall", "bertscore_f1"),
     "BERTScore precision/recall/F1 (roberta-large, layer 17, baseline-rescaled)"),
    ("bartscore", "bartscore:BartScore", "sample", ("facebook/bart-large-cnn",),
     ("bartscore_precision", "bartscore_recall", "bartscore_f"),
     "BARTScore mean token log-likelihood: precision ref->pred, recall pred->ref, F = mean"),
)  # fmt: skip


@hookimpl
def register_metrics(register):
    for name, target, level, assets, outputs, summary in _METRICS:
        register(
            name,
            f"vlmbench_plugins.metrics.{target}",
            summary=summary,
            level=level,
            assets=assets,
            outputs=outputs,
        )
