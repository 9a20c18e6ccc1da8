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
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
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
    file_sha256,
    is_hub_id,
    remembered,
    resolve_dtype,
    torch_dtype,
)
from vlmbench.api import hub_snapshot as core_hub_snapshot

from .config import PRESETS, OFAConfig
from .loading import (
    WEIGHT_FILES,
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
TOKENIZER_FILES = ("vocab.json", "merges.txt")
# Files a tokenizer folder may hold that change how text is split; all of them are hashed.
TOKENIZER_HASHED = (
    "vocab.json",
    "merges.txt",
    "tokenizer.json",
    "added_tokens.json",
    "special_tokens_map.json",
    "tokenizer_config.json",
)
HUB_PATTERNS = ("*.json", "merges.txt", "*.safetensors", "*.bin")
HUB_TOKENIZER_PATTERNS = ("*.json", "merges.txt")
# Score of a candidate the constrained beam did not reach (finite, so stores and JSON stay valid).
UNREACHED_SCORE = -1e9
_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".json", ".ckpt")

HOW_TO_PROVIDE = (
    "Pass --model-args pretrained=PATH, where PATH is a folder in the Hugging Face layout (config.json, "
    "vocab.json, merges.txt and pytorch_model.bin or model.safetensors, e.g. a download of OFA-Sys/ofa-base), "
    "or a fairseq .pt file such as vqa_base_best.pt (add tokenizer=FOLDER when its folder has no "
    "vocab.json/merges.txt); a hub id is looked up in the local Hugging Face cache and downloaded unless "
    "offline (HF_HUB_OFFLINE=1 or local_files_only=true)"
)


@dataclass
class ResolvedCheckpoint:
    """Where a checkpoint's files are and what follows from them (no weights read into memory)."""

    source: str  # what was asked for: a path or a hub id
    path: Path  # the folder or file that is loaded
    weight_files: list[Path]
    tokenizer_dir: Path
    source_format: str  # "folder", "fairseq", "torch" or "safetensors"
    revision: str | None  # hub commit of a downloaded snapshot
    stored_resolution: int | None  # fairseq checkpoints store their image size
    weights_sha256: str
    tokenizer_sha256: str


# ---------------------------------------------------------------------------------------------
# content hashes, remembered by size and modification time


def _format_facts(path: Path) -> dict[str, Any]:
    """What reading a weights file tells: its format ("fairseq", "torch", "safetensors") and a
    fairseq checkpoint's stored image size."""
    if path.suffix == ".safetensors" or path.name.endswith(".index.json"):
        return {"source_format": "safetensors" if "safetensors" in path.name else "torch"}
    try:
        raw = read_checkpoint(path)
    except OFACheckpointError:
        raw = None  # load() reports it with the full message
    facts: dict[str, Any] = {"source_format": raw.source_format if raw is not None else "torch"}
    if raw is not None and "patch_image_size" in raw.metadata:
        facts["patch_image_size"] = int(raw.metadata["patch_image_size"])
    return facts


def file_facts(path: Path, inspect: bool = False) -> dict[str, Any]:
    """sha256 of a weights file and, with ``inspect``, its format facts; both remembered per file
    version in the vlmbench cache folder (reading a large fairseq checkpoint takes a while)."""
    facts: dict[str, Any] = {"sha256": file_sha256(path)}
    if inspect:
        facts.update(remembered(path, "ofa_format", _format_facts, always=True))
    return facts


def _combined_hash(files: list[Path], root: Path | None = None) -> str:
    digest = hashlib.sha256()
    for path in files:
        name = path.name if root is None else str(path.relative_to(root))
        digest.update(f"{name}:{file_facts(path)['sha256']}\n".encode())
    return digest.hexdigest()


def _tokenizer_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for name in TOKENIZER_HASHED:
        if (folder / name).is_file():
            digest.update(f"{name}:{file_sha256(folder / name)}\n".encode())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# finding files


def _folder_weights(folder: Path) -> list[Path]:
    for name in WEIGHT_FILES:
        path = folder / name
        if path.is_file():
            if name.endswith(".index.json"):
                with open(path, encoding="utf-8") as handle:
                    shards = sorted(set(json.load(handle)["weight_map"].values()))
                return [path, *(folder / shard for shard in shards)]
            return [path]
    return []


def _has_tokenizer(folder: Path) -> bool:
    return all((folder / name).is_file() for name in TOKENIZER_FILES)


