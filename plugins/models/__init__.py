"""Built-in model plugins. Registration is lazy: nothing heavy is imported here (no torch)."""

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
    register(
        "vilbert",
        "vlmbench_plugins.models.vilbert.plugin:VilbertModel",
        summary="ViLBERT 12-in-1 VQA head (closed vocabulary of 3129 answers); grid features are an approximation",
        default_checkpoint="multi_task_model.bin",
        request_types=("generate", "rank"),
        parameters="268M",
    )
    register(
        "ofa",
        "vlmbench_plugins.models.ofa.plugin:OFAModel",
        summary="OFA (One For All) encoder-decoder: beam-search answers, Trie-constrained or all-candidate ranking",
        default_checkpoint="OFA-Sys/ofa-base",
        request_types=("generate", "rank"),
        parameters="182M",
    )


@hookimpl
def register_commands(cli):
    # `vlmbench check-parity vilbert|ofa FIXTURE.pt`; the command modules import nothing heavy at load.
    from vlmbench_plugins.models.ofa.commands import add_commands as add_ofa
    from vlmbench_plugins.models.vilbert.commands import add_commands as add_vilbert

    add_vilbert(cli)
    add_ofa(cli)
