"""Grid region features: an approximation of ViLBERT's detector features with maintained libraries.

The original features come from a Visual Genome ResNeXt-152 Faster R-CNN that no maintained library
ships. This extractor runs a torchvision ResNet (C5, 2048 channels) over the image and pools it on a
grid of cells (or on boxes from a torchvision detector); results are labelled an approximation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .features import RegionFeatures, regions_from_detections

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
