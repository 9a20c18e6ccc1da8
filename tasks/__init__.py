"""Tasks bundled with vlmbench (installed as ``vlmbench_tasks``): every ``*.yaml`` in this folder, and
the run configurations in ``configs/`` (``vlmbench run --config NAME``) and the evaluation protocols in
``protocols/`` (``vlmbench run --protocol NAME``)."""

from pathlib import Path

from vlmbench.api import hookimpl


@hookimpl
def register_tasks(register):
    register(Path(__file__).parent)
    register(Path(__file__).parent / "configs")
    register(Path(__file__).parent / "protocols")
