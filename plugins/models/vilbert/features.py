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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from vlmbench.api import ImageProblem, SampleError, confined_path

FEATURE_SIZE = 2048
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


# -- an extractor that runs on images with maintained libraries ------------------------------------

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# torchvision classifiers whose last stage (C5) has 2048 channels, the width ViLBERT expects
_C5_2048_ARCHS = (
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "wide_resnet50_2",
)


def grid_boxes(width: int, height: int, columns: int, rows: int) -> Tensor:
    """Pixel boxes (x1, y1, x2, y2) of a rows x columns grid tiling the image, row-major."""
    xs = torch.linspace(0, width, columns + 1)
    ys = torch.linspace(0, height, rows + 1)
    cells = [[xs[c], ys[r], xs[c + 1], ys[r + 1]] for r in range(rows) for c in range(columns)]
    return torch.tensor(cells, dtype=torch.float32)


def _read_weights(path: str | Path) -> dict[str, Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict")
    return state


BoxProposer = Callable[[Any], Tensor]  # PIL image -> pixel boxes [K, 4]


def approximation_label(arch: str, box_label: str, random_weights: bool = False) -> str:
    """The provenance label of ``ResNetRegionExtractor`` features (results record it verbatim)."""
    weights_note = ", RANDOM weights" if random_weights else ""
    return (
        f"approximation: torchvision {arch} C5 features RoIAlign-pooled over {box_label}{weights_note}, "
        "not the VG X-152 detector"
    )


def grid_label(grid: tuple[int, int]) -> str:
    """How ``ResNetRegionExtractor`` describes its grid boxes: ``"<columns>x<rows> grid cells"``."""
    return f"{grid[0]}x{grid[1]} grid cells"


@dataclass
class PreparedImage:
    """An image resized and normalised for the backbone, with its boxes in original pixels."""

    pixels: Tensor  # [3, h, w] float32, ImageNet-normalised
    boxes: Tensor  # [K, 4] pixel boxes (x1, y1, x2, y2) of the original image
    image_size: tuple[int, int]  # original (width, height)
    scale: float  # resized / original


def resize_scale(width: int, height: int, min_size: int, max_size: int) -> float:
    """Shorter side to ``min_size`` unless the longer side would exceed ``max_size`` (detectron rule)."""
    scale = min_size / min(width, height)
    if round(scale * max(width, height)) > max_size:
        scale = max_size / max(width, height)
    return scale


def prepare_image(
    image: Any, min_size: int = 600, max_size: int = 1000, grid: tuple[int, int] = (10, 10)
) -> PreparedImage:
    """Resize (``resize_scale``), ImageNet-normalise and tile with ``grid`` (columns, rows) boxes.

    Needs only the image, so it runs in DataLoader workers; the backbone runs later on the device.
    """
    from torchvision.transforms.functional import normalize, pil_to_tensor, resize

    image = image.convert("RGB")
    width, height = image.size
    scale = resize_scale(width, height, min_size, max_size)
    size = [max(1, round(height * scale)), max(1, round(width * scale))]
    pixels = pil_to_tensor(image).float().div(255.0)
    pixels = normalize(resize(pixels, size, antialias=True), _IMAGENET_MEAN, _IMAGENET_STD)
    return PreparedImage(pixels, grid_boxes(width, height, *grid), (width, height), scale)


class ResNetRegionExtractor:
    """Approximate ViLBERT regions: RoIAlign-pooled C5 features of a torchvision ResNet.

    Boxes come from a fixed grid (default 10x10 = 100 cells, the original region budget) or from a
    ``box_proposer`` (for example ``TorchvisionDetectorBoxes``). Features are the mean of a 2x2 RoIAlign
    over the post-ReLU C5 map, so they are non-negative 2048-d vectors like the original ``fc6``, but from
    an ImageNet classifier, not the Visual Genome detector: the label says so.

    ``weights``: local torchvision state dict (``.pth``/``.safetensors``). Random weights only with
    ``allow_random_weights=True`` (tests).
    """

    faithful = False

    def __init__(
        self,
        weights: str | Path | None = None,
        arch: str = "resnet152",
        grid: tuple[int, int] = (10, 10),
        min_size: int = 600,
        max_size: int = 1000,
        box_proposer: BoxProposer | None = None,
        box_label: str | None = None,
        device: str | torch.device = "cpu",
        allow_random_weights: bool = False,
    ) -> None:
        import torchvision

        if arch not in _C5_2048_ARCHS:
            raise ValueError(f"arch must be one of {_C5_2048_ARCHS} (2048-channel C5), got {arch!r}")
        if weights is None and not allow_random_weights:
            raise ValueError(
                f"ResNetRegionExtractor needs local {arch} weights (a torchvision state dict file); "
                "random weights are for tests only (allow_random_weights=True)"
            )
        net = getattr(torchvision.models, arch)(weights=None)
        if weights is not None:
            state = _read_weights(weights)
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}  # classifier unused
            missing, unexpected = net.load_state_dict(state, strict=False)
            missing = [k for k in missing if not k.startswith("fc.")]
            if missing or unexpected:
                raise ValueError(
                    f"{weights} does not fit torchvision {arch}: missing {missing[:5]}, unexpected {unexpected[:5]}"
                )
        self.body = torch.nn.Sequential(
            net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4
        ).to(device).eval()  # fmt: skip
        self.device = torch.device(device)
        self.arch = arch
        self.grid = grid
        self.min_size, self.max_size = min_size, max_size
        self.box_proposer = box_proposer
        if box_label is None:
            box_label = (
                grid_label(grid) if box_proposer is None else getattr(box_proposer, "label", "proposed boxes")
            )
        self.label = approximation_label(arch, box_label, random_weights=weights is None)

    def prepare(self, image: Any) -> PreparedImage:
        """Preprocess one image; without a ``box_proposer`` this is CPU-only work, safe in a DataLoader worker."""
        prepared = prepare_image(image, self.min_size, self.max_size, self.grid)
        if self.box_proposer is not None:
            boxes = torch.as_tensor(self.box_proposer(image.convert("RGB")), dtype=torch.float32)
            boxes = boxes.reshape(-1, 4)
            if boxes.shape[0] > 0:
                prepared.boxes = boxes
            else:
                width, height = prepared.image_size
                prepared.boxes = torch.tensor([[0.0, 0.0, float(width), float(height)]])
        return prepared

    @torch.inference_mode()
    def extract_prepared(self, items: Sequence[PreparedImage]) -> list[RegionFeatures]:
        """Run the backbone on prepared images and pool one feature per box."""
        from torchvision.ops import roi_align

        out: list[RegionFeatures] = []
        for item in items:
            c5 = self.body(item.pixels.unsqueeze(0).to(self.device))
            # boxes are in original pixels; C5 of the resized image has stride 32
            pooled = roi_align(
                c5, [item.boxes.to(self.device)], output_size=(2, 2), spatial_scale=item.scale / 32.0,
                sampling_ratio=2, aligned=True,
            )  # fmt: skip
            feats = pooled.mean(dim=(2, 3)).float().cpu()
            width, height = item.image_size
            out.append(regions_from_detections(feats, item.boxes, width, height, self.label))
        return out

    def extract(self, images: Sequence[Any]) -> list[RegionFeatures]:
        return self.extract_prepared([self.prepare(image) for image in images])


