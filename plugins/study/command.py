"""``vlmbench study``: the study's model table, LoRA grid, 8-bit row and figures in one command.

Importing this module is cheap (click only); the recipe loads when the command runs.
"""

from __future__ import annotations

from pathlib import Path

import click

from vlmbench.api import EXIT_NOTHING_EVALUATED, parse_batch_size


@click.command("study")
@click.option("--config", "-c", default="study", show_default=True,
              help="Run file of the model table: a bundled name (`vlmbench list configs`) or a YAML path.")  # fmt: skip
@click.option("--task", "-t", help="Task of every step [default: the run file's task].")
@click.option("--output-dir", "-o", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/study"),
              show_default=True, help="Folder of every run, the figures and report.md.")  # fmt: skip
@click.option("--model-args", "-a", "model_args", multiple=True, metavar="NAME:k=v,...",
              help="Arguments for the run file's model NAME, e.g. -a vilbert:pretrained=DIR.")  # fmt: skip
@click.option("--lora/--no-lora", default=True, show_default=True,
              help="Train and evaluate the study's five LoRA configurations of BLIP (`vlmbench sweep`).")  # fmt: skip
@click.option(
    "--lora-base", default="blip", show_default=True, help="Model plugin the adapters are trained on."
)
@click.option("--lora-set", "lora_settings", multiple=True, metavar="KEY=VALUE",
              help="A fine-tuning option of every LoRA run, e.g. --lora-set epochs=3 (see `vlmbench finetune --help`).")  # fmt: skip
@click.option("--quantization/--no-quantization", default=True, show_default=True,
              help="Evaluate the best adapter (by average_mark) with 8-bit base weights (bitsandbytes).")  # fmt: skip
@click.option("--device", help="auto, cpu, cuda, cuda:N or mps [default: auto].")
@click.option("--dtype", help="Weights' dtype: auto, float32, bfloat16, float16 [default: auto].")
@click.option(
    "--batch-size", "-b", help="Batch size of the evaluations, or 'auto' on a GPU [default: the run file's]."
)
@click.option("--limit", help="Evaluate only the first N test samples (or a fraction, e.g. 0.1).")
@click.option("--metrics", help="Comma-separated metrics instead of the protocol's (or the task's).")
@click.option("--metric-args", multiple=True, metavar="METRIC:K=V,...",
              help="Options of one scored metric in every evaluation, e.g. wups:weight=0.5 (as for `vlmbench run`).")  # fmt: skip
@click.option("--protocol", default="study", show_default=True, metavar="NAME|FILE|none",
              help="How every step asks, scores, trains and quantises (`vlmbench list protocols`); "
                   "none: vlmbench's own defaults. docs/study.md compares them.")  # fmt: skip
@click.option("--seed", type=int, help="Seed of sampling and of the bootstrap [default: 0].")
@click.option("--with-paper", is_flag=True, help="Put the paper's reported values beside the report's own.")
@click.option(
    "--num-workers", type=click.IntRange(min=0), help="DataLoader workers [default: chosen per model]."
)
@click.option("--cache", type=click.Path(dir_okay=False, path_type=Path),
              help="Prediction cache file [default: ~/.cache/vlmbench/predictions.sqlite].")  # fmt: skip
@click.option("--no-cache", is_flag=True, help="Keep predictions in memory only.")
@click.option(
    "--quiet",
    "-q",
    is_flag=True,
    help="Print the report and errors only: no progress, no step lines, no library warnings.",
)
def study_command(config, task, output_dir, model_args, lora, lora_base, lora_settings, quantization, device,
                  dtype, batch_size, limit, metrics, metric_args, protocol, seed, with_paper, num_workers, cache,
                  no_cache, quiet) -> None:  # fmt: skip
    """Reproduce the study: the model table, per difficulty, the LoRA grid, the 8-bit rows and the figures.

    \b
    Steps (each resumes where it stopped when the command is run again):
      1. every model of the run file on the task        -> OUTPUT_DIR/models/
      2. the study's five LoRA configurations of BLIP   -> OUTPUT_DIR/lora/ (with the base model)
      3. 8-bit: the protocol's step (the study's: base BLIP, Linear layers > 256 outputs), then
         the best adapter with 8-bit base weights       -> OUTPUT_DIR/quantization/
      4. figures: the model table's, Figure 3, memory vs score -> OUTPUT_DIR/figures/
    and OUTPUT_DIR/report.md in the paper's layout, OUTPUT_DIR/study.json with where each number came
    from. Every step follows --protocol (default: the study's; see docs/study.md).

    \b
    On a GPU with the real checkpoints (see docs/study.md):
      vlmbench data download abo
      vlmbench data prepare abo_single_word -g gemini -a gemini:prompt=study
      vlmbench study --device cuda --batch-size auto -a vilbert:pretrained=DIR
    """
    from vlmbench.api import load_plugins
    from vlmbench_plugins.study.recipe import StudyOptions, plan_study, run_study

    run = {"device": device, "dtype": dtype, "limit": limit, "metrics": _split(metrics), "num_workers": num_workers,
           "seed": seed,
           "batch_size": None if batch_size is None else parse_batch_size(batch_size), "cache": False if no_cache else cache}  # fmt: skip
    run = {k: v for k, v in run.items() if v is not None}
    if quiet:
        run["progress"] = False
    options = StudyOptions(config, task, output_dir, list(model_args), lora, lora_base, list(lora_settings),
                           quantization, run, None if protocol.lower() == "none" else protocol,
                           list(metric_args), with_paper)  # fmt: skip
    plugins = load_plugins()
    plan = plan_study(options, plugins)
    # --quiet: the report only (and errors); otherwise each step as it starts.
    log = (lambda _text: None) if quiet else (lambda text: click.echo(text, err=True))
    result = run_study(plan, plugins, log=log)
    click.echo(result.report.read_text(encoding="utf-8"))
    log(f"report: {result.report}")
    if not any(row.status == "ok" for row, _ in result.models):
        click.secho("nothing was evaluated: every model of the table was skipped", fg="red", err=True)
        raise SystemExit(EXIT_NOTHING_EVALUATED)


def _split(value: str | None) -> list[str] | None:
    return [m.strip() for m in value.split(",") if m.strip()] if value else None
