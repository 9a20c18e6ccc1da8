"""The detector's ResNeXt body (``backbone.body``): stem, four stages of bottleneck blocks, frozen
batch norm. Module names are the original's, so its state dict loads as it is.

As in vqa-maskrcnn-benchmark: batch norm is frozen and has no epsilon
(``y = x * (w / sqrt(var)) + (b - mean * w / sqrt(var))``); stage i (0-based) has a bottleneck width of
``groups * width_per_group * 2**i`` and ``res2_out * 2**i`` output channels; the first block of stages
2-4 downsamples, in the 3x3 convolution unless ``stride_in_1x1``; a block has a projection shortcut
exactly when its input and output widths differ (so the first block of every stage, stage 1 included).
The fork declares ``RESNETS.RES5_DILATION`` but its blocks never read it; neither does this port.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import DetectorConfig


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine parameters, without an epsilon (the original's)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.ones(channels))
        self.register_buffer("bias", torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: Tensor) -> Tensor:
        # the original's order of operations, so that rounding matches
        scale = self.weight * self.running_var.rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)


class Stem(nn.Module):
    """7x7 stride-2 convolution, frozen batch norm, ReLU, 3x3 stride-2 max pooling."""

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, out_channels, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = FrozenBatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class Bottleneck(nn.Module):
    """1x1 -> grouped 3x3 -> 1x1, each with frozen batch norm; ReLU after the residual sum."""

    def __init__(
        self, in_channels: int, width: int, out_channels: int, groups: int, stride: int,
        stride_in_1x1: bool,
    ) -> None:  # fmt: skip
        super().__init__()
        self.downsample: nn.Module | None = None
        if in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                FrozenBatchNorm2d(out_channels),
            )
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=1, stride=stride_1x1, bias=False)
        self.bn1 = FrozenBatchNorm2d(width)
        self.conv2 = nn.Conv2d(
            width, width, kernel_size=3, stride=stride_3x3, padding=1, groups=groups, bias=False,
        )  # fmt: skip
        self.bn2 = FrozenBatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, kernel_size=1, bias=False)
        self.bn3 = FrozenBatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + identity)


class ResNeXtBody(nn.Module):
    """``stem``, ``layer1``..``layer4``; ``forward`` returns the stem output and C2..C5."""

    def __init__(self, config: DetectorConfig) -> None:
        super().__init__()
        self.stem = Stem(config.stem_out_channels)
        in_channels = config.stem_out_channels
        width2 = config.num_groups * config.width_per_group
        for index, blocks in enumerate(config.stage_blocks):
            factor = 2**index
            out_channels = config.res2_out_channels * factor
            stride = 1 if index == 0 else 2
            stage = []
            for _ in range(blocks):
                block = Bottleneck(
                    in_channels, width2 * factor, out_channels, config.num_groups, stride,
                    config.stride_in_1x1,
                )  # fmt: skip
                stage.append(block)
                stride, in_channels = 1, out_channels
            self.add_module(f"layer{index + 1}", nn.Sequential(*stage))

    @property
    def stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        stem = x = self.stem(x)
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return stem, outputs
