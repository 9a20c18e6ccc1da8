"""The box head (``roi_heads.box``): FPN level of each proposal, ROIAlign, fc6/fc7 and the classifier.

As in vqa-maskrcnn-benchmark: a proposal of "+1" area ``A`` is pooled from level
``clamp(floor(4 + log2(sqrt(A) / 224 + 1e-6)), 2, 5)`` (P6 is never pooled); ROIAlign is the legacy
kind (``torchvision.ops.roi_align(aligned=False)``: no half-pixel shift, sizes at least one cell) with
a fixed sampling ratio; the pooled [C, 7, 7] map is flattened channel-major; ``fc6`` and ``fc7`` are
each followed by a ReLU, and the extraction's "fc6" feature is taken after its ReLU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import DetectorConfig

CANONICAL_SCALE = 224
CANONICAL_LEVEL = 4


def fpn_levels(boxes: Tensor, scales: tuple[float, ...]) -> Tensor:
    """0-based index into ``scales`` (0 = P2) of each box, by the FPN paper's rule."""
    k_min = -torch.log2(torch.tensor(scales[0], dtype=torch.float32)).item()
    k_max = -torch.log2(torch.tensor(scales[-1], dtype=torch.float32)).item()
    area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    levels = torch.floor(CANONICAL_LEVEL + torch.log2(torch.sqrt(area) / CANONICAL_SCALE + 1e-6))
    return torch.clamp(levels, min=k_min, max=k_max).to(torch.int64) - int(k_min)


def pool(features: list[Tensor], boxes: list[Tensor], config: DetectorConfig) -> tuple[Tensor, Tensor]:
    """ROIAlign of every box of every image from its level: ([R, C, 7, 7], levels [R])."""
    from torchvision.ops import roi_align

    rois = torch.cat(
        [torch.cat([torch.full((len(b), 1), i, dtype=b.dtype, device=b.device), b], dim=1)
         for i, b in enumerate(boxes)]
    )  # fmt: skip
    levels = fpn_levels(rois[:, 1:], config.pooler_scales)
    size = config.pooler_resolution
    out = rois.new_zeros((len(rois), features[0].shape[1], size, size), dtype=features[0].dtype)
    for level, scale in enumerate(config.pooler_scales):
        index = torch.nonzero(levels == level).squeeze(1)
        if len(index):
            out[index] = roi_align(
                features[level], rois[index], output_size=(size, size), spatial_scale=scale,
                sampling_ratio=config.pooler_sampling_ratio, aligned=False,
            )  # fmt: skip
    return out, levels


class FeatureExtractor(nn.Module):
    """``fc6`` and ``fc7`` (FPN2MLPFeatureExtractor): both post-ReLU."""

    def __init__(self, config: DetectorConfig) -> None:
        super().__init__()
        size = config.out_channels * config.pooler_resolution**2
        self.fc6 = nn.Linear(size, config.mlp_head_dim)
        self.fc7 = nn.Linear(config.mlp_head_dim, config.mlp_head_dim)

    def forward(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        fc6 = F.relu(self.fc6(pooled.reshape(pooled.shape[0], -1)))
        return fc6, F.relu(self.fc7(fc6))


class Predictor(nn.Module):
    """Class logits (background is class 0) and class-specific box deltas (FPNPredictor)."""

    def __init__(self, config: DetectorConfig) -> None:
        super().__init__()
        self.cls_score = nn.Linear(config.mlp_head_dim, config.num_classes)
        self.bbox_pred = nn.Linear(config.mlp_head_dim, config.num_classes * 4)

    def forward(self, fc7: Tensor) -> tuple[Tensor, Tensor]:
        return self.cls_score(fc7), self.bbox_pred(fc7)


class BoxHead(nn.Module):
    def __init__(self, config: DetectorConfig) -> None:
        super().__init__()
        self.feature_extractor = FeatureExtractor(config)
        self.predictor = Predictor(config)
