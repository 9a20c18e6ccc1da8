"""Region features for a task's images ahead of a run (``vlmbench vilbert-features``).

The images of the task are read as a run reads them, keyed by the sha256 of their bytes; those already
in the feature cache are skipped, the others go through the detector one at a time and are written to
the cache as soon as each is done. A command killed at any point loses at most the image in progress;
the next one, or a ``vlmbench run -m vilbert`` with the same detector, picks up the rest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmbench.api import (
    ArgError,
    AssetMissingError,
    ImageProblem,
    VlmbenchError,
    decode_image,
    load_plugins,
    resolve_device,
    resolve_task,
)

from .detector.loading import find_detector_files
from .detector.source import DetectorSource
from .loading import CheckpointError


@dataclass
class PrecomputeResult:
    images: int = 0
    extracted: int = 0
    cached: int = 0
    unreadable: dict[str, str] = field(default_factory=dict)  # image -> why
    cache_folder: Path | None = None


def detector_source(model_args: dict[str, Any] | str | None, device: str) -> DetectorSource:
    """The feature source a ``vilbert`` run with these arguments uses (same cache key)."""
    model = load_plugins().create_model("vilbert", model_args, device=device)
    v = model.arg_values
    if v["features"] != "detector":
        raise ArgError("vilbert-features extracts region-detector features: leave features= at detector")
    files = find_detector_files(v["detector"], v["detector_config"])
    if files.missing:
        raise AssetMissingError("the region detector", "; ".join(files.missing))
    source = DetectorSource(
        files, v["feature_cache"], device, v["num_regions"] + 1, v["min_size"], v["max_size"]
    )
    try:
        _ = source.cache  # reads the config: a bad one stops here
    except CheckpointError as exc:
        raise VlmbenchError(str(exc)) from None
    return source


def precompute_features(
    task: str | Path,
    model_args: dict[str, Any] | str | None = None,
    device: str | None = None,
    limit: int | None = None,
    progress: Callable[[int], Any] | None = None,
) -> PrecomputeResult:
    """Extract and cache the features of every image of ``task`` (its first ``limit`` samples).

    ``progress(total)`` returns a bar-like object with ``update()`` and ``close()`` (tqdm), or None.
    """
    source = detector_source(model_args, resolve_device(device))
    loaded = resolve_task(task, load_plugins())
    samples = loaded.samples if limit is None else loaded.samples[:limit]
    images = list(dict.fromkeys(s.image for s in samples))
    result = PrecomputeResult(images=len(images), cache_folder=source.cache.folder)
    bar = progress(len(images)) if progress else None
    try:
        for ref in images:
            try:
                data = loaded.image_source.read(ref)
                sha = hashlib.sha256(data).hexdigest()
                if sha in source.cache:
                    result.cached += 1
                else:
                    source.regions(sha, decode_image(data, name=ref))
                    result.extracted += 1
            except ImageProblem as problem:
                result.unreadable[ref] = str(problem)
            except CheckpointError as exc:
                raise VlmbenchError(str(exc)) from None
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        source.release()
    return result
