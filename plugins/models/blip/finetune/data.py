"""Training and validation batches for BLIP VQA from a task's splits.

A split of the task's dataset is read exactly as the harness reads its evaluation split
(:func:`vlmbench.api.load_split`); images come through the task's :class:`ImageSource` (paths
confined to the image root) and :func:`vlmbench.api.decode_image`, in DataLoader workers. The
question is the task's prompt for the model family, encoded by the model plugin's own ``prepare``, so
training sees exactly the inputs evaluation will; the answer (the sample's first reference) becomes
the answer decoder's target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vlmbench.api import (
    DataError,
    ImageProblem,
    ImageSource,
    Request,
    Sample,
    Task,
    data_loader,
    decode_image,
    load_split,
)

IGNORE_INDEX = -100  # label value the loss skips: answer padding


@dataclass
class SplitData:
    """The usable samples of one split, their prompts and where their images come from."""

    name: str
    samples: list[Sample]
    prompts: list[str]
    source: ImageSource
    problems: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)


def load_split_data(task: Task, split: str, template: str, limit: int | None = None) -> SplitData:
    """Read ``split`` of the task's dataset; rows that cannot be used are listed in ``problems``."""
    loaded, source = load_split(task.spec.dataset, split)
    samples = loaded.samples[:limit] if limit else loaded.samples
    if not samples:
        raise DataError(f"task {task.name!r}: split {split!r} has no usable samples")
    prompts = [task.render_prompt(template, s) for s in samples]
    return SplitData(split, samples, prompts, source, [p.message for p in loaded.problems])


def epoch_batches(
    n: int,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
    shuffle: bool = True,
) -> list[list[int]]:
    """This process's batches (sample indices) for one epoch.

    The order depends only on (seed, epoch), so a run resumed mid-epoch sees the same batches. With
    several processes the order is padded by repeating its start until it divides evenly, then dealt
    out round-robin: every process gets the same number of batches, as data-parallel training needs.
    """
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    if world_size > 1:
        pad = (-n) % world_size
        order = np.concatenate([order, order[:pad]])[rank::world_size]
    return [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]


def shard_batches(n: int, batch_size: int, *, rank: int = 0, world_size: int = 1) -> list[list[int]]:
    """Every ``world_size``-th sample from ``rank`` on, in file order and in batches (evaluation:
    no sample twice, so the shards' counts add up to the split)."""
    order = list(range(rank, n, world_size))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


class SplitImages:
    """Map-style dataset: a sample's request with its image decoded (in a DataLoader worker)."""

    def __init__(self, data: SplitData):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[int, Request]:
        sample = self.data.samples[i]
        request = Request(
            sample_id=sample.id,
            kind="generate",
            prompt=self.data.prompts[i],
            question=sample.question,
            image_ref=sample.image,
            image_id=sample.image_id,
        )
        try:
            request.image = decode_image(self.data.source.read(sample.image), name=sample.image)
        except ImageProblem as problem:
            request.problem = problem
        return i, request


@dataclass
class VQABatch:
    """Requests (for generation), the model's prepared inputs and the answer decoder's targets."""

    indices: list[int]
    requests: list[Request]
    inputs: dict[str, Any] | None
    decoder_input_ids: Any = None
    decoder_attention_mask: Any = None
    labels: Any = None
    failed: list[Request] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.requests)

    def tensors(self) -> dict[str, Any]:
        """Keyword arguments of the training objective (:class:`.model.VQALoss`)."""
        return {
            "input_ids": self.inputs["input_ids"],
            "attention_mask": self.inputs["attention_mask"],
            "pixel_values": self.inputs["pixel_values"],
            "decoder_input_ids": self.decoder_input_ids,
            "decoder_attention_mask": self.decoder_attention_mask,
            "labels": self.labels,
        }


class VQACollate:
    """Collates decoded requests into a :class:`VQABatch` (picklable: runs in DataLoader workers).

    The answer is tokenised as the BLIP answer decoder reads it: the tokenizer's ``[CLS] answer [SEP]``
    with the first token replaced by the decoder's start token; padding positions get the label
    :data:`IGNORE_INDEX` so they do not count in the loss.
    """

    def __init__(self, plugin: Any, answers: Sequence[str], max_answer_tokens: int, decoder_start_id: int):
        self.plugin = plugin
        self.answers = list(answers)
        self.max_answer_tokens = max_answer_tokens
        self.decoder_start_id = decoder_start_id

    def __call__(self, items: list[tuple[int, Request]]) -> VQABatch:
        good = [(i, r) for i, r in items if r.problem is None]
        failed = [r for _, r in items if r.problem is not None]
        if not good:
            return VQABatch([], [], None, failed=failed)
        indices = [i for i, _ in good]
        requests = [r for _, r in good]
        inputs = self.plugin.prepare(requests)
        tokenizer = self.plugin.processor.tokenizer
        answers = tokenizer(
            [self.answers[i] for i in indices],
            padding=True,
            truncation=True,
            max_length=self.max_answer_tokens,
            return_tensors="pt",
        )
        ids = answers["input_ids"].clone()
        ids[:, 0] = self.decoder_start_id
        mask = answers["attention_mask"]
        labels = ids.masked_fill(mask == 0, IGNORE_INDEX)
        labels[:, 0] = IGNORE_INDEX  # the start token is given, never predicted
        return VQABatch(indices, requests, inputs, ids, mask, labels, failed)


def make_loader(
    data: SplitData, batches: list[list[int]], collate: VQACollate, num_workers: int, seed: int = 0
) -> Any:
    """A DataLoader over the given batches of indices (images decoded and encoded in workers), started
    as every loader of vlmbench is (:func:`vlmbench.api.data_loader`: workers die with the process,
    leave signals to it and time out instead of hanging); iterate it with
    :func:`vlmbench.api.loader_batches`.

    It draws its workers' seeds from its own generator, not from torch's global one: the global
    stream (LoRA dropout) then advances only with training steps, so a resumed run continues it
    exactly where the checkpoint left it.
    """
    import torch

    return data_loader(
        SplitImages(data),
        batches,
        collate,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
    )
