"""The evaluation hook of fine-tuning: the adapter being trained answers the validation split.

Answers come from the model plugin's own ``generate`` with the task's generation settings, go
through the task's answer filters and are scored by exact match as the harness scores them; the
answer loss is the training objective's. All processes of a data-parallel run take part, each on
its own shard of the split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from vlmbench.api import Batch, Task, apply_filters, loader_batches, vqa_normalize
from vlmbench_plugins.models.blip.finetune.config import MONITORS
from vlmbench_plugins.models.blip.finetune.data import SplitData, VQACollate, make_loader, shard_batches
from vlmbench_plugins.models.blip.vqa import BlipVQA


def exact_match(answer: str, references: tuple[str, ...]) -> float:
    """The harness's exact match: VQA-normalised equality with any reference."""
    norm = vqa_normalize(answer)
    return float(any(norm == vqa_normalize(r) for r in references))


def improves(monitor: str, value: float, best: float | None, min_delta: float) -> bool:
    """Whether a validation result ``value`` of ``monitor`` beats the best so far by more than
    ``min_delta`` (in the metric's better direction)."""
    if best is None:
        return True
    return value - best > min_delta if MONITORS[monitor] else best - value > min_delta


def describe(result: dict[str, Any]) -> str:
    """One log line's worth of a validation result."""
    return f"val EM {result['val_em']:.4f}, val loss {result['val_loss']:.4f} (n={result['n']})"


@dataclass
class Validation:
    """Validation of the adapter on one split of the task, by every process on its shard."""

    plugin: BlipVQA
    data: SplitData
    collate: VQACollate
    task: Task
    batch_size: int
    num_workers: int
    acc: Any  # accelerate.Accelerator

    def run(self, module: torch.nn.Module) -> dict[str, Any]:
        """Exact match of generated answers (the task's filters, VQA normalisation, best reference)
        and the token-averaged answer loss of ``module`` (the training objective, as accelerate
        prepared it) over the split, all processes together. Leaves ``module`` in training mode."""
        acc, rank, world = self.acc, self.acc.process_index, self.acc.num_processes
        module = acc.unwrap_model(module)
        module.eval()
        batches = shard_batches(len(self.data), self.batch_size, rank=rank, world_size=world)
        totals = torch.zeros(5, dtype=torch.float64, device=acc.device)  # correct, n, loss, tokens, skipped
        spec = self.task.spec
        with torch.no_grad(), acc.autocast():
            for batch in loader_batches(make_loader(self.data, batches, self.collate, self.num_workers)):
                totals[4] += len(batch.failed)
                if len(batch) == 0:
                    continue
                loss_sum, tokens = module(**self.plugin.to_device(batch.tensors()))
                raw = self.plugin.generate(Batch(batch.requests, batch.inputs), spec.generation)
                correct = sum(
                    exact_match(apply_filters(text, spec.filters), self.data.samples[i].answers)
                    for i, text in zip(batch.indices, raw, strict=True)
                )
                totals += torch.tensor(
                    [correct, len(batch), float(loss_sum), float(tokens), 0.0],
                    dtype=torch.float64,
                    device=acc.device,
                )
        totals = acc.reduce(totals, "sum") if world > 1 else totals
        module.train()
        n = int(totals[1])
        return {
            "val_em": float(totals[0] / n) if n else 0.0,
            "val_loss": float(totals[2] / totals[3]) if totals[3] > 0 else float("nan"),
            "n": n,
            "skipped": int(totals[4]),
        }
