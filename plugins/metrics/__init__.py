"""Built-in metric plugins. Registration is lazy: nothing heavy is imported here.

Definitions, defaults and the assets each metric needs are documented in docs/metrics.md.
"""

from vlmbench.api import hookimpl

# One row per metric: registered name, implementation ("module:Class" below this package), and the
# assets it needs (for listings). A table, so that every metric is registered the same way.
_METRICS = (
    ("exact_match", "exact_match:ExactMatch", ()),
    ("average_mark", "average_mark:AverageMark", ()),
    ("wups", "wups:Wups", ("wordnet",)),
    ("meteor", "meteor:Meteor", ("wordnet",)),
    ("sbert", "sbert:SbertCosine", ("sentence-transformers/all-MiniLM-L6-v2",)),
    ("bertscore", "bertscore:BertScore", ("roberta-large", "bert-score rescale baseline")),
    ("bartscore", "bartscore:BartScore", ("facebook/bart-large-cnn",)),
)

# What `vlmbench list` says of each metric.
_SUMMARIES = {
    "exact_match": "1 if prediction and reference are equal after VQA normalisation",
    "average_mark": "Difficulty-weighted accuracy: sum(correct * weight[difficulty]) / sum(weight[difficulty])",
    "wups": "Wu-Palmer set similarity (Malinowski & Fritz) at 0.0 and 0.9, and their weighted mean",
    "meteor": "METEOR (nltk meteor_score on whitespace tokens, default parameters)",
    "sbert": "Cosine similarity of sentence-transformers embeddings (all-MiniLM-L6-v2)",
    "bertscore": "BERTScore precision/recall/F1 (roberta-large, layer 17, baseline-rescaled)",
    "bartscore": "BARTScore mean token log-likelihood: precision ref->pred, recall pred->ref, F = mean",
}

# The score columns of metrics that produce more than the one column named like the metric.
_OUTPUTS = {
    "wups": ("wups_0.0", "wups_0.9", "wups_weighted"),
    "bertscore": ("bertscore_precision", "bertscore_recall", "bertscore_f1"),
    "bartscore": ("bartscore_precision", "bartscore_recall", "bartscore_f"),
}

# Average mark is a statistic over the whole set; every other metric scores each sample.
_CORPUS_LEVEL = ("average_mark",)


@hookimpl
def register_metrics(register):
    for name, target, assets in _METRICS:
        meta: dict[str, object] = {"assets": assets, "outputs": _OUTPUTS.get(name, ())}
        if name in _CORPUS_LEVEL:
            meta["level"] = "corpus"
        register(name, f"vlmbench_plugins.metrics.{target}", summary=_SUMMARIES[name], **meta)
