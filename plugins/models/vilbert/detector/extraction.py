"""From detector outputs to the regions ViLBERT reads: the post-processing of vilbert-multi-task's
``script/extract_features.py``, and an extractor that runs it image by image.

Per image: class probabilities are the softmax of the box head's logits; the RPN proposals (not the
regressed boxes) are divided by the resize scale; for every foreground class an NMS at 0.5 over those
boxes with that class's probabilities selects the boxes whose best surviving probability (above the
confidence threshold, 0 by default) becomes their ``max_conf``; the 100 proposals of highest
``max_conf`` give the features (fc6, post-ReLU) and boxes. ``num_boxes`` counts those
with a nonzero ``max_conf``; like the original's reader, ViLBERT uses all rows.

Each image runs on its own, padded to a multiple of 32 by itself. The original ran two images per
batch, padded both to the larger and clipped proposals to that padded size, so an image's boxes
depended on the image beside it; here they depend on the image alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .model import RegionDetector
from .preprocess import MAX_SIZE, MIN_SIZE, PreparedImage, pad_batch, prepare_image
from .rpn import nms

NUM_FEATURES = 100
CONFIDENCE_THRESHOLD = 0.0
EXTRACTION_NMS = 0.5


@dataclass
class Detections:
    """One image's regions as the original saved them (``features``, ``bbox``, ``num_boxes``, ...)."""

    features: Tensor  # [K, D] fc6 of the kept proposals
    boxes: Tensor  # [K, 4] (x1, y1, x2, y2) in original pixels, inclusive x2 ("+1" convention)
    num_boxes: int  # kept proposals with a nonzero max_conf
    cls_prob: Tensor  # [K, classes] softmax, background (column 0) included
    objects: Tensor  # the original's "objects" field, as it computed it (argmax over rows 1.., bg included)
    image_size: tuple[int, int]  # original (width, height)
    keep: Tensor  # [K] indices into the proposals
    max_conf: Tensor  # [R] per proposal


def select_regions(
    proposals: Tensor, class_logits: Tensor, fc6: Tensor, scale: float, image_size: tuple[int, int],
    num_features: int = NUM_FEATURES, confidence_threshold: float = CONFIDENCE_THRESHOLD,
    background: bool = False,
) -> Detections:  # fmt: skip
    """The original's ``_process_feature_extraction`` for one image."""
    probs = torch.softmax(class_logits, dim=-1)
    boxes = proposals / scale
    max_conf = torch.zeros(len(probs), dtype=probs.dtype, device=probs.device)
    first = 0 if background else 1  # column 0 is the background class
    for column in range(first, probs.shape[1]):
        scores = probs[:, column]
        keep = nms(boxes, scores, EXTRACTION_NMS)
        kept, best = scores[keep], max_conf[keep]
        max_conf[keep] = torch.where((kept > best) & (kept > confidence_threshold), kept, best)
    # The original's own call: its (unstable) sort orders equal max_conf values in a way a stable sort
    # does not reproduce, and equal values do occur (duplicate border-clipped proposals, saturated
    # probabilities).
    ordered, order = torch.sort(max_conf, descending=True)
    keep_boxes = order[:num_features]
    cls_prob = probs[keep_boxes]
    return Detections(
        features=fc6[keep_boxes],
        boxes=boxes[keep_boxes],
        num_boxes=int((ordered[:num_features] != 0).sum()),
        cls_prob=cls_prob,
        objects=torch.argmax(cls_prob[first:], dim=1),
        image_size=image_size,
        keep=keep_boxes,
        max_conf=max_conf,
    )


class RegionExtractor:
    """The detector with the original preprocessing and post-processing, one image at a time."""

    faithful = True

    def __init__(
        self, model: RegionDetector, device: str | torch.device = "cpu", min_size: int = MIN_SIZE,
        max_size: int = MAX_SIZE, num_features: int = NUM_FEATURES,
    ) -> None:  # fmt: skip
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.min_size, self.max_size = min_size, max_size
        self.num_features = num_features

    def prepare(self, image: Any) -> PreparedImage:
        return prepare_image(image, self.min_size, self.max_size)

    @torch.inference_mode()
    def detect_prepared(self, item: PreparedImage) -> Detections:
        batch, padded = pad_batch([item.pixels])
        # float32 convolutions, as the original ran (cuDNN would otherwise use TF32 on recent GPUs)
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            stages = self.model(batch.to(self.device), [padded])
        found = select_regions(
            stages.proposals[0], stages.class_logits[0], stages.fc6[0], item.scale, item.image_size,
            num_features=self.num_features,
        )  # fmt: skip
        return Detections(
            found.features.float().cpu(), found.boxes.float().cpu(), found.num_boxes, found.cls_prob.cpu(),
            found.objects.cpu(), found.image_size, found.keep.cpu(), found.max_conf.cpu(),
        )  # fmt: skip

    def detect(self, image: Any) -> Detections:
        return self.detect_prepared(self.prepare(image))
