"""Built-in model plugins. Registration is lazy: nothing heavy is imported here."""

from vlmbench.hookspecs import hookimpl


@hookimpl
def register_models(register):
    register(
        "prior",
        "vlmbench_plugins.models.prior:PriorModel",
        summary="Blind baseline: most frequent answer among the most similar training questions (no image, no weights)",
        request_types=("generate", "rank"),
        parameters="0",
    )
