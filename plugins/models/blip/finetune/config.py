"""Options of a fine-tuning run, their checks, and which of them a resumed run may change."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmbench.api import ArgError, resolve_dtype
from vlmbench_plugins.models.blip.finetune.presets import PRESETS, target_pattern

SCHEDULES = ("linear", "cosine", "constant")
MIXED_PRECISION = ("no", "bf16", "fp16")
MONITORS = {"val_em": True, "val_loss": False}  # metric -> higher is better

# A resumed run may change these; everything else must equal the checkpoint's configuration,
# since it decides what the saved weights and optimizer state mean.
RESUMABLE_CHANGES = frozenset(
    {
        "epochs",
        "max_steps",
        "early_stopping_patience",
        "monitor",
        "min_delta",
        "save_every_steps",
        "keep_checkpoints",
        "eval_before_training",
        "eval_batch_size",
        "num_workers",
        "log_every",
        "resume",
        "output_dir",
        "device",
        "name",
        "local_files_only",
    }
)


@dataclass
class FinetuneConfig:
    """Everything that defines a LoRA fine-tuning run (the ``vlmbench finetune`` options)."""

    task: str
    output_dir: Path
    model: str = "blip"
    name: str | None = None
    pretrained: str | None = None
    revision: str | None = None
    local_files_only: bool = False
    train_split: str | None = None
    val_split: str | None = "val"
    train_limit: int | None = None
    val_limit: int | None = None
    # LoRA
    rank: int = 16
    alpha: float | None = None
    dropout: float = 0.05
    targets: str = "query_value"
    target_pattern: str | None = None
    # optimisation
    learning_rate: float = 2e-4
    weight_decay: float = 0.0
    lr_scheduler: str = "linear"
    warmup_ratio: float = 0.0
    warmup_steps: int | None = None
    epochs: int = 5
    max_steps: int | None = None
    batch_size: int = 16
    eval_batch_size: int | None = None
    grad_accum: int = 1
    max_grad_norm: float | None = 1.0
    label_smoothing: float = 0.0
    max_answer_tokens: int = 16
    # the question as training shows it: a template with {question} (default: the task's prompt for the
    # model family, which evaluation uses too)
    prompt: str | None = None
    seed: int = 0
    # precision and memory
    mixed_precision: str = "no"
    dtype: str = "auto"
    quantization: str | None = None
    gradient_checkpointing: bool = False
    device: str = "auto"
    # checkpoints, validation, early stopping
    save_every_steps: int = 0
    keep_checkpoints: int = 2
    eval_before_training: bool = True
    early_stopping_patience: int = 0
    monitor: str = "val_em"
    min_delta: float = 0.0
    resume: str | None = None
    num_workers: int = 2
    log_every: int = 10

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        _coerce(self)
        if self.val_split == "":
            self.val_split = None
        checks = [
            (self.rank >= 1, "rank must be at least 1"),
            (0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)"),
            (self.learning_rate > 0, "learning rate must be positive"),
            (self.weight_decay >= 0, "weight decay must not be negative"),
            (self.epochs >= 1, "epochs must be at least 1"),
            (self.max_steps is None or self.max_steps >= 1, "max steps must be at least 1"),
            (self.batch_size >= 1, "batch size must be at least 1"),
            (self.eval_batch_size is None or self.eval_batch_size >= 1, "eval batch size must be at least 1"),
            (self.grad_accum >= 1, "gradient accumulation steps must be at least 1"),
            (0.0 <= self.warmup_ratio < 1.0, "warmup ratio must be in [0, 1)"),
            (self.warmup_steps is None or self.warmup_steps >= 0, "warmup steps must not be negative"),
            (0.0 <= self.label_smoothing < 1.0, "label smoothing must be in [0, 1)"),
            (self.max_answer_tokens >= 3, "max answer tokens must be at least 3"),
            (self.save_every_steps >= 0, "save-every-steps must not be negative"),
            (self.keep_checkpoints >= 1, "keep at least 1 checkpoint"),
            (self.early_stopping_patience >= 0, "early-stopping patience must not be negative"),
            (self.num_workers >= 0, "num workers must not be negative"),
            (self.log_every >= 1, "log-every must be at least 1"),
            (self.train_limit is None or self.train_limit >= 1, "train limit must be at least 1"),
            (self.val_limit is None or self.val_limit >= 1, "val limit must be at least 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ArgError(message)
        for value, allowed, what in (
            (self.lr_scheduler, SCHEDULES, "lr scheduler"),
            (self.mixed_precision, MIXED_PRECISION, "mixed precision"),
            (self.monitor, tuple(MONITORS), "monitor"),
            (self.quantization, (None, "8bit", "4bit"), "quantization"),
        ):
            if value not in allowed:
                raise ArgError(f"{what} must be one of {', '.join(map(str, allowed))}, got {value!r}")
        resolve_dtype(self.dtype, "cpu")  # an unknown --dtype is an error now, not after the base model loads
        if self.prompt is not None and "{question}" not in self.prompt:
            raise ArgError(f"prompt must contain {{question}}, got {self.prompt!r}")
        if self.target_pattern is None and self.targets not in PRESETS:
            target_pattern(self.targets)  # raises with a did-you-mean message
        if self.early_stopping_patience and not self.val_split:
            raise ArgError("early stopping needs a validation split (--val-split)")
        if self.monitor == "val_loss" and not self.val_split:
            raise ArgError("monitor val_loss needs a validation split")

    @property
    def lora_alpha(self) -> float:
        """LoRA's scaling numerator; by default twice the rank (scaling 2, a common choice)."""
        return float(self.alpha) if self.alpha is not None else 2.0 * self.rank

    @property
    def pattern(self) -> str:
        return target_pattern(self.targets, self.target_pattern)

    @property
    def run_name(self) -> str:
        return self.name or self.output_dir.resolve().name

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["output_dir"] = str(self.output_dir)
        data["lora_alpha"] = self.lora_alpha
        data["target_modules_pattern"] = self.pattern
        return data

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]


def _coerce(config: FinetuneConfig) -> None:
    """Numbers and flags given as text (``--set lr=1e-4``; YAML reads ``1e-4`` as a string) become
    the field's type; anything else of the wrong type is an error naming the option."""
    hints = typing.get_type_hints(FinetuneConfig)
    for f in dataclasses.fields(FinetuneConfig):
        value = getattr(config, f.name)
        kinds = [t for t in typing.get_args(hints[f.name]) or (hints[f.name],) if t is not type(None)]
        if value is None or len(kinds) != 1 or kinds[0] not in (int, float, bool, str):
            continue
        kind = kinds[0]
        if isinstance(value, kind) and not (kind is not bool and isinstance(value, bool)):
            continue
        try:
            if kind is bool:
                text = str(value).strip().lower()
                if text not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                converted: Any = text in ("true", "1", "yes")
            elif kind is int and isinstance(value, float) and value.is_integer():
                converted = int(value)
            elif kind is str:
                converted = str(value)
            else:
                if isinstance(value, bool):
                    raise ValueError(value)
                converted = kind(value)
        except (TypeError, ValueError):
            raise ArgError(f"option {f.name!r}: expected {kind.__name__}, got {value!r}") from None
        setattr(config, f.name, converted)


def incompatible_changes(saved: dict[str, Any], config: FinetuneConfig) -> list[str]:
    """The options of ``config`` that differ from a checkpoint's saved configuration and may not."""
    now = config.to_json()
    return sorted(
        key
        for key in FinetuneConfig.field_names()
        if key not in RESUMABLE_CHANGES and key in saved and saved[key] != now[key]
    )
