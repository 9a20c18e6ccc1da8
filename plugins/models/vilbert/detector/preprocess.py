"""Images as the original feature extraction fed them to the detector.

``script/extract_features.py`` of vilbert-multi-task: the decoded pixels as float32, a greyscale image
repeated to three channels, RGB turned to BGR, the BGR means subtracted (no division by a standard
deviation), then the mean-subtracted float image resized with OpenCV's bilinear ``cv2.resize`` so that
the shorter side is 800 unless the longer would exceed 1333, and zero-padded (zero is the mean colour)
at the bottom and right to a multiple of 32. Boxes are later divided by the same scale.

Images reach the ViLBERT plugin as RGB (vlmbench's decoder converts them): a greyscale image arrives
with three equal channels, exactly what the original's repetition gives; palette and transparent
images are converted to RGB, where the original used palette indices or failed on four channels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

PIXEL_MEAN_BGR = (102.9801, 115.9465, 122.7717)
MIN_SIZE = 800
MAX_SIZE = 1333
SIZE_DIVISIBLE = 32


@dataclass
class PreparedImage:
    """One image ready for the detector: resized BGR pixels minus the mean, not yet padded."""

    pixels: Tensor  # [3, h, w] float32
    scale: float  # resized / original
    image_size: tuple[int, int]  # original (width, height)


def pixel_array(image: Any) -> np.ndarray:
    """A PIL image or an array as the original read it: ``np.array(image)`` as float32, a 2-D array
    repeated to three channels; PIL modes other than RGB and L are converted to RGB first."""
    if hasattr(image, "mode"):
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        image = np.array(image)
    array = np.asarray(image).astype(np.float32)
    if array.ndim == 2:
        array = np.repeat(array[:, :, np.newaxis], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an RGB or greyscale image, got an array of shape {array.shape}")
    return array


def resize_scale(height: int, width: int, min_size: int = MIN_SIZE, max_size: int = MAX_SIZE) -> float:
    """Shorter side to ``min_size``, unless the longer side would then round to more than ``max_size``."""
    scale = min_size / min(height, width)
    if np.round(scale * max(height, width)) > max_size:
        scale = max_size / max(height, width)
    return float(scale)


def resize_linear(array: np.ndarray, scale: float) -> np.ndarray:
    """``cv2.resize(array, None, fx=scale, fy=scale, interpolation=INTER_LINEAR)``, the original's call."""
    try:
        import cv2
    except ImportError as exc:
        raise ImportError(
            "the ViLBERT region detector resizes images with OpenCV, as the original extraction did: "
            "pip install opencv-python-headless (or vlmbench[vilbert])"
        ) from exc
    return cv2.resize(array, None, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)


def prepare_image(image: Any, min_size: int = MIN_SIZE, max_size: int = MAX_SIZE) -> PreparedImage:
    """BGR, mean subtraction and resizing of one image (CPU only: safe in DataLoader workers)."""
    array = pixel_array(image)
    height, width = array.shape[:2]
    bgr = array[:, :, ::-1]
    # In place, as the original: float64 means, the result stored back as float32.
    bgr -= np.array(PIXEL_MEAN_BGR)
    scale = resize_scale(height, width, min_size, max_size)
    resized = resize_linear(bgr, scale)
    pixels = torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1).contiguous()
    return PreparedImage(pixels, scale, (int(width), int(height)))


def pad_batch(images: Sequence[Tensor], divisible: int = SIZE_DIVISIBLE) -> tuple[Tensor, tuple[int, int]]:
    """Zero-pad [3, h, w] images at the bottom and right to the batch's largest size rounded up to a
    multiple of ``divisible``: ([N, 3, H, W], (H, W))."""
    height = int(math.ceil(max(t.shape[1] for t in images) / divisible) * divisible)
    width = int(math.ceil(max(t.shape[2] for t in images) / divisible) * divisible)
    batch = images[0].new_zeros((len(images), 3, height, width))
    for row, image in enumerate(images):
        batch[row, :, : image.shape[1], : image.shape[2]] = image
    return batch, (height, width)
