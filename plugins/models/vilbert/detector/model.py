"""The assembled detector (the original ``GeneralizedRCNN`` at test time, as the feature extraction
ran it), with every intermediate stage returned so that each can be compared with the original's."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .backbone import ResNeXtBody
from .box_head import BoxHead, pool
from .config import DetectorConfig
from .fpn import FPN
from .rpn import AnchorGenerator, RPNHead, image_proposals, level_proposals


@dataclass
class DetectorStages:
    """What one forward pass computes; per-image lists follow the batch order."""

    stem: Tensor
    body: list[Tensor]  # C2..C5
    fpn: list[Tensor]  # P2..P6
    rpn_objectness_logits: list[Tensor]  # per level [N, A, H, W]
    rpn_box_deltas: list[Tensor]  # per level [N, 4A, H, W]
    proposals: list[Tensor]  # per image [R, 4], padded-input pixels, by decreasing objectness
    proposals_objectness: list[Tensor]  # per image [R]
    proposal_fpn_level: list[Tensor]  # per image [R], 0 = P2
    pooled: list[Tensor]  # per image [R, C, 7, 7]
    fc6: list[Tensor]  # per image [R, D], post-ReLU
    fc7: list[Tensor]
    class_logits: list[Tensor]  # per image [R, classes]
    bbox_deltas: list[Tensor]  # per image [R, 4 * classes]


class RegionDetector(nn.Module):
    """Backbone, FPN, RPN and box head under the original's module names (810 state-dict entries at
    the released config)."""

    def __init__(self, config: DetectorConfig) -> None:
        super().__init__()
        self.config = config
        # Containers that only carry the original's names (``backbone.body.stem...``, ``rpn.head...``),
        # which the released weights' keys and the parity stages follow.
        self.backbone = nn.ModuleDict({"body": ResNeXtBody(config), "fpn": FPN(config)})
        head = RPNHead(config.out_channels, len(config.aspect_ratios))
        self.rpn = nn.ModuleDict({"anchor_generator": AnchorGenerator(config), "head": head})
        self.roi_heads = nn.ModuleDict({"box": BoxHead(config)})

    @torch.inference_mode()
    def forward(self, images: Tensor, image_sizes: list[tuple[int, int]]) -> DetectorStages:
        """``images`` [N, 3, H, W] (preprocessed, zero-padded to a multiple of 32); ``image_sizes`` the
        (height, width) boxes are clipped to, per image (the original passed the padded batch size)."""
        config = self.config
        stem, body = self.backbone.body(images)
        features = self.backbone.fpn(body)
        logits, deltas = self.rpn.head(features)
        anchors = [
            self.rpn.anchor_generator.grid_anchors(level, *f.shape[-2:]) for level, f in enumerate(features)
        ]
        proposals, objectness = [], []
        for i, size in enumerate(image_sizes):
            per_level = [
                level_proposals(config, logits[level][i], deltas[level][i], anchors[level], size)
                for level in range(len(features))
            ]
            boxes, scores = image_proposals(config, per_level)
            proposals.append(boxes)
            objectness.append(scores)
        pooled, levels = pool(features[:4], proposals, config)
        fc6, fc7 = self.roi_heads.box.feature_extractor(pooled)
        class_logits, bbox_deltas = self.roi_heads.box.predictor(fc7)
        counts = [len(p) for p in proposals]
        return DetectorStages(
            stem, body, features, logits, deltas, proposals, objectness,
            list(levels.split(counts)), list(pooled.split(counts)), list(fc6.split(counts)),
            list(fc7.split(counts)), list(class_logits.split(counts)), list(bbox_deltas.split(counts)),
        )  # fmt: skip
