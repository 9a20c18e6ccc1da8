"""Registers the model and a command. Keep this module light: vlmbench imports it to list plugins."""

from vlmbench.api import hookimpl


@hookimpl
def register_models(register):
    register(
        "dominant-color",
        "vlmbench_dominant_color.model:DominantColor",
        summary="Answers every question with the name of the image's most common colour",
        request_types=("generate", "rank"),
        parameters="0",
    )


@hookimpl
def register_commands(cli):
    from vlmbench_dominant_color.fit import fit_palette

    cli.add_command(fit_palette)
