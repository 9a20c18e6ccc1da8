"""Checkpoint state of a fine-tuning run: what a run saves, where, and how it resumes exactly.

A checkpoint holds the adapter weights, the optimizer, scheduler and gradient-scaler state, every
process's random streams and the :class:`TrainState`; the run's folder also holds ``train_state.json``
(where the run stands), ``metrics.jsonl`` (the training and validation log) and the adapters ``best/``
and ``last/``. The main process writes; every process takes part in saving, since they meet at
barriers.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlmbench.api import VlmbenchError, write_json
from vlmbench_plugins.models.blip.finetune.config import FinetuneConfig, incompatible_changes
from vlmbench_plugins.models.blip.lora import FINETUNE_INFO

CONFIG_FILE = "finetune_config.json"
STATE_FILE = "train_state.json"
METRICS_FILE = "metrics.jsonl"
ADAPTER_INFO = FINETUNE_INFO  # what lora-blip reads next to an adapter
CHECKPOINTS = "checkpoints"


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


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint under ``output_dir/checkpoints``."""
    folder = Path(output_dir) / CHECKPOINTS
    done = [p for p in folder.glob("step-*") if (p / "state.json").is_file()] if folder.is_dir() else []
    return max(done, key=lambda p: int(p.name.split("-")[1])) if done else None


def checkpoint_to_resume(cfg: FinetuneConfig) -> Path | None:
    """The checkpoint ``cfg.resume`` names (None for a new run), after checking that the output folder
    holds no other run and that the options a checkpoint fixes have not changed."""
    out = Path(cfg.output_dir)
    if not cfg.resume:
        state = out / STATE_FILE
        if state.is_file() or latest_checkpoint(out) is not None:
            raise VlmbenchError(
                f"{out} already holds a fine-tuning run; resume it with --resume, or choose another --output-dir"
            )
        return None
    if cfg.resume == "latest":
        found = latest_checkpoint(out)
        if found is None:
            raise VlmbenchError(f"no checkpoint to resume under {out / CHECKPOINTS}")
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
                f"cannot resume {found}: these options differ from the checkpoint's and must not ({details})"
            )
    return found


@dataclass
class Checkpointer:
    """Saves and restores a run: its adapters, checkpoints, state file and metrics log.

    ``optimizer`` is the one accelerate prepared; ``monitor`` is the validation metric that picks the
    best adapter (None without a validation split).
    """

    cfg: FinetuneConfig
    acc: Any  # accelerate.Accelerator
    peft_model: Any
    optimizer: Any
    scheduler: Any
    monitor: str | None

    @property
    def out(self) -> Path:
        return Path(self.cfg.output_dir)

    def event(self, record: dict[str, Any]) -> None:
        """Append one record to ``metrics.jsonl``."""
        if self.acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            with open(self.out / METRICS_FILE, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, allow_nan=True) + "\n")

    def write_state(self, state: TrainState) -> None:
        """Write ``train_state.json``: the state, and where the best adapter and newest checkpoint are."""
        if not self.acc.is_main_process:
            return
        data = asdict(state)
        data.update(
            run=self.cfg.run_name,
            monitor=self.monitor,
            best_adapter=str(self.out / "best") if (self.out / "best").is_dir() else None,
            latest_checkpoint=str(latest_checkpoint(self.out) or "") or None,
        )
        write_json(self.out / STATE_FILE, _finite(data))

    def save_adapter(self, path: Path, info: dict[str, Any]) -> Path:
        """Write the adapter (PEFT ``save_pretrained``) and ``info`` (what produced it), replacing
        ``path``."""
        if self.acc.is_main_process:
            tmp = path.with_name(f".{path.name}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            self.peft_model.save_pretrained(str(tmp))
            write_json(tmp / ADAPTER_INFO, info)
            shutil.rmtree(path, ignore_errors=True)
            os.replace(tmp, path)
        self.acc.wait_for_everyone()
        return path

    def save(self, state: TrainState) -> Path:
        """Take a checkpoint ``checkpoints/step-N``, keep the newest ``keep_checkpoints`` of them and
        update ``train_state.json``."""
        acc, rank = self.acc, self.acc.process_index
        folder = self.out / CHECKPOINTS
        path = folder / f"step-{state.global_step:08d}"
        tmp = folder / f".{path.name}.tmp"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            self.peft_model.save_pretrained(str(tmp / "adapter"))
            torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(self.scheduler.state_dict(), tmp / "scheduler.pt")
            if acc.scaler is not None:
                torch.save(acc.scaler.state_dict(), tmp / "scaler.pt")
            write_json(tmp / CONFIG_FILE, self.cfg.to_json())
        acc.wait_for_everyone()
        _save_rng(tmp, rank)
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
        self.write_state(state)
        acc.wait_for_everyone()
        return path

    def load(self, path: Path) -> TrainState:
        """Restore the checkpoint at ``path`` into the adapter, optimizer, scheduler, gradient scaler
        and random streams; return its state, running again with this run's number of processes."""
        from peft.utils import set_peft_model_state_dict
        from safetensors.torch import load_file

        acc, world = self.acc, self.acc.num_processes
        saved = TrainState.from_json(json.loads((path / "state.json").read_text(encoding="utf-8")))
        if saved.batch_in_epoch and (
            saved.world_size != world
            or saved.batch_size != self.cfg.batch_size
            or saved.grad_accum != self.cfg.grad_accum
        ):
            raise VlmbenchError(
                f"checkpoint {path.name} was taken mid-epoch with {saved.world_size} process(es); "
                f"resume it with the same number of processes ({world} now)"
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
        if acc.scaler is not None and scaler.is_file():
            acc.scaler.load_state_dict(torch.load(scaler, map_location="cpu", weights_only=True))
        _load_rng(path, acc.process_index)
        saved.world_size = world
        saved.status = "running"  # continuing: the new options decide when it ends
        return saved


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


def _finite(value: Any) -> Any:
    """JSON without NaN/inf (``null`` instead), as the artifacts writer requires."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
