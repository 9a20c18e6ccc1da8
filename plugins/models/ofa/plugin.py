"""The ``ofa`` model plugin: OFA answering vlmbench requests.

``generate`` requests get beam search (a few tokens; the task's answer filters then take the
first word); ``rank`` requests either a Trie-constrained beam over the task's candidates
(``rank_mode=trie``) or the log-likelihood of every candidate (``rank_mode=allcand``).

Checkpoints are Hugging Face port folders (local, or a hub id resolved local-first) and fairseq
``.pt`` files (the VQA fine-tuned ones, with a tokenizer folder). Resolving the checkpoint needs
no weights in memory: it happens when the run is keyed (:meth:`OFAModel.identity` hashes the
weight files), and a checkpoint that cannot be found is reported by :meth:`OFAModel.load` as an
:class:`~vlmbench.errors.AssetMissingError`, so the run is skipped with that message.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch

from vlmbench.api import (
    Arg,
    ArgError,
    AssetMissingError,
    Batch,
    GenerationSpec,
    Model,
    VlmbenchError,
    resolve_dtype,
    torch_dtype,
)

from .checkpoint import DEFAULT_CHECKPOINT, ResolvedCheckpoint, resolve_checkpoint
from .config import PRESETS, OFAConfig
from .loading import (
    OFACheckpointError,
    infer_config,
    load_ofa,
    normalize_state_dict,
    read_checkpoint,
)
from .modeling import OFAModel as OFANetwork
from .preprocess import DEFAULT_RESOLUTION
from .tokenization import load_ofa_tokenizer
from .vqa import PRETRAINED_RESOLUTION, OFAForVQA, VQAInputs, prepare_inputs

RANK_MODES = ("allcand", "trie")
PROMPT_STYLES = ("auto", "pretrained", "finetuned")
# Score of a candidate the constrained beam did not reach (finite, so stores and JSON stay valid).
UNREACHED_SCORE = -1e9


# ---------------------------------------------------------------------------------------------
# the plugin


class OFAModel(Model):
    """vlmbench model plugin for OFA (the network itself is :class:`.modeling.OFAModel`)."""

    args = {
        "pretrained": Arg(
            str,
            None,
            "checkpoint: a hub id (default OFA-Sys/ofa-base), a Hugging Face layout folder, or a fairseq .pt",
        ),
        "tokenizer": Arg(
            str,
            None,
            "folder (or hub id) with vocab.json + merges.txt; default: the checkpoint's folder, "
            "else OFA-Sys/ofa-base's (every OFA size shares one vocabulary)",
        ),
        "revision": Arg(str, None, "hub revision (branch, tag or commit) of a hub checkpoint"),
        "size": Arg(
            str,
            None,
            "architecture preset (tiny, medium, base, large, huge) for weights that carry no configuration",
            choices=tuple(PRESETS),
        ),
        "resolution": Arg(
            int,
            None,
            "image side in pixels (multiple of 16); default: stored in the checkpoint, else 480 "
            "for fairseq (VQA fine-tuned) files and 384 otherwise",
            min=16,
        ),
        "prompt_style": Arg(
            str,
            "auto",
            "pretrained: decode from BOS, Trie masks after the softmax; finetuned: decoder prompted with the "
            "question, Trie renormalises; auto: finetuned for fairseq files, pretrained otherwise",
            choices=PROMPT_STYLES,
        ),
        "num_beams": Arg(int, 5, "beam width of generate and of rank_mode=trie (1: greedy)", min=1),
        "max_new_tokens": Arg(
            int,
            None,
            "longest generated answer in tokens; default: the task's generation.max_new_tokens",
            min=1,
        ),
        "rank_mode": Arg(
            str,
            "allcand",
            "rank requests: allcand scores every candidate (log-likelihood); trie runs a beam search constrained "
            "to the candidates",
            choices=RANK_MODES,
        ),
        "chunk_size": Arg(
            int, 128, "candidates scored per decoder call (allcand)", affects_output=False, min=1
        ),
        "local_files_only": Arg(
            bool, False, "never download: use only local files and the hub cache", affects_output=False
        ),
    }
    # Questions go to OFA bare (it adds its own normalisation); a task can still set an `ofa` template.
    default_prompt = "{question}"
    version = "1"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        values = self.arg_values
        resolution = values["resolution"]
        if resolution is not None and resolution % 16:
            raise ArgError(f"model 'ofa': resolution must be a positive multiple of 16, got {resolution}")
        self.vqa: OFAForVQA | None = None
        self._resolved: ResolvedCheckpoint | None = None
        self._missing: AssetMissingError | None = None
        self._tokenizer = None

    # -- checkpoint -------------------------------------------------------------------------------

    @property
    def source(self) -> str:
        return self.arg_values["pretrained"] or self.entry.default_checkpoint or DEFAULT_CHECKPOINT

    def resolve(self) -> ResolvedCheckpoint:
        """Find the checkpoint and tokenizer files (once); raise AssetMissingError if absent."""
        if self._resolved is not None:
            return self._resolved
        if self._missing is not None:
            raise self._missing
        try:
            self._resolved = resolve_checkpoint(
                self.source,
                revision=self.arg_values["revision"],
                tokenizer=self.arg_values["tokenizer"],
                default=self.entry.default_checkpoint or DEFAULT_CHECKPOINT,
                local_files_only=self.arg_values["local_files_only"],
            )
        except AssetMissingError as error:
            self._missing = error
            raise
        return self._resolved

    def _try_resolve(self) -> ResolvedCheckpoint | None:
        try:
            return self.resolve()
        except AssetMissingError:
            return None

    def prompt_style(self, resolved: ResolvedCheckpoint | None = None) -> str | None:
        style = self.arg_values["prompt_style"]
        if style != "auto":
            return style
        resolved = resolved or self._try_resolve()
        if resolved is None:
            return None
        return "finetuned" if resolved.source_format == "fairseq" else "pretrained"

    def resolution(self, resolved: ResolvedCheckpoint | None = None) -> int | None:
        if self.arg_values["resolution"] is not None:
            return self.arg_values["resolution"]
        resolved = resolved or self._try_resolve()
        if resolved is None:
            return None
        if resolved.stored_resolution:
            return resolved.stored_resolution
        return DEFAULT_RESOLUTION if resolved.source_format == "fairseq" else PRETRAINED_RESOLUTION

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch_dtype(resolve_dtype(self.dtype, self.device))

    # -- lifecycle --------------------------------------------------------------------------------

    def load(self) -> None:
        if self.vqa is not None:
            return
        resolved = self.resolve()
        config = OFAConfig.preset(self.arg_values["size"]) if self.arg_values["size"] else None
        try:
            loaded = load_ofa(resolved.path, config, device=self.device, dtype=self.torch_dtype)
        except OFACheckpointError as error:
            hint = (
                " (try size=... if the weights carry no configuration)" if not self.arg_values["size"] else ""
            )
            raise VlmbenchError(f"ofa: cannot load {resolved.path}{hint}: {error}") from error
        tokenizer = self._get_tokenizer()
        config = loaded.model.config
        resolution = self.resolution(resolved)
        patches = resolution // 16
        if patches > config.image_bucket_size:
            raise VlmbenchError(
                f"ofa: resolution {resolution} gives {patches}x{patches} patches, more than the model's "
                f"relative-position grid ({config.image_bucket_size}x{config.image_bucket_size}); use at most "
                f"{16 * config.image_bucket_size}"
            )
        special = (tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id)
        if special != (config.bos_token_id, config.pad_token_id, config.eos_token_id):
            raise VlmbenchError(f"ofa: tokenizer special ids {special} differ from the model's")
        try:
            self.vqa = OFAForVQA(
                loaded.model, tokenizer, resolution=resolution, prompt_style=self.prompt_style(resolved)
            )
        except ValueError as error:
            raise VlmbenchError(
                f"ofa: {resolved.tokenizer_dir} does not fit {resolved.path}: {error}"
            ) from error

    def _get_tokenizer(self):
        if self._tokenizer is None:
            resolved = self.resolve()
            try:
                self._tokenizer = load_ofa_tokenizer(resolved.tokenizer_dir)
            except (OSError, ValueError) as error:
                raise VlmbenchError(
                    f"ofa: cannot read the tokenizer in {resolved.tokenizer_dir}: {error}"
                ) from error
        return self._tokenizer

    # -- inference --------------------------------------------------------------------------------

    def collate(self, requests) -> VQAInputs | None:
        # DataLoader workers: question normalisation, BPE and the image transform. Without a
        # checkpoint there is nothing to prepare; load() then reports what is missing.
        try:
            tokenizer = self._get_tokenizer()
        except AssetMissingError:
            return None
        return prepare_inputs(
            tokenizer,
            [r.image for r in requests],
            [r.prompt for r in requests],
            self.resolution(),
            tokenizer.pad_token_id,
            tokenizer.bos_token_id,
            tokenizer.eos_token_id,
        )

    def _inputs(self, batch: Batch) -> VQAInputs:
        self.load()
        inputs = batch.inputs if isinstance(batch.inputs, VQAInputs) else self.collate(batch.requests)
        if inputs is None or len(inputs) != len(batch.requests):
            raise VlmbenchError("ofa: the batch has no prepared inputs")
        return inputs

    def generate(self, batch: Batch, generation: GenerationSpec) -> list[str]:
        if generation.do_sample:
            raise VlmbenchError(
                "ofa decodes with beam search; the task asks for sampling (generation.do_sample: true)"
            )
        inputs = self._inputs(batch)
        assert self.vqa is not None
        return self.vqa.generate(
            inputs,
            max_new_tokens=self.max_new_tokens(generation),
            num_beams=self.arg_values["num_beams"],
        )

    def max_new_tokens(self, generation: GenerationSpec) -> int:
        return self.arg_values["max_new_tokens"] or generation.max_new_tokens

    def rank(self, batch: Batch) -> list[list[float]]:
        inputs = self._inputs(batch)
        assert self.vqa is not None
        # Equal candidate lists become one object, so the batch shares one Trie and one decode.
        shared: dict[tuple[str, ...], list[str]] = {}
        per_row = [shared.setdefault(tuple(r.candidates), list(r.candidates)) for r in batch.requests]
        try:
            if self.arg_values["rank_mode"] == "allcand":
                scores = self.vqa.score_candidates(
                    inputs, candidates=per_row, chunk_size=self.arg_values["chunk_size"]
                )
                return [
                    [_finite(value) for value in scores[row, : len(candidates)].tolist()]
                    for row, candidates in enumerate(per_row)
                ]
            found = self.vqa.constrained_scores(
                inputs, candidates=per_row, num_beams=self.arg_values["num_beams"]
            )
        except ValueError as error:  # e.g. an empty candidate answer
            raise VlmbenchError(f"ofa: {error}") from error
        return [
            [_finite(row_found.get(index, UNREACHED_SCORE)) for index in range(len(candidates))]
            for candidates, row_found in zip(per_row, found, strict=True)
        ]

    # -- identity ---------------------------------------------------------------------------------

    def identity(self) -> dict[str, Any]:
        identity = super().identity()
        resolved = self._try_resolve()
        identity.update(
            torch_dtype=str(self.torch_dtype).removeprefix("torch."),
            checkpoint=None if resolved is None else resolved.source,
            revision=None if resolved is None else resolved.revision,
            weights_sha256=None if resolved is None else resolved.weights_sha256,
            tokenizer_sha256=None if resolved is None else resolved.tokenizer_sha256,
            resolution=self.resolution(resolved),
            prompt_style=self.prompt_style(resolved),
            num_beams=self.arg_values["num_beams"],
            rank_mode=self.arg_values["rank_mode"],
        )
        if resolved is not None:
            # Workers fork from this process: they find the tokenizer already loaded.
            with contextlib.suppress(VlmbenchError):
                self._get_tokenizer()
        return identity

    def describe(self) -> dict[str, Any]:
        resolved = self._try_resolve()
        return {
            **super().describe(),
            "checkpoint": self.source,
            "checkpoint_path": None if resolved is None else str(resolved.path),
            "checkpoint_format": None if resolved is None else resolved.source_format,
            "revision": None if resolved is None else resolved.revision,
            "weights_sha256": None if resolved is None else resolved.weights_sha256,
            "tokenizer": None if resolved is None else str(resolved.tokenizer_dir),
            "parameters": self._parameters(resolved),
            "torch_dtype": str(self.torch_dtype).removeprefix("torch."),
            "resolution": self.resolution(resolved),
            "prompt_style": self.prompt_style(resolved),
            "rank_mode": self.arg_values["rank_mode"],
            "num_beams": self.arg_values["num_beams"],
        }

    def _parameters(self, resolved: ResolvedCheckpoint | None) -> int | None:
        """Exact count of the loaded model; without loading (every answer cached), the count of
        the architecture the checkpoint describes."""
        if self.vqa is not None:
            return self.vqa.model.num_parameters()
        if resolved is None:
            return None
        try:
            if self.arg_values["size"]:
                config = OFAConfig.preset(self.arg_values["size"])
            elif resolved.path.is_dir() and (resolved.path / "config.json").is_file():
                config = OFAConfig.from_json_file(resolved.path / "config.json")
            else:
                raw = read_checkpoint(resolved.path)
                config = infer_config(
                    normalize_state_dict(raw.state_dict, share_output_projection=None), raw.config
                )
            with torch.device("meta"):
                return OFANetwork(config).num_parameters()
        except (OFACheckpointError, OSError, ValueError, TypeError):
            return None


def _finite(value: float) -> float:
    return value if math.isfinite(value) else UNREACHED_SCORE
