"""The LoRA fine-tuning loop (accelerate): one process, or one per GPU under ``accelerate launch``.

AdamW over the adapter weights, a linear/cosine/constant schedule with warmup, gradient
accumulation, mixed precision and gradient clipping through accelerate; validation on the task's
validation split after every epoch (answer exact match, computed like the harness computes it, and
the answer loss); checkpoints with optimizer, scheduler, gradient-scaler and RNG state that a run
resumes from exactly; early stopping on the validation metric.

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
import json
import logging
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlmbench.api import (
    Batch,
    DataError,
    VlmbenchError,
    apply_filters,
    load_plugins,
    resolve_task,
    vqa_normalize,
    write_json,
)
from vlmbench_plugins.models.blip.finetune.config import MONITORS, FinetuneConfig, incompatible_changes
from vlmbench_plugins.models.blip.finetune.data import (
    VQACollate,
    epoch_batches,
    load_split_data,
    make_loader,
    shard_batches,
)
from vlmbench_plugins.models.blip.finetune.model import (
    LoraSettings,
    VQALoss,
    adapted_modules,
    add_lora,
    load_plugin,
)

CONFIG_FILE = "finetune_config.json"
STATE_FILE = "train_state.json"
METRICS_FILE = "metrics.jsonl"
ADAPTER_INFO = "vlmbench_finetune.json"
CHECKPOINTS = "checkpoints"
_SCHEDULER_NAMES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}


@dataclass
class TrainState:
    """Where a run stands; saved in every checkpoint and in ``train_state.json``."""

    global_step: int = 0  # optimizer steps taken
    epoch: int = 0  # epochs completed
    batch_in_epoch: int = 0  # batches of the current epoch already trained on (per process)
    samples_seen: int = 0
    best_value: float | None = None
    best_step: int | None = None
    best_epoch: int | None = None
    evaluations_without_improvement: int = 0
    status: str = "running"  # running, completed, early_stopped, max_steps
    world_size: int = 1
    batch_size: int = 0
    grad_accum: int = 1
    total_steps: int = 0
    initial_validation: dict[str, Any] | None = None
    validations: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainState:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class FinetuneResult:
    output_dir: Path
    state: TrainState
    best_adapter: Path | None
    last_adapter: Path
    adapted_modules: list[str]
    plugin: Any = None  # the model plugin holding the trained model (LoRA layers in place)
    is_main: bool = True  # False in the other processes of a data-parallel run


def exact_match(answer: str, references: tuple[str, ...]) -> float:
    """The harness's exact match: VQA-normalised equality with any reference."""
    norm = vqa_normalize(answer)
    return float(any(norm == vqa_normalize(r) for r in references))


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint under ``output_dir/checkpoints``."""
    folder = Path(output_dir) / CHECKPOINTS
    done = [p for p in folder.glob("step-*") if (p / "state.json").is_file()] if folder.is_dir() else []
    return max(done, key=lambda p: int(p.name.split("-")[1])) if done else None


def finetune(
    config: FinetuneConfig, *, plugins: Any = None, log: Callable[[str], None] | None = None
) -> FinetuneResult:
    """Run (or resume) a LoRA fine-tuning run; see :class:`Trainer`."""
    return Trainer(config, plugins=plugins, log=log).run()


class Trainer:
    def __init__(
        self, config: FinetuneConfig, *, plugins: Any = None, log: Callable[[str], None] | None = None
    ):
        self.cfg = config
        self.plugins = plugins
        self._log = log or (lambda text: print(text, file=sys.stderr, flush=True))
        self.out = Path(config.output_dir)

    # -- set-up -----------------------------------------------------------------------------------------
    def run(self) -> FinetuneResult:
        from accelerate import Accelerator
        from accelerate.utils import set_seed

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
        checkpoint = self._checkpoint_to_resume()
        acc.wait_for_everyone()  # every process looked at the output folder before anything is written
        set_seed(cfg.seed)
        if cfg.quantization == "8bit":
            # bitsandbytes logs a cast warning on every 8-bit matmul of a float32 model.
            logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)

        plugins = self.plugins or load_plugins()
        task = resolve_task(cfg.task, plugins)
        self.task = task
        entry = plugins.models.get(cfg.model)
        train_split = cfg.train_split or task.spec.train_split
        if not train_split:
            raise DataError(
                f"task {task.name!r} names no train split; give one with --train-split (a value of the "
                "task's split column, or a split of its Hugging Face dataset)"
            )
        self.plugin = plugin = load_plugin(
            cfg.model,
            {
                "pretrained": cfg.pretrained,
                "revision": cfg.revision,
                "local_files_only": cfg.local_files_only,
                "load_in_8bit": cfg.quantization == "8bit",
                "load_in_4bit": cfg.quantization == "4bit",
            },
            device=str(acc.device),
            dtype=self._base_dtype(str(acc.device)),
            seed=cfg.seed,
            plugins=plugins,
        )
        template = task.spec.prompt_template(entry.family, type(plugin).default_prompt)
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

        settings = LoraSettings(cfg.rank, cfg.lora_alpha, cfg.dropout, cfg.pattern)
        peft_model = add_lora(
            plugin.model,
            settings,
            quantized=cfg.quantization is not None,
            gradient_checkpointing=cfg.gradient_checkpointing,
        )
        self.peft_model = peft_model
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
        answers = [s.answers[0] for s in self.train.samples]
        self.train_collate = VQACollate(
            plugin, answers, cfg.max_answer_tokens, plugin.model.decoder_start_token_id
        )
        if self.val is not None:
            self.val_collate = VQACollate(
                plugin,
                [s.answers[0] for s in self.val.samples],
                cfg.max_answer_tokens,
                plugin.model.decoder_start_token_id,
            )

        self.state = TrainState(
            world_size=self.world, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum, total_steps=total
        )
        if checkpoint is not None:
            self._load_checkpoint(checkpoint)
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

    def _base_dtype(self, device: str) -> str:
        """Base weights in float32 (adapters and optimizer state are float32 anyway), except under
        k-bit quantisation, where the unquantised parts follow the mixed-precision type."""
        if self.cfg.dtype != "auto":
            return self.cfg.dtype
        if self.cfg.quantization and device.startswith("cuda"):
            return {"bf16": "bfloat16", "fp16": "float16"}.get(self.cfg.mixed_precision, "float32")
        return "float32"

    def _checkpoint_to_resume(self) -> Path | None:
        cfg = self.cfg
        if not cfg.resume:
            state = self.out / STATE_FILE
            if state.is_file() or latest_checkpoint(self.out) is not None:
                raise VlmbenchError(
                    f"{self.out} already holds a fine-tuning run; resume it with --resume, "
                    "or choose another --output-dir"
                )
            return None
        if cfg.resume == "latest":
            found = latest_checkpoint(self.out)
            if found is None:
                raise VlmbenchError(f"no checkpoint to resume under {self.out / CHECKPOINTS}")
        else:
            found = Path(cfg.resume)
            if not (found / "state.json").is_file():
                raise VlmbenchError(f"{found} is not a complete checkpoint (no state.json)")
        saved_path = found / CONFIG_FILE
        if saved_path.is_file():
            saved = json.loads(saved_path.read_text(encoding="utf-8"))
            changed = incompatible_changes(saved, cfg)
            if changed:
                details = ", ".join(f"{k}: {saved[k]!r} -> {getattr(cfg, k)!r}" for k in changed)
                raise VlmbenchError(
                    f"cannot resume {found}: these options differ from the checkpoint's and must not "
                    f"({details})"
                )
        return found

    # -- the loop --------------------------------------------------------------------------------------
    def _train(self) -> FinetuneResult:
        cfg, acc, state = self.cfg, self.acc, self.state
        if self.val is not None and state.global_step == 0 and cfg.eval_before_training:
            state.initial_validation = self.validate()
            self.event({"event": "val", "step": 0, "epoch": 0, **state.initial_validation})
            self.info(f"step 0: {_fmt(state.initial_validation)}")
        self.module.train()
        window = torch.zeros(2, device=acc.device)  # summed loss, target tokens since the last log
        window_samples, step_samples, window_start = 0, 0, time.perf_counter()
        stop = False
        while state.epoch < cfg.epochs and not stop:
            epoch = state.epoch
            batches = epoch_batches(
                len(self.train),
                cfg.batch_size,
                seed=cfg.seed,
                epoch=epoch,
                rank=self.rank,
                world_size=self.world,
            )
            start = state.batch_in_epoch
            loader = make_loader(
                self.train, batches[start:], self.train_collate, cfg.num_workers, seed=cfg.seed + epoch
            )
            for offset, batch in enumerate(loader):
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
                    sync = contextlib.nullcontext() if last_in_group else acc.no_sync(self.module)
                    with sync:
                        loss_sum, tokens = self.module(**self.plugin.to_device(batch.tensors()))
                        loss = loss_sum / tokens.clamp(min=1) / (group_end - group_start)
                        acc.backward(loss)
                    window += torch.stack([loss_sum.detach().float(), tokens.float()])
                    step_samples += len(batch)
                if not last_in_group:
                    continue
                if cfg.max_grad_norm:
                    acc.clip_grad_norm_(self.trainable, cfg.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                state.global_step += 1
                state.batch_in_epoch = i + 1
                state.samples_seen += step_samples * self.world
                window_samples += step_samples
                step_samples = 0
                if state.global_step % cfg.log_every == 0:
                    totals = acc.reduce(window.clone(), "sum")
                    elapsed = time.perf_counter() - window_start
                    record = {
                        "event": "train",
                        "step": state.global_step,
                        "epoch": epoch + (i + 1) / len(batches),
                        "loss": float(totals[0] / totals[1].clamp(min=1)),
                        "lr": self.scheduler.get_last_lr()[0],
                        "samples_per_second": window_samples * self.world / max(elapsed, 1e-9),
                    }
                    self.event(record)
                    self.info(
                        f"step {record['step']}: loss {record['loss']:.4f}, lr {record['lr']:.2e}, "
                        f"{record['samples_per_second']:.1f} samples/s"
                    )
                    window.zero_()
                    window_samples, window_start = 0, time.perf_counter()
                if cfg.save_every_steps and state.global_step % cfg.save_every_steps == 0:
                    self.save_checkpoint()
                if cfg.max_steps and state.global_step >= cfg.max_steps:
                    break
            if state.batch_in_epoch >= len(batches):
                state.epoch, state.batch_in_epoch = epoch + 1, 0
                progress: float = state.epoch
            else:
                progress = epoch + state.batch_in_epoch / len(batches)
            stop = self._end_of_segment(progress)
            if not stop and cfg.max_steps and state.global_step >= cfg.max_steps:
                stop = True
                if state.epoch < cfg.epochs:
                    state.status = "max_steps"
            self.save_checkpoint()
        if state.status == "running":
            state.status = "completed"
        last = self.save_adapter(self.out / "last", "last")
        best = self.out / "best"
        if self.val is None or not best.is_dir():
            best = self.save_adapter(best, "best")
        self.write_state()
        self.module.eval()
        return FinetuneResult(
            self.out, state, best, last, self.adapted, self.plugin, is_main=acc.is_main_process
        )

    def _end_of_segment(self, epoch: float) -> bool:
        """Validate (when there is a validation split), keep the best adapter; True to stop early."""
        cfg, state = self.cfg, self.state
        if self.val is None:
            return False
        result = self.validate()
        record = {"step": state.global_step, "epoch": epoch, **result}
        state.validations.append(record)
        self.event({"event": "val", **record})
        value = result[cfg.monitor]
        higher = MONITORS[cfg.monitor]
        improved = state.best_value is None or (
            value - state.best_value > cfg.min_delta if higher else state.best_value - value > cfg.min_delta
        )
        if improved:
            state.best_value, state.best_step, state.best_epoch = value, state.global_step, state.epoch
            state.evaluations_without_improvement = 0
            self.save_adapter(self.out / "best", "best", validation=result)
        else:
            state.evaluations_without_improvement += 1
        self.info(
            f"step {state.global_step} (epoch {epoch:g}): {_fmt(result)}"
            + (
                " (best)"
                if improved
                else f" (best {cfg.monitor} {state.best_value:.4f} at step {state.best_step})"
            )
        )
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

    # -- validation --------------------------------------------------------------------------------------
    def validate(self) -> dict[str, Any]:
        """Exact match of generated answers (the task's filters, VQA normalisation, best reference) and
        the token-averaged answer loss over the validation split, all processes together."""
        acc, cfg = self.acc, self.cfg
        module = acc.unwrap_model(self.module)
        module.eval()
        batches = shard_batches(len(self.val), cfg.eval_batch_size or cfg.batch_size, rank=self.rank,
                                world_size=self.world)  # fmt: skip
        totals = torch.zeros(5, dtype=torch.float64, device=acc.device)  # correct, n, loss, tokens, skipped
        filters = self.task.spec.filters
        with torch.no_grad(), acc.autocast():
            for batch in make_loader(self.val, batches, self.val_collate, cfg.num_workers):
                totals[4] += len(batch.failed)
                if len(batch) == 0:
                    continue
                loss_sum, tokens = module(**self.plugin.to_device(batch.tensors()))
                raw = self.plugin.generate(Batch(batch.requests, batch.inputs), self.task.spec.generation)
                correct = sum(
                    exact_match(apply_filters(text, filters), self.val.samples[i].answers)
                    for i, text in zip(batch.indices, raw, strict=True)
                )
                totals += torch.tensor(
                    [correct, len(batch), float(loss_sum), float(tokens), 0.0],
                    dtype=torch.float64,
                    device=acc.device,
                )
        totals = acc.reduce(totals, "sum") if self.world > 1 else totals
        module.train()
        n = int(totals[1])
        return {
            "val_em": float(totals[0] / n) if n else 0.0,
            "val_loss": float(totals[2] / totals[3]) if totals[3] > 0 else float("nan"),
            "n": n,
            "skipped": int(totals[4]),
        }

    # -- saving and resuming ---------------------------------------------------------------------------
    def save_adapter(self, path: Path, which: str, validation: dict[str, Any] | None = None) -> Path:
        """Write the adapter (PEFT ``save_pretrained``) and what produced it, replacing ``path``."""
        acc, cfg, state = self.acc, self.cfg, self.state
        if acc.is_main_process:
            tmp = path.with_name(f".{path.name}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            acc.unwrap_model(self.module).peft_model.save_pretrained(str(tmp))
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
            write_json(tmp / ADAPTER_INFO, info)
            shutil.rmtree(path, ignore_errors=True)
            os.replace(tmp, path)
        acc.wait_for_everyone()
        return path

    def save_checkpoint(self) -> Path:
        acc, state = self.acc, self.state
        folder = self.out / CHECKPOINTS
        path = folder / f"step-{state.global_step:08d}"
        tmp = folder / f".{path.name}.tmp"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            acc.unwrap_model(self.module).peft_model.save_pretrained(str(tmp / "adapter"))
            torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(self.scheduler.state_dict(), tmp / "scheduler.pt")
            if acc.scaler is not None:
                torch.save(acc.scaler.state_dict(), tmp / "scaler.pt")
            write_json(tmp / CONFIG_FILE, self.cfg.to_json())
        acc.wait_for_everyone()
        _save_rng(tmp, self.rank)
        acc.wait_for_everyone()
        if acc.is_main_process:
            write_json(tmp / "state.json", asdict(state))
            shutil.rmtree(path, ignore_errors=True)
            os.replace(tmp, path)
            old = sorted(
                (p for p in folder.glob("step-*") if (p / "state.json").is_file()),
                key=lambda p: int(p.name.split("-")[1]),
            )
            for stale in old[: -self.cfg.keep_checkpoints]:
                shutil.rmtree(stale, ignore_errors=True)
        self.write_state()
        acc.wait_for_everyone()
        return path

    def _load_checkpoint(self, path: Path) -> None:
        from peft.utils import set_peft_model_state_dict
        from safetensors.torch import load_file

        saved = TrainState.from_json(json.loads((path / "state.json").read_text(encoding="utf-8")))
        if saved.batch_in_epoch and (
            saved.world_size != self.world
            or saved.batch_size != self.cfg.batch_size
            or saved.grad_accum != self.cfg.grad_accum
        ):
            raise VlmbenchError(
                f"checkpoint {path.name} was taken mid-epoch with {saved.world_size} process(es); "
                f"resume it with the same number of processes ({self.world} now)"
            )
        weights = path / "adapter" / "adapter_model.safetensors"
        result = set_peft_model_state_dict(self.peft_model, load_file(str(weights)))
        if getattr(result, "unexpected_keys", None):
            raise VlmbenchError(f"checkpoint {path.name}: adapter weights do not fit the model")
        self.optimizer.load_state_dict(
            torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
        )
        self.scheduler.load_state_dict(
            torch.load(path / "scheduler.pt", map_location="cpu", weights_only=True)
        )
        scaler = path / "scaler.pt"
        if self.acc.scaler is not None and scaler.is_file():
            self.acc.scaler.load_state_dict(torch.load(scaler, map_location="cpu", weights_only=True))
        _load_rng(path, self.rank)
        saved.world_size = self.world
        self.state = saved
        if saved.status != "running":
            self.state.status = "running"  # continuing: the new options decide when it ends

    # -- output ------------------------------------------------------------------------------------------
    def info(self, text: str) -> None:
        if self.acc.is_main_process:
            self._log(text)

    def event(self, record: dict[str, Any]) -> None:
        if self.acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            with open(self.out / METRICS_FILE, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, allow_nan=True) + "\n")

    def write_state(self) -> None:
        if not self.acc.is_main_process:
            return
        data = asdict(self.state)
        data.update(
            run=self.cfg.run_name,
            monitor=self.cfg.monitor if self.val is not None else None,
            best_adapter=str(self.out / "best") if (self.out / "best").is_dir() else None,
            latest_checkpoint=str(latest_checkpoint(self.out) or "") or None,
        )
        write_json(self.out / STATE_FILE, _finite(data))


def _save_rng(folder: Path, rank: int) -> None:
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(states, folder / f"rng-rank{rank}.pt")
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    write_json(
        folder / f"rng-rank{rank}.json",
        {
            "python": [version, list(internal), gauss],
            "numpy": [name, keys.tolist(), pos, has_gauss, cached],
        },
    )


def _load_rng(folder: Path, rank: int) -> None:
    pt = folder / f"rng-rank{rank}.pt"
    if not pt.is_file():
        return  # another number of processes: the random streams start afresh
    states = torch.load(pt, map_location="cpu", weights_only=True)
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    data = json.loads((folder / f"rng-rank{rank}.json").read_text(encoding="utf-8"))
    version, internal, gauss = data["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = data["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def _fmt(result: dict[str, Any]) -> str:
    return f"val EM {result['val_em']:.4f}, val loss {result['val_loss']:.4f} (n={result['n']})"


def _finite(value: Any) -> Any:
    """JSON without NaN/inf (``null`` instead), as the artifacts writer requires."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
