"""``vlmbench finetune`` and ``vlmbench sweep``: thin click commands over the fine-tuning modules.

The BLIP plugin adds them to the CLI through the ``register_commands`` hook. Importing this module is
cheap (click and the presets, no torch): ``vlmbench list`` loads it too. Torch, transformers and peft
load when a command runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from vlmbench_plugins.models.blip.finetune.presets import PRESETS

_PRESET_HELP = "; ".join(f"{p.name} = {p.study_name}" for p in PRESETS.values())


def _option(*decls: str, default: Any, help: str, **kwargs: Any) -> Callable[[Callable], Callable]:
    """A click option whose default --help shows: the defaults are the study's settings, so a reader
    of --help sees what a plain run does. Click takes the type from the default (int, float, bool)
    unless ``type`` is given."""
    return click.option(*decls, default=default, show_default=True, help=help, **kwargs)


def _choice(
    name: str, choices: Sequence[str], help: str, default: str | None = None
) -> Callable[[Callable], Callable]:
    """An option taking one of ``choices``; the default (shown) is the first unless ``default`` says."""
    return _option(name, default=default or choices[0], help=help, type=click.Choice(list(choices)))


def _output_dir_option(help: str) -> Callable[[Callable], Callable]:
    """``--output-dir``, required by both commands; only what goes into the folder differs."""
    return click.option(
        "--output-dir", "-o", type=click.Path(file_okay=False, path_type=Path), required=True, help=help
    )


@click.command("finetune")
@_option("--model", "-m", default="blip", help="Base model plugin to fine-tune (a BLIP VQA plugin).")
@click.option(
    "--task",
    "-t",
    required=True,
    help="Task whose train split is learned and whose val split is validated on (name or YAML path).",
)
@_output_dir_option("Folder for checkpoints, logs and the adapters best/ and last/.")
@click.option("--name", help="Run name shown in leaderboards [default: the output folder's name].")
@click.option("--pretrained", help="Base checkpoint: Hub id or local directory [default: the plugin's].")
@click.option("--revision", help="Hub revision of the base checkpoint.")
@click.option("--local-files-only", is_flag=True, help="Never download the base checkpoint.")
@click.option("--train-split", help="Split to train on [default: the task's train_split].")
@_option("--val-split", default="val", help="Split validated on after every epoch; an empty string for none.")
@click.option("--train-limit", type=int, help="Train on the first N samples of the train split only.")
@click.option("--val-limit", type=int, help="Validate on the first N samples of the val split only.")
@_option("--rank", "-r", default=16, help="LoRA rank r.")
@click.option("--alpha", type=float, help="LoRA alpha (scaling alpha/r) [default: 2 x rank].")
@_option("--dropout", default=0.05, help="Dropout on the LoRA input.")
@_choice(
    "--targets",
    list(PRESETS),
    f"Modules to adapt, named as in the study ({_PRESET_HELP}); see docs/finetune.md.",
    default="query_value",
)
@click.option(
    "--target-pattern", help="A regular expression over full module names to adapt instead of --targets."
)
@_option("--learning-rate", "--lr", "learning_rate", default=2e-4, help="Peak learning rate of AdamW.")
@_option("--weight-decay", default=0.0, help="AdamW weight decay.")
@_choice("--lr-scheduler", ["linear", "cosine", "constant"], "Learning-rate schedule after warm-up.")
@_option("--warmup-ratio", default=0.0, help="Share of the optimizer steps spent warming up linearly from 0.")
@click.option("--warmup-steps", type=int, help="Warm-up steps (instead of --warmup-ratio).")
@_option("--epochs", default=5, help="Passes over the train split.")
@click.option("--max-steps", type=int, help="Stop after this many optimizer steps in all.")
@_option(
    "--batch-size",
    "-b",
    default=16,
    help="Samples per batch and process (the effective batch is this x processes x --grad-accum).",
)
@click.option("--eval-batch-size", type=int, help="Batch size of validation [default: --batch-size].")
@_option("--grad-accum", default=1, help="Batches whose gradients are accumulated per optimizer step.")
@_option("--max-grad-norm", default=1.0, help="Clip the gradient norm to this (0: no clipping).")
@_option("--label-smoothing", default=0.0, help="Label smoothing of the answer cross-entropy.")
@_option(
    "--max-answer-tokens", default=16, help="Answers are cut to this many tokens (with start and end tokens)."
)
@click.option("--prompt", help="Question template of training and validation, with {question} "
              "[default: the task's prompt for the model, as evaluation asks].")  # fmt: skip
@_option("--seed", default=0, help="Seed of the LoRA initialisation, the data order and dropout.")
@_choice("--mixed-precision", ["no", "bf16", "fp16"], "Autocast precision (accelerate); bf16 on recent GPUs.")
@_option(
    "--dtype",
    default="auto",
    help="Dtype of the base weights: auto (float32; with k-bit quantisation on a GPU the "
    "mixed-precision type), float32, bfloat16, float16.",
)
@click.option("--load-in-8bit", is_flag=True, help="QLoRA-style: base weights in 8 bits (bitsandbytes).")
@click.option("--load-in-4bit", is_flag=True, help="QLoRA: base weights in 4-bit nf4 (bitsandbytes).")
@click.option(
    "--gradient-checkpointing",
    is_flag=True,
    help="Recompute activations in the backward pass (less memory, slower).",
)
@_option("--device", default="auto", help="auto (the GPU accelerate assigns, else the CPU) or cpu.")
@_option(
    "--save-every-steps",
    default=0,
    help="Also checkpoint every N optimizer steps (a checkpoint is always taken after each epoch).",
)
@_option("--keep-checkpoints", default=2, help="Checkpoints kept (the newest).")
@_option(
    "--eval-before-training/--no-eval-before-training",
    default=True,
    help="Validate the untrained adapter first (the starting point of the curves).",
)
@_option(
    "--early-stopping-patience",
    default=0,
    help="Stop after this many validations without improvement (0: never).",
)
@_choice(
    "--monitor",
    ["val_em", "val_loss"],
    "Validation metric that picks the best adapter and drives early stopping.",
)
@_option(
    "--min-delta", default=0.0, help="Smallest change of the monitored metric that counts as an improvement."
)
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint in --output-dir.")
@click.option(
    "--resume-from",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Continue from this checkpoint folder (OUT/checkpoints/step-N).",
)
@_option("--num-workers", default=2, help="DataLoader workers decoding images.")
@_option("--log-every", default=10, help="Log the training loss every N optimizer steps.")
def finetune_command(**options: Any) -> None:
    """Fine-tune BLIP with LoRA on a task's train split (PEFT + accelerate).

    Validates on the val split after every epoch (answer exact match, as `vlmbench run` scores it,
    and the answer loss), keeps the best adapter in OUTPUT_DIR/best and the final one in
    OUTPUT_DIR/last. Evaluate an adapter like any model:

    \b
      vlmbench run --model lora-blip --task TASK --model-args adapter=OUTPUT_DIR

    On several GPUs: accelerate launch --multi_gpu --num_processes N -m vlmbench finetune ...
    """
    from vlmbench_plugins.models.blip.finetune.config import FinetuneConfig
    from vlmbench_plugins.models.blip.finetune.trainer import finetune

    config = FinetuneConfig(**_config_options(options))
    result = finetune(config)
    if result.is_main:
        click.echo(
            f"{config.run_name}: {result.state.status} at step {result.state.global_step}; "
            f"best adapter: {result.best_adapter}"
        )


def _config_options(options: dict[str, Any]) -> dict[str, Any]:
    eight, four = options.pop("load_in_8bit"), options.pop("load_in_4bit")
    if eight and four:
        raise click.UsageError("--load-in-8bit and --load-in-4bit exclude each other")
    resume, resume_from = options.pop("resume"), options.pop("resume_from")
    if resume and resume_from:
        raise click.UsageError("--resume and --resume-from exclude each other")
    options["quantization"] = "8bit" if eight else "4bit" if four else None
    options["resume"] = str(resume_from) if resume_from else "latest" if resume else None
    if options.get("max_grad_norm") == 0:
        options["max_grad_norm"] = None
    return options


@click.command("sweep")
@click.option(
    "--config",
    "-c",
    "config_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Sweep YAML (task, model, defaults, runs and/or grid, evaluate); see docs/finetune.md.",
)
@click.option("--task", "-t", help="Task (overrides the sweep file's).")
@click.option("--model", "-m", help="Base model plugin (overrides the sweep file's) [default: blip].")
@_output_dir_option("Each run trains into OUTPUT_DIR/<name>/; evaluations go to OUTPUT_DIR/eval/.")
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="A fine-tuning option for every run, e.g. --set epochs=3 --set learning_rate=1e-4.",
)
@click.option(
    "--grid",
    "grid",
    multiple=True,
    metavar="KEY=V1,V2,...",
    help="Train every combination, e.g. --grid rank=8,16,32 --grid targets=query_value,query_key_value.",
)
@click.option("--only", multiple=True, help="Train and evaluate only the runs with these names.")
@_option(
    "--eval/--no-eval",
    "do_eval",
    default=True,
    help="Evaluate the base model and every adapter on the task's test split.",
)
@click.option("--eval-batch-size", type=int, help="Batch size of the evaluation.")
@click.option("--eval-limit", type=int, help="Evaluate only the first N samples.")
@click.option("--no-base", is_flag=True, help="Do not evaluate the base model.")
@click.option(
    "--cache",
    type=click.Path(path_type=Path),
    default=None,
    help="Prediction cache file of the evaluations [default: ~/.cache/vlmbench/predictions.sqlite].",
)
@click.option("--no-cache", is_flag=True, help="Keep evaluation predictions in memory only.")
def sweep_command(config_file, task, model, output_dir, settings, grid, only, do_eval, eval_batch_size,
                  eval_limit, no_base, cache, no_cache) -> None:  # fmt: skip
    """Train a grid of LoRA configurations and rank them against the base model.

    Without --config or --grid, trains the study's five configurations, in the order of its LoRA
    table: r16 query_value_out, r8 query_value_dense, r8 query_key_value, r16 query_value_dense and
    r32 query_value. Finished runs are not trained again and unfinished ones resume, so rerunning the
    command after an interruption continues the sweep. Writes OUTPUT_DIR/leaderboard.{md,csv} and
    OUTPUT_DIR/sweep.{md,json} (the study's table layout: rank, targets, then its metric columns, the
    base model first).
    """
    import yaml

    from vlmbench.api import ArgError
    from vlmbench_plugins.models.blip.finetune.sweep import load_sweep, parse_settings, run_sweep

    spec = load_sweep(config_file, task=task, model=model)
    spec.defaults.update(parse_settings(settings))
    for item in grid:
        key, sep, values = item.partition("=")
        if not sep:
            raise ArgError(f"--grid expects KEY=V1,V2,..., got {item!r}")
        spec.grid[key.strip()] = [yaml.safe_load(v) for v in values.split(",") if v.strip()]
    if eval_batch_size:
        spec.evaluate["batch_size"] = eval_batch_size
    if eval_limit:
        spec.evaluate["limit"] = eval_limit
    if no_base:
        spec.evaluate["base"] = False
    result = run_sweep(
        spec,
        output_dir,
        only=list(only) or None,
        evaluate=do_eval,
        cache=False if no_cache else cache,
    )
    if result.summary is not None:
        click.echo(result.summary.read_text(encoding="utf-8"))
        click.echo(f"leaderboard: {result.leaderboard}", err=True)


def add_commands(cli: click.Group) -> None:
    cli.add_command(finetune_command)
    cli.add_command(sweep_command)
