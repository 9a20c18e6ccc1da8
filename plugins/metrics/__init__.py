"""Built-in metric plugins. Registration is lazy: nothing heavy is imported here.

Definitions, defaults and the assets each metric needs are documented in docs/metrics.md.
"""

from vlmbench.api import hookimpl


@hookimpl
def register_metrics(register):
    register(
        "exact_match",
        "vlmbench_plugins.metrics.exact_match:ExactMatch",
        summary="1 if prediction and reference are equal after VQA normalisation",
    )
    register(
        "average_mark",
        "vlmbench_plugins.metrics.average_mark:AverageMark",
        summary="Difficulty-weighted accuracy: sum(correct * weight[difficulty]) / sum(weight[difficulty])",
        level="corpus",
    )
    register(
        "wups",
        "vlmbench_plugins.metrics.wups:Wups",
        summary="Wu-Palmer set similarity (Malinowski & Fritz) at 0.0 and 0.9, and their weighted mean",
        outputs=("wups_0.0", "wups_0.9", "wups_weighted"),
        assets=("wordnet",),
    )
    register(
        "meteor",
        "vlmbench_plugins.metrics.meteor:Meteor",
        summary="METEOR (nltk meteor_score on whitespace tokens, default parameters)",
        assets=("wordnet",),
    )
    register(
        "sbert",
        "vlmbench_plugins.metrics.sbert:SbertCosine",
        summary="Cosine similarity of sentence-transformers embeddings (all-MiniLM-L6-v2)",
        assets=("sentence-transformers/all-MiniLM-L6-v2",),
    )
    register(
        "bertscore",
        "vlmbench_plugins.metrics.bertscore:BertScore",
        summary="BERTScore precision/recall/F1 (roberta-large, layer 17, baseline-rescaled)",
        outputs=("bertscore_precision", "bertscore_recall", "bertscore_f1"),
        assets=("roberta-large", "bert-score rescale baseline"),
    )
    register(
        "bartscore",
        "vlmbench_plugins.metrics.bartscore:BartScore",
        summary="BARTScore mean token log-likelihood: precision ref->pred, recall pred->ref, F = mean",
        outputs=("bartscore_precision", "bartscore_recall", "bartscore_f"),
        assets=("facebook/bart-large-cnn",),
    )
