"""Registers the model. Keep this module light: vlmbench imports it to list plugins."""

from vlmbench import hookimpl


@hookimpl
def register_models(register):
    register(
        "dominant-color",
        "vlmbench_dominant_color.model:DominantColor",
        summary="Answers every question with the name of the image's most common colour",
        request_types=("generate", "rank"),
        parameters="0",
    )
