"""Region features for ViLBERT: the input format, precomputed-feature readers and an image extractor.

ViLBERT reads up to 101 regions per image: the mean of the detector's region features first, with box
``[0, 0, 1, 1, 1]``, then the detector regions (at most 100), each with the box
``(x1/W, y1/H, x2/W, y2/H, area/(W*H))`` and a 1/0 mask. The released checkpoints were trained on 2048-d
``fc6`` features of a ResNeXt-152 Faster R-CNN trained on Visual Genome (maskrcnn-benchmark). Anything
else is an approximation, and every extractor here says which one it is through ``label`` so that
results can record it.
"""

from __future__ import annotations

import codecs
import io
import pickle
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from vlmbench.api import ImageProblem, SampleError, confined_path

MAX_REGIONS = 101  # 100 detector regions + the mean feature
FAITHFUL_LABEL = "faithful: Visual Genome ResNeXt-152 Faster R-CNN fc6 region features"
UNKNOWN_SOURCE_LABEL = "precomputed region features (extractor not recorded)"


@dataclass
class RegionFeatures:
    """One image's ViLBERT regions (row 0 is the mean feature), unpadded."""

    features: Tensor  # [N, D] float32
    boxes: Tensor  # [N, 5] float32, normalised (x1, y1, x2, y2, area)
    image_size: tuple[int, int]  # (width, height) in pixels
    source: str  # provenance label of the extractor

    @property
    def num_regions(self) -> int:
        return int(self.features.shape[0])


@dataclass
class RegionBatch:
    """Padded batch, named after the original forward arguments."""

    input_imgs: Tensor  # [B, N, D]
    image_loc: Tensor  # [B, N, 5]
    image_attention_mask: Tensor  # [B, N] long

    def to(self, device: str | torch.device) -> RegionBatch:
        return RegionBatch(
            self.input_imgs.to(device), self.image_loc.to(device), self.image_attention_mask.to(device)
        )


def _float_tensor(values: Any) -> Tensor:
    if isinstance(values, Tensor):
        return values.detach().to("cpu", torch.float32)
    return torch.as_tensor(np.asarray(values, dtype=np.float32))


def regions_from_detections(
    features: Any,
    boxes: Any,
    image_width: float,
    image_height: float,
    source: str,
    max_regions: int = MAX_REGIONS,
) -> RegionFeatures:
    """Build ViLBERT regions from detector output: ``features`` [K, D], pixel boxes ``(x1, y1, x2, y2)`` [K, 4].

    As in the original feature reader: the mean of all K features is prepended with box [0, 0, 1, 1, 1];
    the area is computed on pixel boxes and divided by W*H; coordinates are divided by W and H; the
    sequence is then cut to ``max_regions``.
    """
    feats, pixel = _float_tensor(features), _float_tensor(boxes).reshape(-1, 4)
    if feats.ndim != 2:
        raise ValueError(f"region features must be [regions, dim], got shape {tuple(feats.shape)}")
    if feats.shape[0] != pixel.shape[0]:
        raise ValueError(f"{feats.shape[0]} region features but {pixel.shape[0]} boxes")
    if feats.shape[0] == 0:
        raise ValueError("no regions: the detector returned no boxes")
    width, height = float(image_width), float(image_height)
    if width <= 0 or height <= 0:
        raise ValueError(f"invalid image size {image_width}x{image_height}")
    area = (pixel[:, 3] - pixel[:, 1]) * (pixel[:, 2] - pixel[:, 0]) / (width * height)
    scale = torch.tensor([width, height, width, height])
    locations = torch.cat([pixel / scale, area[:, None]], dim=1)
    mean = feats.sum(0, keepdim=True) / feats.shape[0]
    whole = torch.tensor([[0.0, 0.0, 1.0, 1.0, 1.0]])
    return RegionFeatures(
        features=torch.cat([mean, feats])[:max_regions],
        boxes=torch.cat([whole, locations])[:max_regions],
        image_size=(round(width), round(height)),
        source=source,
    )


