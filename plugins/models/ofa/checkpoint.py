"""Finding an OFA checkpoint's files: a folder in the Hugging Face layout, a fairseq ``.pt`` file or a
hub id (the local cache first), with the tokenizer beside it or named apart; content hashes for the
fingerprint. Nothing here reads the weights into memory."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmbench.api import AssetMissingError, file_sha256, is_hub_id, remembered
from vlmbench.api import hub_snapshot as core_hub_snapshot

from .loading import WEIGHT_FILES, OFACheckpointError, read_checkpoint

DEFAULT_CHECKPOINT = "OFA-Sys/ofa-base"
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


def _local_or_hub(
    name: str,
    what: str,
    complete,
    *,
    local_files_only: bool,
    patterns: tuple[str, ...] = HUB_PATTERNS,
    revision: str | None = None,
) -> tuple[Path, str | None]:
    """A local file or folder, else a hub repository's snapshot (cache first, then a download)."""
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
        local_files_only=local_files_only,
        patterns=patterns,
    )
    return folder, folder.name


def resolve_checkpoint(
    source: str, *, revision: str | None, tokenizer: str | None, default: str, local_files_only: bool
) -> ResolvedCheckpoint:
    """Find a checkpoint's weights and tokenizer files (a folder, a fairseq file or a hub id) without
    reading the weights; anything missing is an :class:`AssetMissingError` saying how to provide it."""
    path, revision = _local_or_hub(
        source,
        "OFA checkpoint",
        lambda folder: bool(_folder_weights(folder)) and _has_tokenizer(folder),
        local_files_only=local_files_only,
        revision=revision,
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

    beside = path if path.is_dir() else path.parent
    if tokenizer:
        tokenizer_dir, _ = _local_or_hub(
            tokenizer, "OFA tokenizer", _has_tokenizer, local_files_only=local_files_only,
            patterns=HUB_TOKENIZER_PATTERNS,
        )  # fmt: skip
    elif _has_tokenizer(beside):
        tokenizer_dir = beside
    else:
        try:
            tokenizer_dir, _ = _local_or_hub(
                default, "OFA tokenizer", _has_tokenizer, local_files_only=local_files_only,
                patterns=HUB_TOKENIZER_PATTERNS,
            )  # fmt: skip
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
