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
    register(
        "ofa",
        "vlmbench_plugins.models.ofa.plugin:OFAModel",
        summary="OFA (One For All) encoder-decoder: beam-search answers, Trie-constrained or all-candidate ranking",
        default_checkpoint="OFA-Sys/ofa-base",
        request_types=("generate", "rank"),
        parameters="182M",
    )


# -- OFA: `vlmbench check-parity ofa FIXTURE.pt` ------------------------------------------------
@hookimpl(specname="register_commands")
def register_ofa_commands(cli):
    from vlmbench_plugins.models.ofa.commands import add_commands

    add_commands(cli)
