"""The region proposal network (``rpn``): anchors, the shared head and the proposals it yields at test.

As in vqa-maskrcnn-benchmark, boxes use the "+1" pixel convention (a box from x1 to x2 is
``x2 - x1 + 1`` wide) when they are decoded, clipped (to ``[0, W - 1]``) and suppressed. Per level and
image: sigmoid, the top ``pre_nms_top_n`` by objectness, decoding against the anchors, clipping to the
(padded) image size, removal of boxes smaller than ``min_size``, NMS, the first ``post_nms_top_n``;
then, over all levels of an image, the top ``fpn_post_nms_top_n`` by objectness: the proposals.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import DetectorConfig

# Largest log-scale change a decoded box may get (Detectron's clip: boxes at most 1000/16 times larger).
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


def cell_anchors(stride: int, size: int, aspect_ratios: tuple[float, ...]) -> Tensor:
    """Detectron's ``generate_anchors`` for one FPN level: boxes of area ``size**2`` per aspect ratio,
    centred on the first ``stride x stride`` cell, widths rounded as Detectron rounds them."""
    base = float(stride)
    centre = (base - 1) / 2  # the centre of the box [0, 0, stride - 1, stride - 1]
    ratios = np.asarray(aspect_ratios, dtype=np.float64)
    widths = np.round(np.sqrt(base * base / ratios))
    heights = np.round(widths * ratios)
    scale = size / base
    widths, heights = widths * scale, heights * scale
    boxes = np.stack(
        [centre - 0.5 * (widths - 1), centre - 0.5 * (heights - 1),
         centre + 0.5 * (widths - 1), centre + 0.5 * (heights - 1)], axis=1,
    )  # fmt: skip
    return torch.from_numpy(boxes).float()


class CellAnchors(nn.Module):
    """The per-level cell anchors as buffers ``0``, ``1``, ... (the original's state-dict names)."""

    def __init__(self, anchors: list[Tensor]) -> None:
        super().__init__()
        for index, value in enumerate(anchors):
            self.register_buffer(str(index), value)

    def __getitem__(self, index: int) -> Tensor:
        return self._buffers[str(index)]

    def __len__(self) -> int:
        return len(self._buffers)


class AnchorGenerator(nn.Module):
    def __init__(self, config: DetectorConfig) -> None:
        super().__init__()
        self.strides = config.anchor_strides
        pairs = zip(self.strides, config.anchor_sizes, strict=True)
        self.cell_anchors = CellAnchors([cell_anchors(s, size, config.aspect_ratios) for s, size in pairs])

    def grid_anchors(self, level: int, height: int, width: int) -> Tensor:
        """Anchors of a ``height x width`` map, flat index ``(y * width + x) * A + a``."""
        stride, base = self.strides[level], self.cell_anchors[level]
        device = base.device
        shifts_x = torch.arange(0, width * stride, step=stride, dtype=torch.float32, device=device)
        shifts_y = torch.arange(0, height * stride, step=stride, dtype=torch.float32, device=device)
        shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
        shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
        shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
        return (shifts.view(-1, 1, 4) + base.view(1, -1, 4)).reshape(-1, 4)


class RPNHead(nn.Module):
    """3x3 convolution + ReLU shared over levels, then objectness logits (A) and box deltas (4A)."""

    def __init__(self, channels: int, anchors_per_location: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.cls_logits = nn.Conv2d(channels, anchors_per_location, kernel_size=1)
        self.bbox_pred = nn.Conv2d(channels, anchors_per_location * 4, kernel_size=1)

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        logits, deltas = [], []
        for feature in features:
            hidden = F.relu(self.conv(feature))
            logits.append(self.cls_logits(hidden))
            deltas.append(self.bbox_pred(hidden))
        return logits, deltas


def decode_boxes(deltas: Tensor, anchors: Tensor) -> Tensor:
    """Box deltas (dx, dy, dw, dh; weights 1) applied to anchors, "+1" convention, in the original's
    order of operations."""
    widths = anchors[:, 2] - anchors[:, 0] + 1
    heights = anchors[:, 3] - anchors[:, 1] + 1
    ctr_x = anchors[:, 0] + 0.5 * widths
    ctr_y = anchors[:, 1] + 0.5 * heights
    dw = torch.clamp(deltas[:, 2], max=BBOX_XFORM_CLIP)
    dh = torch.clamp(deltas[:, 3], max=BBOX_XFORM_CLIP)
    pred_ctr_x = deltas[:, 0] * widths + ctr_x
    pred_ctr_y = deltas[:, 1] * heights + ctr_y
    pred_w = torch.exp(dw) * widths
    pred_h = torch.exp(dh) * heights
    return torch.stack(
        [pred_ctr_x - 0.5 * pred_w, pred_ctr_y - 0.5 * pred_h,
         pred_ctr_x + 0.5 * pred_w - 1, pred_ctr_y + 0.5 * pred_h - 1], dim=1,
    )  # fmt: skip


def clip_boxes(boxes: Tensor, height: int, width: int) -> Tensor:
    """x into [0, width - 1], y into [0, height - 1]; empty boxes are kept."""
    x = boxes[:, 0::2].clamp(min=0, max=width - 1)
    y = boxes[:, 1::2].clamp(min=0, max=height - 1)
    return torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], dim=1)


def nms(boxes: Tensor, scores: Tensor, threshold: float) -> Tensor:
    """Indices kept by greedy NMS (a box goes when its IoU with a kept, higher-scoring box exceeds
    ``threshold``), by decreasing score. IoU in the "+1" convention: torchvision's kernel on boxes
    whose far corner moved by one pixel, the same arithmetic in another rounding order."""
    from torchvision.ops import nms as box_nms

    shifted = boxes + torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=boxes.dtype, device=boxes.device)
    return box_nms(shifted, scores, threshold)


def level_proposals(
    config: DetectorConfig, logits: Tensor, deltas: Tensor, anchors: Tensor, image_size: tuple[int, int]
) -> tuple[Tensor, Tensor]:
    """One image's proposals from one level: ``logits`` [A, H, W], ``deltas`` [4A, H, W]."""
    num_anchors, height, width = logits.shape
    objectness = logits.permute(1, 2, 0).reshape(-1).sigmoid()
    box_deltas = deltas.view(num_anchors, 4, height, width).permute(2, 3, 0, 1).reshape(-1, 4)
    top_n = min(config.pre_nms_top_n, objectness.numel())
    objectness, index = objectness.topk(top_n, sorted=True)
    boxes = clip_boxes(decode_boxes(box_deltas[index], anchors[index]), *image_size)
    sides = boxes[:, 2:] - boxes[:, :2] + 1
    large = ((sides[:, 0] >= config.rpn_min_size) & (sides[:, 1] >= config.rpn_min_size)).nonzero().squeeze(1)
    boxes, objectness = boxes[large], objectness[large]
    keep = nms(boxes, objectness, config.rpn_nms_thresh)[: config.post_nms_top_n]
    return boxes[keep], objectness[keep]


def image_proposals(config: DetectorConfig, per_level: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Concatenate one image's levels and keep the top ``fpn_post_nms_top_n`` by objectness."""
    boxes = torch.cat([b for b, _ in per_level])
    objectness = torch.cat([o for _, o in per_level])
    top_n = min(config.fpn_post_nms_top_n, objectness.numel())
    _, index = torch.topk(objectness, top_n, dim=0, sorted=True)
    return boxes[index], objectness[index]