class TorchvisionDetectorBoxes:
    """Box proposer from a torchvision Faster R-CNN with local weights (COCO classes, not Visual Genome).

    Keeps up to ``max_boxes`` detections above ``score_threshold`` after the detector's own per-class NMS
    (0.5 IoU by default, as in the original feature extraction).
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        arch: str = "fasterrcnn_resnet50_fpn_v2",
        max_boxes: int = 100,
        score_threshold: float = 0.0,
        min_size: int = 800,
        max_size: int = 1333,
        device: str | torch.device = "cpu",
        allow_random_weights: bool = False,
        num_classes: int = 91,
    ) -> None:
        import torchvision

        if weights is None and not allow_random_weights:
            raise ValueError(
                f"TorchvisionDetectorBoxes needs local {arch} weights; random weights are for tests only"
            )
        builder = getattr(torchvision.models.detection, arch)
        self.model = builder(
            weights=None, weights_backbone=None, num_classes=num_classes, min_size=min_size, max_size=max_size,
            box_score_thresh=score_threshold, box_detections_per_img=max_boxes, box_nms_thresh=0.5,
        )  # fmt: skip
        if weights is not None:
            self.model.load_state_dict(_read_weights(weights), strict=True)
        self.model = self.model.to(device).eval()
        self.device = torch.device(device)
        self.label = f"torchvision {arch} boxes" + ("" if weights is not None else " (RANDOM weights)")

    @torch.inference_mode()
    def __call__(self, image: Any) -> Tensor:
        from torchvision.transforms.functional import pil_to_tensor

        pixels = pil_to_tensor(image.convert("RGB")).float().div(255.0).to(self.device)
        detections = self.model([pixels])[0]
        return detections["boxes"].float().cpu()