def collate_regions(items: Sequence[RegionFeatures], pad_to: int | None = None) -> RegionBatch:
    """Stack and zero-pad; ``pad_to=MAX_REGIONS`` reproduces the original fixed-size batches.

    Padding length does not change the answers: padded regions get mask 0, i.e. an additive -10000.
    """
    if not items:
        raise ValueError("no images to collate")
    dims = {item.features.shape[1] for item in items}
    if len(dims) != 1:
        raise ValueError(f"region features of different sizes in one batch: {sorted(dims)}")
    length = max(item.num_regions for item in items)
    if pad_to is not None:
        if pad_to < length:
            raise ValueError(f"pad_to={pad_to} is shorter than the {length} regions of an image")
        length = pad_to
    batch = len(items)
    feats = torch.zeros(batch, length, dims.pop())
    boxes = torch.zeros(batch, length, 5)
    mask = torch.zeros(batch, length, dtype=torch.long)
    for row, item in enumerate(items):
        n = item.num_regions
        feats[row, :n] = item.features
        boxes[row, :n] = item.boxes
        mask[row, :n] = 1
    return RegionBatch(feats, boxes, mask)


# -- interfaces ------------------------------------------------------------------------------------


@runtime_checkable
class RegionFeatureExtractor(Protocol):
    """Computes ViLBERT regions from decoded images."""

    label: str  # provenance, e.g. "approximation: ..." or FAITHFUL_LABEL
    faithful: bool  # True only for the original Visual Genome detector's features

    def extract(self, images: Sequence[Any]) -> list[RegionFeatures]: ...


@runtime_checkable
class RegionFeatureSource(Protocol):
    """Looks up precomputed regions by image id."""

    label: str

    def __contains__(self, image_id: object) -> bool: ...

    def __getitem__(self, image_id: str) -> RegionFeatures: ...


# -- safe reading of pickled feature files ---------------------------------------------------------

_RECONSTRUCT = np.ndarray((0,)).__reduce__()[0]
_SCALAR = np.float32(0).__reduce__()[0]
# The only globals numpy arrays, dicts of arrays and scalars need; anything else in a pickle is refused.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.multiarray", "scalar"): _SCALAR,
    ("numpy._core.multiarray", "scalar"): _SCALAR,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # bytes in protocol-2 pickles
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name} from a feature file: only numpy arrays are allowed"
            ) from None


def safe_unpickle(data: bytes, encoding: str = "latin1") -> Any:
    """Unpickle plain containers of numpy arrays without running arbitrary code.

    ``encoding`` only matters for Python 2 pickles; latin1 is what numpy arrays from Python 2 need.
    """
    return _ArrayUnpickler(io.BytesIO(data), encoding=encoding).load()


