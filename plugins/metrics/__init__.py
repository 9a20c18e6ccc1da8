"""Built-in metric plugins. Registration is lazy: nothing heavy is imported here."""

from vlmbench.hookspecs import hookimpl


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
