"""The LoRA fine-tuning loop (accelerate): one process, or one per GPU under ``accelerate launch``.

AdamW over the adapter weights, a linear/cosine/constant schedule with warmup, gradient
accumulation, mixed precision and gradient clipping through accelerate; validation on the task's
validation split after every epoch (:mod:`.validation`: answer exact match, computed like the harness
computes it, and the answer loss); checkpoints with optimizer, scheduler, gradient-scaler and RNG
state that a run resumes from exactly (:mod:`.checkpoints`); early stopping on the validation metric.

Output folder::

    finetune_config.json   the run's options
    train_state.json       step, epoch, best validation result, status, validation history
    metrics.jsonl          one line per logged training window and per validation
    checkpoints/step-N/    adapter/, optimizer.pt, scheduler.pt, [scaler.pt], rng-rankR.{pt,json}, state.json
    best/                  the adapter with the best validation result (what ``lora-blip`` loads)
    last/                  the adapter at the end of training
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vlmbench.api import (
    DataError,
    Interrupted,
    StopRequested,
    VlmbenchError,
    load_plugins,
    loader_batches,
    resolve_task,
    write_json,
)
from vlmbench_plugins.models.blip.finetune.checkpoints import (
    CONFIG_FILE,
    Checkpointer,
    TrainState,
    checkpoint_to_resume,
    latest_checkpoint,
)
from vlmbench_plugins.models.blip.finetune.config import FinetuneConfig
from vlmbench_plugins.models.blip.finetune.data import (
    VQABatch,
    VQACollate,
    epoch_batches,
    load_split_data,
    make_loader,
)
from vlmbench_plugins.models.blip.finetune.model import (
    LoraSettings,
    VQALoss,
    adapted_modules,
    add_lora,
    load_plugin,
)
from vlmbench_plugins.models.blip.finetune.preflight import check_before_training, train_split_of
from vlmbench_plugins.models.blip.finetune.validation import Validation, describe, improves

_SCHEDULER_NAMES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}


@dataclass
class FinetuneResult:
    output_dir: Path
    state: TrainState
    best_adapter: Path | None
    last_adapter: Path
    adapted_modules: list[str]
    plugin: Any = None  # the model plugin holding the trained model (LoRA layers in place)
    is_main: bool = True  # False in the other processes of a data-parallel run


@dataclass
class _LossWindow:
    """The training loss and throughput since the last log line."""

    totals: torch.Tensor  # summed loss, target tokens
    samples: int = 0
    start: float = field(default_factory=time.perf_counter)


def finetune(
    config: FinetuneConfig,
    *,
    plugins: Any = None,
    log: Callable[[str], None] | None = None,
    resume_hint: str | None = None,
) -> FinetuneResult:
    """Run (or resume) a LoRA fine-tuning run; see :class:`Trainer`. Ctrl-C or SIGTERM stops it at once
    (a checkpoint or adapter being written is finished first) with :class:`Interrupted`, whose message
    says what is kept and ends with ``resume_hint`` [default: how ``vlmbench finetune`` continues]."""
    return Trainer(config, plugins=plugins, log=log, resume_hint=resume_hint).run()


class Trainer:
    """One fine-tuning run: the set-up (accelerator, model plugin, data, LoRA layers, optimizer,
    schedule), then the training loop with validation, checkpoints and early stopping."""

    def __init__(
        self,
        config: FinetuneConfig,
        *,
        plugins: Any = None,
        log: Callable[[str], None] | None = None,
        resume_hint: str | None = None,
    ):
        self.cfg = config
        self.plugins = plugins
        self._log = log or (lambda text: print(text, file=sys.stderr, flush=True))
        self.out = Path(config.output_dir)
        self.resume_hint = resume_hint
        self.state: TrainState | None = None
        self.stop = StopRequested(at_once=True)

    # -- set-up -----------------------------------------------------------------------------------------
    def run(self) -> FinetuneResult:
        with self.stop:
            try:
                return self._run()
            except KeyboardInterrupt:
                raise Interrupted(self._interrupted_message(), self.stop.exit_code) from None

    def _interrupted_message(self) -> str:
        step = self.state.global_step if self.state is not None else 0
        latest = latest_checkpoint(self.out)
        kept = f"its latest checkpoint is {latest}" if latest else "no checkpoint was taken yet"
        hint = self.resume_hint or (
            "continue from it with the same command and --resume"
            if latest
            else "run the same command again to start over"
        )
        return f"interrupted: fine-tuning {self.cfg.run_name} stopped at step {step}; {kept}; {hint}"

    def _run(self) -> FinetuneResult:
        from accelerate.utils import set_seed

        cfg = self.cfg
        # the base model plugin and the task's splits, before any model work
        check_before_training(cfg, self.plugins or load_plugins())
        acc = self._start_accelerator()
        checkpoint = checkpoint_to_resume(cfg)
        acc.wait_for_everyone()  # every process looked at the output folder before anything is written
        set_seed(cfg.seed)
        if cfg.quantization == "8bit":
            # bitsandbytes logs a cast warning on every 8-bit matmul of a float32 model.
            logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
        self._load_model_and_data(self.plugins or load_plugins())
        total = self._prepare_training()
        self.state = TrainState(
            world_size=self.world, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum, total_steps=total
        )
        if checkpoint is not None:
            self.state = self.checkpoints.load(checkpoint)
            self.state.total_steps = total
            self.event({"event": "resume", "checkpoint": checkpoint.name, "step": self.state.global_step})
            self.info(f"resumed from {checkpoint} at step {self.state.global_step}")
        if acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            write_json(self.out / CONFIG_FILE, cfg.to_json())
        trainable = sum(p.numel() for p in self.trainable)
        self.info(
            f"{cfg.run_name}: LoRA r={cfg.rank} alpha={cfg.lora_alpha:g} on {len(self.adapted)} modules "
            f"({cfg.targets if not cfg.target_pattern else 'custom pattern'}), {trainable:,} trainable "
            f"parameters; {len(self.train)} training samples, {len(self.val) if self.val else 0} validation "
            f"samples; {self.steps_per_epoch} steps per epoch, {total} in all, {self.world} process(es) "
            f"on {acc.device}"
        )
        return self._train()

    def _start_accelerator(self) -> Any:
        from accelerate import Accelerator

        cfg = self.cfg
        # Without a GPU, accelerate must be told to use the CPU; only then do processes started by a
        # launcher (accelerate launch, torchrun) form a gloo process group instead of each training alone.
        cpu = cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available())
        self.acc = acc = Accelerator(mixed_precision=cfg.mixed_precision, cpu=cpu)
        if cfg.device not in ("auto", "cpu") and not str(acc.device).startswith(cfg.device):
            raise VlmbenchError(f"--device {cfg.device} was asked for, but accelerate chose {acc.device}")
        self.rank, self.world = acc.process_index, acc.num_processes
        launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if launched != self.world:
            raise VlmbenchError(
                f"the launcher started {launched} processes but accelerate sees {self.world}; "
                "each would train on its own and overwrite the others' output"
            )
        return acc

    def _load_model_and_data(self, plugins: Any) -> None:
        """The model plugin with its base weights, and the training and validation splits."""
        cfg = self.cfg
        self.task = task = resolve_task(cfg.task, plugins)
        entry = plugins.models.get(cfg.model)
        train_split = train_split_of(cfg, task)
        self.plugin = plugin = load_plugin(
            cfg.model,
            {
                "pretrained": cfg.pretrained,
                "revision": cfg.revision,
                "local_files_only": cfg.local_files_only,
                "load_in_8bit": cfg.quantization == "8bit",
                "load_in_4bit": cfg.quantization == "4bit",
            },
            device=str(self.acc.device),
            dtype=self._base_dtype(str(self.acc.device)),
            seed=cfg.seed,
            plugins=plugins,
        )
        template = cfg.prompt or task.spec.prompt_template(entry.family, type(plugin).default_prompt)
        self.train = load_split_data(task, train_split, template, cfg.train_limit)
        self.val = None
        if cfg.val_split:
            try:
                self.val = load_split_data(task, cfg.val_split, template, cfg.val_limit)
            except DataError as exc:
                raise DataError(f"{exc} (--val-split '' trains without validation)") from None
        for data in (self.train, self.val):
            if data is not None and data.problems:
                self.info(f"split {data.name}: {len(data.problems)} rows skipped ({data.problems[0]})")

    def _prepare_training(self) -> int:
        """LoRA layers, optimizer, schedule, batches, validation and checkpoints; returns the number
        of optimizer steps of the whole run."""
        cfg, acc, plugin = self.cfg, self.acc, self.plugin
        settings = LoraSettings(cfg.rank, cfg.lora_alpha, cfg.dropout, cfg.pattern)
        peft_model = add_lora(
            plugin.model,
            settings,
            quantized=cfg.quantization is not None,
            gradient_checkpointing=cfg.gradient_checkpointing,
        )
        self.adapted = adapted_modules(peft_model)
        module = VQALoss(plugin, peft_model, label_smoothing=cfg.label_smoothing)
        self.trainable = [p for p in module.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(self.trainable, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)

        batches = len(epoch_batches(len(self.train), cfg.batch_size, seed=0, epoch=0, world_size=self.world))
        self.steps_per_epoch = math.ceil(batches / cfg.grad_accum)
        total = cfg.epochs * self.steps_per_epoch
        if cfg.max_steps:
            total = min(total, cfg.max_steps)
        warmup = cfg.warmup_steps if cfg.warmup_steps is not None else round(cfg.warmup_ratio * total)
        from transformers import get_scheduler

        self.scheduler = get_scheduler(
            _SCHEDULER_NAMES[cfg.lr_scheduler], optimizer, num_warmup_steps=warmup, num_training_steps=total
        )
        # The plugin placed the model already (quantised weights must not be moved again).
        self.module, self.optimizer = acc.prepare(module, optimizer, device_placement=[False, True])
        start_id = plugin.model.decoder_start_token_id
        answers = [s.answers[0] for s in self.train.samples]
        self.train_collate = VQACollate(plugin, answers, cfg.max_answer_tokens, start_id)
        self.validation = None
        if self.val is not None:
            val_answers = [s.answers[0] for s in self.val.samples]
            self.validation = Validation(
                plugin,
                self.val,
                VQACollate(plugin, val_answers, cfg.max_answer_tokens, start_id),
                self.task,
                cfg.eval_batch_size or cfg.batch_size,
                cfg.num_workers,
                acc,
            )
        self.checkpoints = Checkpointer(
            cfg,
            acc,
            peft_model,
            self.optimizer,
            self.scheduler,
            cfg.monitor if self.val is not None else None,
        )
        return total

    def _base_dtype(self, device: str) -> str:
        """Base weights in float32 (adapters and optimizer state are float32 anyway), except under
        k-bit quantisation, where the unquantised parts follow the mixed-precision type."""
        if self.cfg.dtype != "auto":
            return self.cfg.dtype
        if self.cfg.quantization and device.startswith("cuda"):
            return {"bf16": "bfloat16", "fp16": "float16"}.get(self.cfg.mixed_precision, "float32")
        return "float32"

    # -- the loop --------------------------------------------------------------------------------------
    def _train(self) -> FinetuneResult:
        cfg, state = self.cfg, self.state
        if self.validation is not None and state.global_step == 0 and cfg.eval_before_training:
            state.initial_validation = self.validation.run(self.module)
            self.event({"event": "val", "step": 0, "epoch": 0, **state.initial_validation})
            self.info(f"step 0: {describe(state.initial_validation)}")
        self.module.train()
        window = _LossWindow(torch.zeros(2, device=self.acc.device))
        # A run resumed at or past max_steps (e.g. rerun with the same options) trains no further step.
        stop = bool(cfg.max_steps and state.global_step >= cfg.max_steps)
        if stop and state.epoch < cfg.epochs:
            state.status = "max_steps"
        while state.epoch < cfg.epochs and not stop:
            epoch = state.epoch
            batches = self._train_epoch(epoch, window)
            if state.batch_in_epoch >= batches:
                state.epoch, state.batch_in_epoch = epoch + 1, 0
                progress: float = state.epoch
            else:
                progress = epoch + state.batch_in_epoch / batches
            stop = self._end_of_segment(progress)
            if not stop and cfg.max_steps and state.global_step >= cfg.max_steps:
                stop = True
                if state.epoch < cfg.epochs:
                    state.status = "max_steps"
            with self.stop.deferred():
                self.checkpoints.save(state)
        return self._finish()

    def _train_epoch(self, epoch: int, window: _LossWindow) -> int:
        """Train on this process's batches of ``epoch`` from where the state stands, until the epoch
        ends or ``max_steps`` is reached; returns the number of batches of the whole epoch."""
        cfg, state = self.cfg, self.state
        batches = epoch_batches(
            len(self.train), cfg.batch_size, seed=cfg.seed, epoch=epoch, rank=self.rank, world_size=self.world
        )
        start = state.batch_in_epoch
        loader = make_loader(
            self.train, batches[start:], self.train_collate, cfg.num_workers, seed=cfg.seed + epoch
        )
        step_samples = 0
        for offset, batch in enumerate(loader_batches(loader)):
            i = start + offset
            # Accumulation groups are fixed positions in the epoch (the last may be shorter), so
            # a resumed run groups batches as the original did.
            group_start = (i // cfg.grad_accum) * cfg.grad_accum
            group_end = min(group_start + cfg.grad_accum, len(batches))
            last_in_group = i + 1 == group_end
            if batch.failed:
                self.info(f"skipped {len(batch.failed)} unreadable images ({batch.failed[0].problem})")
            if len(batch) == 0:
                if self.world > 1:
                    raise DataError("a whole training batch had unreadable images; fix the data first")
            else:
                self._backward(batch, window, sync=last_in_group, group_size=group_end - group_start)
                step_samples += len(batch)
            if not last_in_group:
                continue
            self._optimizer_step()
            state.batch_in_epoch = i + 1
            state.samples_seen += step_samples * self.world
            window.samples += step_samples
            step_samples = 0
            if state.global_step % cfg.log_every == 0:
                self._log_window(window, epoch + (i + 1) / len(batches))
            if cfg.save_every_steps and state.global_step % cfg.save_every_steps == 0:
                with self.stop.deferred():
                    self.checkpoints.save(state)
            if cfg.max_steps and state.global_step >= cfg.max_steps:
                break
        return len(batches)

    def _backward(self, batch: VQABatch, window: _LossWindow, *, sync: bool, group_size: int) -> None:
        """Accumulate the gradient of one batch's token-averaged loss, a ``group_size``-th of the step's;
        gradients are synchronised between processes only with the last batch of a step."""
        acc = self.acc
        with contextlib.nullcontext() if sync else acc.no_sync(self.module):
            loss_sum, tokens = self.module(**self.plugin.to_device(batch.tensors()))
            loss = loss_sum / tokens.clamp(min=1) / group_size
            acc.backward(loss)
        window.totals += torch.stack([loss_sum.detach().float(), tokens.float()])

    def _optimizer_step(self) -> None:
        if self.cfg.max_grad_norm:
            self.acc.clip_grad_norm_(self.trainable, self.cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.global_step += 1

    def _log_window(self, window: _LossWindow, epoch: float) -> None:
        """Log the loss and throughput of the steps since the last log line, all processes together."""
        totals = self.acc.reduce(window.totals.clone(), "sum")
        elapsed = time.perf_counter() - window.start
        record = {
            "event": "train",
            "step": self.state.global_step,
            "epoch": epoch,
            "loss": float(totals[0] / totals[1].clamp(min=1)),
            "lr": self.scheduler.get_last_lr()[0],
            "samples_per_second": window.samples * self.world / max(elapsed, 1e-9),
        }
        self.event(record)
        self.info(
            f"step {record['step']}: loss {record['loss']:.4f}, lr {record['lr']:.2e}, "
            f"{record['samples_per_second']:.1f} samples/s"
        )
        window.totals.zero_()
        window.samples, window.start = 0, time.perf_counter()

    def _end_of_segment(self, epoch: float) -> bool:
        """Validate (when there is a validation split), keep the best adapter; True to stop early."""
        cfg, state = self.cfg, self.state
        if self.validation is None:
            return False
        result = self.validation.run(self.module)
        record = {"step": state.global_step, "epoch": epoch, **result}
        state.validations.append(record)
        self.event({"event": "val", **record})
        improved = improves(cfg.monitor, result[cfg.monitor], state.best_value, cfg.min_delta)
        if improved:
            state.best_value, state.best_step, state.best_epoch = (
                result[cfg.monitor],
                state.global_step,
                state.epoch,
            )
            state.evaluations_without_improvement = 0
            self.save_adapter(self.out / "best", "best", validation=result)
        else:
            state.evaluations_without_improvement += 1
        best = (
            " (best)"
            if improved
            else f" (best {cfg.monitor} {state.best_value:.4f} at step {state.best_step})"
        )
        self.info(f"step {state.global_step} (epoch {epoch:g}): {describe(result)}{best}")
        if (
            cfg.early_stopping_patience
            and state.evaluations_without_improvement >= cfg.early_stopping_patience
        ):
            state.status = "early_stopped"
            self.event({"event": "early_stop", "step": state.global_step, "best_step": state.best_step})
            self.info(
                f"early stopping: no {cfg.monitor} improvement in {cfg.early_stopping_patience} validations"
            )
            return True
        return False

    def _finish(self) -> FinetuneResult:
        state = self.state
        if state.status == "running":
            state.status = "completed"
        last = self.save_adapter(self.out / "last", "last")
        best = self.out / "best"
        if self.validation is None or not best.is_dir():
            best = self.save_adapter(best, "best")
        with self.stop.deferred():
            self.checkpoints.write_state(state)
        self.module.eval()
        return FinetuneResult(
            self.out, state, best, last, self.adapted, self.plugin, is_main=self.acc.is_main_process
        )

    # -- output ------------------------------------------------------------------------------------------
    def save_adapter(self, path: Path, which: str, validation: dict[str, Any] | None = None) -> Path:
        """Write the adapter and what produced it (``vlmbench_finetune.json``), replacing ``path``."""
        cfg, state = self.cfg, self.state
        info = {
            "label": cfg.run_name if which == "best" else f"{cfg.run_name}/{which}",
            "run": cfg.run_name,
            "adapter": which,
            "task": self.task.name,
            "task_hash": self.task.hash,
            "model": cfg.model,
            "base_checkpoint": self.plugin.checkpoint,
            "step": state.global_step,
            "epoch": state.epoch,
            "validation": validation,
            "lora": {
                "rank": cfg.rank,
                "alpha": cfg.lora_alpha,
                "dropout": cfg.dropout,
                "targets": cfg.targets if not cfg.target_pattern else None,
                "pattern": cfg.pattern,
                "modules": len(self.adapted),
            },
            "trainable_parameters": sum(p.numel() for p in self.trainable),
            "quantization": cfg.quantization,
        }
        with self.stop.deferred():  # the adapter folder is replaced: never leave it half-written
            return self.checkpoints.save_adapter(path, info)

    def info(self, text: str) -> None:
        if self.acc.is_main_process:
            self._log(text)

    def event(self, record: dict[str, Any]) -> None:
        self.checkpoints.event(record)