def _read_object_npy(path: Path) -> Any:
    """Read an ``np.save``-d object (the original extractor saves a dict) with the restricted unpickler."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            _, _, dtype = np.lib.format.read_array_header_1_0(handle)
        else:
            _, _, dtype = np.lib.format.read_array_header_2_0(handle)
        if not dtype.hasobject:
            raise ValueError(f"{path}: expected a saved dict (object array), got an array of {dtype}")
        obj = safe_unpickle(handle.read())
    return obj.item() if isinstance(obj, np.ndarray) and obj.shape == () else obj


def _record_to_regions(
    record: dict[str, Any], where: str, default_source: str, max_regions: int
) -> RegionFeatures:
    """Map the key spellings of the original extractor / LMDB and of our .npz files."""

    def first(*names: str) -> Any:
        for name in names:
            if name in record and record[name] is not None:
                return record[name]
        raise KeyError(f"{where}: none of {names} present (keys: {sorted(record)})")

    boxes = np.asarray(first("boxes", "bbox"), dtype=np.float32).reshape(-1, 4)
    if boxes.shape[0] == 0:
        raise ValueError(f"{where}: no regions stored")
    features = np.asarray(first("features"), dtype=np.float32).reshape(boxes.shape[0], -1)
    if "image_size" in record:
        width, height = (float(v) for v in np.asarray(record["image_size"]).reshape(-1)[:2])
    else:
        width = float(np.asarray(first("image_width", "image_w")))
        height = float(np.asarray(first("image_height", "image_h")))
    source = record.get("source")
    source = str(np.asarray(source).item()) if source is not None else default_source
    return regions_from_detections(features, boxes, width, height, source, max_regions)


class NumpyFeatureReader:
    """Per-image files in a folder: ``<image_id>.npz`` or ``<image_id>.npy``.

    ``.npz``: arrays ``features`` [K, D], ``boxes`` [K, 4] (pixel x1, y1, x2, y2), ``image_width`` and
    ``image_height`` (or ``image_size`` = (W, H)), optional ``source`` (provenance string).
    ``.npy``: the dict the original ``extract_features.py`` saves (``features``, ``bbox``, ``image_width``,
    ``image_height``, ...), read without executing pickled code.
    """

    def __init__(self, folder: str | Path, label: str | None = None, max_regions: int = MAX_REGIONS) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"feature folder not found: {self.folder}")
        self.label = label or UNKNOWN_SOURCE_LABEL
        self.max_regions = max_regions

    def _path(self, image_id: object) -> Path | None:
        for suffix in (".npz", ".npy"):
            try:
                # Ids come from task files: one such as ../x or /x must not reach outside the folder.
                path = confined_path(self.folder, f"{image_id}{suffix}")
            except ImageProblem:
                return None
            if path.is_file():
                return path
        return None

    def __contains__(self, image_id: object) -> bool:
        return self._path(image_id) is not None

    def __getitem__(self, image_id: str) -> RegionFeatures:
        path = self._path(image_id)
        if path is None:
            raise KeyError(f"no features for image {image_id!r} in {self.folder} (.npz or .npy)")
        try:
            if path.suffix == ".npz":
                with np.load(path, allow_pickle=False) as data:
                    record = {key: data[key] for key in data.files}
            else:
                record = _read_object_npy(path)
                if not isinstance(record, dict):
                    raise ValueError(f"{path}: expected a dict of arrays, got {type(record).__name__}")
            return _record_to_regions(record, str(path), self.label, self.max_regions)
        except (pickle.UnpicklingError, ValueError, KeyError, EOFError, OSError, zipfile.BadZipFile) as exc:
            # A broken or hostile feature file is the user's to replace: say which, without a traceback.
            detail = str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)
            detail = (detail.splitlines() or [type(exc).__name__])[0].removeprefix(f"{path}: ")
            cannot = "" if isinstance(exc, pickle.UnpicklingError) else "cannot read "  # refusals say so
            raise SampleError("unreadable_features", f"{cannot}region features {path}: {detail}") from None


class LmdbFeatureReader:
    """The original LMDB layout: key ``keys`` -> pickled list of image ids (bytes); each id -> pickled dict
    with ``image_id``, ``image_h``, ``image_w``, ``num_boxes``, ``boxes`` [K, 4] (pixels) and ``features``.

    Records are unpickled with an allow-list that admits only numpy arrays and plain containers.
    """

    def __init__(self, path: str | Path, label: str | None = None, max_regions: int = MAX_REGIONS) -> None:
        try:
            import lmdb
        except ImportError as exc:
            raise ImportError(
                "reading ViLBERT LMDB feature files needs the 'lmdb' package (pip install lmdb); "
                "alternatively convert them to per-image .npz files"
            ) from exc
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"LMDB feature store not found: {self.path}")
        self.label = label or UNKNOWN_SOURCE_LABEL
        self.max_regions = max_regions
        self._env = lmdb.open(
            str(self.path),
            subdir=self.path.is_dir(),
            readonly=True,
            lock=False,
            readahead=False,
            meminit=False,
        )
        with self._env.begin(write=False) as txn:
            raw = txn.get(b"keys")
        if raw is None:
            raise ValueError(f"{self.path}: no 'keys' entry; not a ViLBERT feature LMDB")
        self._ids = {bytes(k) if not isinstance(k, str) else k.encode() for k in safe_unpickle(raw)}

    def __len__(self) -> int:
        return len(self._ids)

    def keys(self) -> list[str]:
        return sorted(k.decode() for k in self._ids)

    def __contains__(self, image_id: object) -> bool:
        return str(image_id).encode() in self._ids

    def __getitem__(self, image_id: str) -> RegionFeatures:
        key = str(image_id).encode()
        if key not in self._ids:
            raise KeyError(f"no features for image {image_id!r} in {self.path}")
        with self._env.begin(write=False) as txn:
            record = safe_unpickle(txn.get(key))
        return _record_to_regions(record, f"{self.path}[{image_id}]", self.label, self.max_regions)

    def close(self) -> None:
        self._env.close()


def save_regions_npz(
    path: str | Path, features: Any, boxes: Any, image_width: int, image_height: int, source: str
) -> Path:
    """Write raw detector output in the ``.npz`` layout ``NumpyFeatureReader`` reads (a feature cache)."""
    path = Path(path)
    np.savez(
        path,
        features=np.asarray(features, dtype=np.float32),
        boxes=np.asarray(boxes, dtype=np.float32),
        image_width=np.int64(image_width),
        image_height=np.int64(image_height),
        source=np.str_(source),
    )
    return path
