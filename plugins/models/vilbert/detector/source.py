"""Region features for the ViLBERT plugin from the detector port, through the feature cache.

The detector is built only when an image is not in the cache, so a task whose features were extracted
ahead of time (``vlmbench vilbert-features``) or by an earlier run never loads its 200M parameters.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from vlmbench.api import file_sha256

from ..features import RegionFeatures, regions_from_detections
from .cache import FeatureCache
from .config import DetectorConfig
from .extraction import CONFIDENCE_THRESHOLD, EXTRACTION_NMS, NUM_FEATURES, RegionExtractor
from .loading import DetectorFiles, load_detector, read_config
from .preprocess import MAX_SIZE, MIN_SIZE, PIXEL_MEAN_BGR, PreparedImage, prepare_image

SOURCE_NAME = "region detector"
RELEASE_LABEL = (
    "region detector: fc6 features of the Visual Genome ResNeXt-152 32x8d FPN Faster R-CNN "
    "(vlmbench's port of the original extraction)"
)
OTHER_CONFIG_LABEL = (
    "region detector at a config other than the released X-152 one: fc6 features of an FPN Faster R-CNN "
    "(vlmbench's port of the original extraction)"
)


class DetectorSource:
    """Looks regions up in the cache by image content; runs the detector on the others."""

    def __init__(
        self, files: DetectorFiles, cache_root: str | Path | None = None, device: str = "cpu",
        max_regions: int = NUM_FEATURES + 1, min_size: int = MIN_SIZE, max_size: int = MAX_SIZE,
    ) -> None:  # fmt: skip
        self.files = files
        self.min_size, self.max_size = min_size, max_size
        self.cache_root = cache_root
        self.device = device
        self.max_regions = max_regions
        self._extractor: RegionExtractor | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_extractor": None}  # workers only read the cache and preprocess

    @cached_property
    def config(self) -> DetectorConfig:
        return read_config(self.files.config)

    @property
    def faithful(self) -> bool:
        """The released config at the original image scale."""
        scale = (self.min_size, self.max_size) == (MIN_SIZE, MAX_SIZE)
        return scale and self.config == DetectorConfig.release()

    @property
    def label(self) -> str:
        label = RELEASE_LABEL if self.config == DetectorConfig.release() else OTHER_CONFIG_LABEL
        if (self.min_size, self.max_size) != (MIN_SIZE, MAX_SIZE):
            label += (
                f", images resized to {self.min_size}/{self.max_size} px instead of {MIN_SIZE}/{MAX_SIZE}"
            )
        return label

    def identity(self) -> dict[str, Any]:
        """What the features depend on (file contents, not paths)."""
        return {
            "weights_sha256": file_sha256(self.files.weights) if self.files.weights else None,
            "config": self.config.to_dict(),
            "extraction": {
                "min_size": self.min_size, "max_size": self.max_size, "pixel_mean_bgr": list(PIXEL_MEAN_BGR),
                "num_features": NUM_FEATURES, "confidence_threshold": CONFIDENCE_THRESHOLD,
                "nms": EXTRACTION_NMS, "feature": "fc6", "per_image": True,
            },
        }  # fmt: skip

    @cached_property
    def cache(self) -> FeatureCache:
        return FeatureCache(self.identity(), self.cache_root)

    def cached(self, image_sha256: str | None) -> RegionFeatures | None:
        record = self.cache.get(image_sha256) if image_sha256 else None
        if record is None:
            return None
        return regions_from_detections(
            record["features"], record["boxes"], float(record["image_width"]), float(record["image_height"]),
            self.label, self.max_regions,
        )  # fmt: skip

    def prepare(self, image: Any) -> PreparedImage:
        """CPU preprocessing (DataLoader workers)."""
        return prepare_image(image, self.min_size, self.max_size)

    @property
    def extractor(self) -> RegionExtractor:
        if self._extractor is None:
            model = load_detector(self.files, self.device)
            self._extractor = RegionExtractor(model, self.device, self.min_size, self.max_size)
        return self._extractor

    def regions(self, image_sha256: str | None, item: Any) -> RegionFeatures:
        """``item``: cached regions, a prepared image or a decoded image. New detections are cached."""
        if isinstance(item, RegionFeatures):
            return item
        found = self.cached(image_sha256)
        if found is not None:
            return found
        prepared = item if isinstance(item, PreparedImage) else self.prepare(item)
        detections = self.extractor.detect_prepared(prepared)
        if image_sha256:
            self.cache.put(image_sha256, detections)
        width, height = detections.image_size
        return regions_from_detections(
            detections.features, detections.boxes, width, height, self.label, self.max_regions
        )

    def release(self) -> None:
        """Drop the network (its memory) once a command is done with it."""
        self._extractor = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
