"""The feature pyramid (``backbone.fpn``): P2..P5 from C2..C5, and P6.

As in vqa-maskrcnn-benchmark: 1x1 lateral convolutions ``fpn_inner{1..4}`` and 3x3 output convolutions
``fpn_layer{1..4}``, all with bias, no normalisation and no ReLU; the top-down path upsamples by a fixed
factor of two (nearest), which is why inputs are padded to a multiple of 32; P6 is a stride-2
subsampling of P5 (``max_pool2d`` with kernel 1), so an odd P5 gives ``ceil(n / 2)`` rows.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .config import DetectorConfig


class FPN(nn.Module):
    def __init__(self, config: DetectorConfig) -> None:
        super().__init__()
        out = config.out_channels
        for level in range(1, 5):
            in_channels = config.res2_out_channels * 2 ** (level - 1)
            self.add_module(f"fpn_inner{level}", nn.Conv2d(in_channels, out, kernel_size=1))
            self.add_module(f"fpn_layer{level}", nn.Conv2d(out, out, kernel_size=3, padding=1))

    def forward(self, body: list[Tensor]) -> list[Tensor]:
        """[C2, C3, C4, C5] -> [P2, P3, P4, P5, P6]."""
        last = self.fpn_inner4(body[3])
        results = [self.fpn_layer4(last)]
        for level in (3, 2, 1):
            lateral = getattr(self, f"fpn_inner{level}")(body[level - 1])
            last = lateral + F.interpolate(last, scale_factor=2, mode="nearest")
            results.insert(0, getattr(self, f"fpn_layer{level}")(last))
        results.append(F.max_pool2d(results[-1], kernel_size=1, stride=2, padding=0))
        return results
