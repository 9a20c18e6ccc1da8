"""``vlmbench finetune`` and ``vlmbench sweep``: thin click commands over the fine-tuning modules.

The BLIP plugin adds them to the CLI through the ``register_commands`` hook. Importing this module is
cheap (click and the presets, no torch): ``vlmbench list`` loads it too. Torch, transformers and peft
load when a command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from vlmbench_plugins.models.blip.finetune.presets import PRESETS

_PRESET_HELP = "; ".join(f"{p.name} = {p.study_name}" for p in PRESETS.values())


@click.command("finetune")
@click.option(
    "--model",
    "-m",
    default="blip",
    show_default=True,
    help="Base model plugin to fine-tune (a BLIP VQA plugin).",
)
@click.option(
    "--task",
    "-t",
    required=True,
    help="Task whose train split is learned and whose val split is validated on (name or YAML path).",
)
@click.option(
    "--output-dir",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for checkpoints, logs and the adapters best/ and last/.",
)
@click.option("--name", help="Run name shown in leaderboards [default: the output folder's name].")
@click.option("--pretrained", help="Base checkpoint: Hub id or local directory [default: the plugin's].")
@click.option("--revision", help="Hub revision of the base checkpoint.")
@click.option("--local-files-only", is_flag=True, help="Never download the base checkpoint.")
@click.option("--train-split", help="Split to train on [default: the task's train_split].")
@click.option(
    "--val-split",
    default="val",
    show_default=True,
    help="Split validated on after every epoch; an empty string for none.",
)
@click.option("--train-limit", type=int, help="Train on the first N samples of the train split only.")
@click.option("--val-limit", type=int, help="Validate on the first N samples of the val split only.")
@click.option("--rank", "-r", type=int, default=16, show_default=True, help="LoRA rank r.")
@click.option("--alpha", type=float, help="LoRA alpha (scaling alpha/r) [default: 2 x rank].")
@click.option("--dropout", type=float, default=0.05, show_default=True, help="Dropout on the LoRA input.")
@click.option(
    "--targets",
    type=click.Choice(list(PRESETS)),
    default="query_value",
    show_default=True,
    help=f"Modules to adapt, named as in the study ({_PRESET_HELP}); see docs/finetune.md.",
)
@click.option(
    "--target-pattern", help="A regular expression over full module names to adapt instead of --targets."
)
@click.option(
    "--learning-rate",
    "--lr",
    "learning_rate",
    type=float,
    default=2e-4,
    show_default=True,
    help="Peak learning rate of AdamW.",
)
@click.option("--weight-decay", type=float, default=0.0, show_default=True, help="AdamW weight decay.")
@click.option(
    "--lr-scheduler",
    type=click.Choice(["linear", "cosine", "constant"]),
    default="linear",
    show_default=True,
    help="Learning-rate schedule after warm-up.",
)
@click.option(
    "--warmup-ratio",
    type=float,
    default=0.0,
    show_default=True,
    help="Share of the optimizer steps spent warming up linearly from 0.",
)
@click.option("--warmup-steps", type=int, help="Warm-up steps (instead of --warmup-ratio).")
@click.option("--epochs", type=int, default=5, show_default=True, help="Passes over the train split.")
@click.option("--max-steps", type=int, help="Stop after this many optimizer steps in all.")
@click.option(
    "--batch-size",
    "-b",
    type=int,
    default=16,
    show_default=True,
    help="Samples per batch and process (the effective batch is this x processes x --grad-accum).",
)
@click.option("--eval-batch-size", type=int, help="Batch size of validation [default: --batch-size].")
@click.option(
    "--grad-accum",
    type=int,
    default=1,
    show_default=True,
    help="Batches whose gradients are accumulated per optimizer step.",
)
@click.option(
    "--max-grad-norm",
    type=float,
    default=1.0,
    show_default=True,
    help="Clip the gradient norm to this (0: no clipping).",
)
@click.option(
    "--label-smoothing",
    type=float,
    default=0.0,
    show_default=True,
    help="Label smoothing of the answer cross-entropy.",
)
@click.option(
    "--max-answer-tokens",
    type=int,
    default=16,
    show_default=True,
    help="Answers are cut to this many tokens (with start and end tokens).",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the LoRA initialisation, the data order and dropout.",
)
@click.option(
    "--mixed-precision",
    type=click.Choice(["no", "bf16", "fp16"]),
    default="no",
    show_default=True,
    help="Autocast precision (accelerate); bf16 on recent GPUs.",
)
@click.option(
    "--dtype",
    default="auto",
    show_default=True,
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
@click.option(
    "--device",
    default="auto",
    show_default=True,
    help="auto (the GPU accelerate assigns, else the CPU) or cpu.",
)
@click.option(
    "--save-every-steps",
    type=int,
    default=0,
    show_default=True,
    help="Also checkpoint every N optimizer steps (a checkpoint is always taken after each epoch).",
)
@click.option(
    "--keep-checkpoints", type=int, default=2, show_default=True, help="Checkpoints kept (the newest)."
)
@click.option(
    "--eval-before-training/--no-eval-before-training",
    default=True,
    show_default=True,
    help="Validate the untrained adapter first (the starting point of the curves).",
)
@click.option(
    "--early-stopping-patience",
    type=int,
    default=0,
    show_default=True,
    help="Stop after this many validations without improvement (0: never).",
)
@click.option(
    "--monitor",
    type=click.Choice(["val_em", "val_loss"]),
    default="val_em",
    show_default=True,
    help="Validation metric that picks the best adapter and drives early stopping.",
)
@click.option(
    "--min-delta",
    type=float,
    default=0.0,
    show_default=True,
    help="Smallest change of the monitored metric that counts as an improvement.",
)
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint in --output-dir.")
@click.option(
    "--resume-from",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Continue from this checkpoint folder (OUT/checkpoints/step-N).",
)
@click.option(
    "--num-workers", type=int, default=2, show_default=True, help="DataLoader workers decoding images."
)
@click.option(
    "--log-every",
    type=int,
    default=10,
    show_default=True,
    help="Log the training loss every N optimizer steps.",
)
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
@click.option(
    "--output-dir",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Each run trains into OUTPUT_DIR/<name>/; evaluations go to OUTPUT_DIR/eval/.",
)
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
@click.option(
    "--eval/--no-eval",
    "do_eval",
    default=True,
    show_default=True,
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
    from vlmbench_plugins.models.blip.finetune.sweep import load_sweep, run_sweep

    spec = load_sweep(config_file, task=task, model=model)
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep:
            raise ArgError(f"--set expects KEY=VALUE, got {item!r}")
        spec.defaults[key.strip()] = yaml.safe_load(value)
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
