"""Region features kept on disk, keyed by image content and detector identity.

The original pipeline extracted features once into an LMDB; here each image's detections are one
``.npz`` file ``<root>/<detector key>/<sha256[:2]>/<sha256>.npz``, where the detector key is a digest of
everything the features depend on (the weights' sha256, the resolved config, the extraction settings
and the port's version) and ``sha256`` that of the image file's bytes. A file is written to a temporary
name and renamed into place, so a run or an extraction killed at any moment leaves only whole files
behind, and the next one extracts what is missing and reuses the rest. The temporary file a killed
writer leaves is removed when the cache is next opened (its name carries the writer's process id, so a
live writer's file is left alone).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from vlmbench.api import cache_dir, json_digest, write_json

from .extraction import Detections

#: Bump when a change of the port changes features: old cache entries then stop matching.
PORT_VERSION = "1"
CACHE_FOLDER = "vilbert_region_features"
TEMPORARY = ".tmp.npz"  # suffix of a file being written, after the writer's process id


def default_root() -> Path:
    return cache_dir() / CACHE_FOLDER


class FeatureCache:
    """Detections of one detector, one file per image content hash."""

    def __init__(self, identity: dict[str, Any], root: str | Path | None = None) -> None:
        self.identity = {**identity, "port_version": PORT_VERSION}
        self.key = json_digest(self.identity)
        self.folder = Path(root).expanduser() if root else default_root()
        self.folder = self.folder / self.key
        self.remove_abandoned()

    def remove_abandoned(self) -> None:
        """Delete temporary files of writers that are no longer running."""
        for tmp in self.folder.glob(f"??/.*{TEMPORARY}"):
            writer = tmp.name[: -len(TEMPORARY)].rpartition(".")[2]
            if writer.isdigit() and not _running(int(writer)):
                tmp.unlink(missing_ok=True)

    def path(self, image_sha256: str) -> Path:
        return self.folder / image_sha256[:2] / f"{image_sha256}.npz"

    def __contains__(self, image_sha256: object) -> bool:
        return isinstance(image_sha256, str) and self.path(image_sha256).is_file()

    def get(self, image_sha256: str) -> dict[str, Any] | None:
        """``features``, ``boxes``, ``num_boxes``, ``image_width``, ``image_height``, or None when absent
        or unreadable (a damaged entry is extracted again)."""
        path = self.path(image_sha256)
        try:
            with np.load(path, allow_pickle=False) as data:
                return {key: data[key] for key in data.files}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
            return None

    def put(self, image_sha256: str, found: Detections) -> Path:
        """Write one image's detections atomically."""
        path = self.path(image_sha256)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not (self.folder / "detector.json").is_file():
            write_json(self.folder / "detector.json", self.identity)  # what the entries were made by
        tmp = path.with_name(f".{path.stem}.{os.getpid()}{TEMPORARY}")
        width, height = found.image_size
        np.savez(
            tmp,
            features=found.features.numpy().astype(np.float32),
            boxes=found.boxes.numpy().astype(np.float32),
            num_boxes=np.int64(found.num_boxes),
            image_width=np.int64(width),
            image_height=np.int64(height),
        )
        os.replace(tmp, path)
        return path


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