def hub_snapshot(
    repo_id: str,
    revision: str | None,
    *,
    complete,
    what: str,
    local_files_only: bool,
    patterns: tuple[str, ...] = HUB_PATTERNS,
) -> Path:
    """A hub repository's snapshot folder with the files ``complete(folder)`` asks for: the local cache
    first, then (unless offline) a download."""
    return core_hub_snapshot(
        repo_id,
        asset=f"{what} {repo_id!r}" + (f" (revision {revision})" if revision else ""),
        how=HOW_TO_PROVIDE,
        revision=revision,
        allow_patterns=patterns,
        complete=complete,
        local_files_only=local_files_only,
    )


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
        return self.arg_values["pretrained"] or self.entry.default_checkpoint or "OFA-Sys/ofa-base"

    def _local_or_hub(
        self,
        name: str,
        what: str,
        complete,
        patterns: tuple[str, ...] = HUB_PATTERNS,
        revision: str | None = None,
    ) -> tuple[Path, str | None]:
        path = Path(name).expanduser()
        if path.exists():
            return path.resolve(), None
        if not is_hub_id(name, owner=False, not_suffixes=_FILE_SUFFIXES):
            raise AssetMissingError(f"{what} {name!r}", f"no such file or folder. {HOW_TO_PROVIDE}")
        folder = hub_snapshot(
            name,
            revision,
            complete=complete,
            what=what,
            local_files_only=self.arg_values["local_files_only"],
            patterns=patterns,
        )
        return folder, folder.name

    def resolve(self) -> ResolvedCheckpoint:
        """Find the checkpoint and tokenizer files (once); raise AssetMissingError if absent."""
        if self._resolved is not None:
            return self._resolved
        if self._missing is not None:
            raise self._missing
        try:
            self._resolved = self._resolve()
        except AssetMissingError as error:
            self._missing = error
            raise
        return self._resolved

    def _resolve(self) -> ResolvedCheckpoint:
        source = self.source
        path, revision = self._local_or_hub(
            source,
            "OFA checkpoint",
            lambda folder: bool(_folder_weights(folder)) and _has_tokenizer(folder),
            revision=self.arg_values["revision"],
        )
        stored_resolution = None
        if path.is_dir():
            weights = _folder_weights(path)
            if not weights:
                raise AssetMissingError(
                    f"OFA checkpoint {source!r}",
                    f"{path} holds no weights file (looked for {', '.join(WEIGHT_FILES)}). {HOW_TO_PROVIDE}",
                )
            source_format = "folder"
            weights_sha256 = _combined_hash(weights, root=path)
        else:
            weights = [path]
            facts = file_facts(path, inspect=True)
            source_format = facts["source_format"]
            stored_resolution = facts.get("patch_image_size")
            weights_sha256 = facts["sha256"]

        tokenizer_arg = self.arg_values["tokenizer"]
        beside = path if path.is_dir() else path.parent
        if tokenizer_arg:
            tokenizer_dir, _ = self._local_or_hub(
                tokenizer_arg, "OFA tokenizer", _has_tokenizer, HUB_TOKENIZER_PATTERNS
            )
        elif _has_tokenizer(beside):
            tokenizer_dir = beside
        else:
            default = self.entry.default_checkpoint or "OFA-Sys/ofa-base"
            try:
                tokenizer_dir, _ = self._local_or_hub(
                    default, "OFA tokenizer", _has_tokenizer, HUB_TOKENIZER_PATTERNS
                )
            except AssetMissingError as error:
                raise AssetMissingError(
                    f"OFA tokenizer for {source!r}",
                    f"{beside} has no vocab.json/merges.txt and the default tokenizer ({default}) is not "
                    "available either; pass --model-args tokenizer=FOLDER (any OFA hub folder: all sizes share "
                    "one vocabulary)",
                ) from error
        if not _has_tokenizer(tokenizer_dir):
            raise AssetMissingError(
                f"OFA tokenizer files in {tokenizer_dir}",
                f"{' and '.join(TOKENIZER_FILES)} are needed; pass --model-args tokenizer=FOLDER",
            )
        return ResolvedCheckpoint(
            source=source,
            path=path,
            weight_files=weights,
            tokenizer_dir=tokenizer_dir,
            source_format=source_format,
            revision=revision,
            stored_resolution=stored_resolution,
            weights_sha256=weights_sha256,
            tokenizer_sha256=_tokenizer_hash(tokenizer_dir),
        )

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
