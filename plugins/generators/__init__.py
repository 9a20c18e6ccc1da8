"""Built-in QA generators for dataset curation. Registration is lazy: nothing heavy is imported here."""

from vlmbench.api import hookimpl


@hookimpl
def register_generators(register):
    register(
        "attributes",
        "vlmbench_plugins.generators.attributes:AttributesGenerator",
        summary="Deterministic questions from the listing's structured metadata (colour, material, shape...)",
    )
    register(
        "gemini",
        "vlmbench_plugins.generators.gemini:GeminiGenerator",
        summary="The study's approach: Gemini (2.0 Flash by default) asked for single-word QA from image + description",
        needs_network=True,
    )
    register(
        "local",
        "vlmbench_plugins.generators.local:LocalGenerator",
        summary="Any vlmbench model plugin that can generate (e.g. Qwen2.5-VL), on this machine",
    )
