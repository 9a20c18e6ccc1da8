"""What a fine-tuning run needs, checked before any model work: a BLIP VQA base model plugin and a
task whose train split (and validation split, when one is asked for) holds samples.

``finetune`` checks them before its base model loads; ``sweep`` and ``study`` check every configuration
before the first one trains (and ``study`` before its model table runs), so that a task without a train
split or a base model that cannot be fine-tuned is one error line, not a failure after hours of work.
"""

from __future__ import annotations

from typing import Any

from vlmbench.api import DataError, Task, VlmbenchError, load_split, resolve_task
from vlmbench_plugins.models.blip.finetune.config import FinetuneConfig


def check_base_model(name: str, plugins: Any) -> None:
    """``name`` must be a BLIP VQA model plugin (``blip`` or one built on it): what LoRA layers go into."""
    from vlmbench_plugins.models.blip.vqa import BlipVQA

    cls = plugins.models.load(name)
    if not issubclass(cls, BlipVQA):
        raise VlmbenchError(
            f"fine-tuning needs a BLIP VQA model plugin (model class {BlipVQA.model_class}); "
            f"{name!r} is {getattr(cls, 'model_class', cls.__name__)}"
        )


def train_split_of(config: FinetuneConfig, task: Task) -> str:
    """The split a run trains on: ``--train-split``, else the task's ``train_split``."""
    split = config.train_split or task.spec.train_split
    if not split:
        raise DataError(
            f"task {task.name!r} names no train split; give one with --train-split (a value of the "
            "task's split column, or a split of its Hugging Face dataset)"
        )
    return split


def check_before_training(config: FinetuneConfig, plugins: Any) -> Task:
    """Every check of :mod:`this module <.preflight>` for ``config``; returns its task. Reading the
    splits costs a pass over the task's rows (no image is opened)."""
    check_base_model(config.model, plugins)
    task = resolve_task(config.task, plugins)
    splits = [(train_split_of(config, task), "")]
    if config.val_split:
        splits.append((config.val_split, " (--val-split '' trains without validation)"))
    for split, hint in splits:
        loaded, _ = load_split(task.spec.dataset, split)
        if not loaded.samples:
            raise DataError(f"task {task.name!r}: split {split!r} has no usable samples{hint}")
    return task
