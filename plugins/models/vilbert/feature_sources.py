"""Which image features a ViLBERT run uses, as results record it: the source's name, its label, whether
it is the model's own, the note a leaderboard shows, and what of it determines answers."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from vlmbench.api import VlmbenchError, file_sha256

from .detector.source import RELEASE_LABEL, SOURCE_NAME, DetectorSource
from .features import FAITHFUL_LABEL, UNKNOWN_SOURCE_LABEL
from .files import Files
from .grid_features import approximation_label, grid_label
from .loading import CheckpointError

GRID_NAME = "grid approximation"
PRECOMPUTED_NAME = "precomputed region features"


def grid_shape(num_regions: int) -> tuple[int, int]:
    """(columns, rows) with columns * rows == num_regions, as close to square as possible."""
    rows = max(d for d in range(1, math.isqrt(num_regions) + 1) if num_regions % d == 0)
    return num_regions // rows, rows


def source_name(v: dict[str, Any]) -> str:
    return {"detector": SOURCE_NAME, "grid": GRID_NAME}.get(v["features"], PRECOMPUTED_NAME)


def _faithful_detector(detector: DetectorSource | None) -> bool:
    if detector is None or detector.files.weights is None:
        return True  # what was asked for, until the files say otherwise
    try:
        return detector.faithful
    except CheckpointError:
        return False


def detector_label(detector: DetectorSource | None) -> str:
    """The detector's label once its config can be read; the released one's before."""
    if detector is None or detector.files.weights is None:
        return RELEASE_LABEL
    try:
        return detector.label
    except CheckpointError:
        return RELEASE_LABEL  # the bad config is reported when the model loads


def feature_label(v: dict[str, Any], detector: DetectorSource | None) -> str:
    if v["features"] == "detector":
        return detector_label(detector)
    if v["features"] == "grid":
        return approximation_label(v["backbone"], grid_label(grid_shape(v["num_regions"])))
    return FAITHFUL_LABEL if v["features_faithful"] else UNKNOWN_SOURCE_LABEL


def faithful(v: dict[str, Any], detector: DetectorSource | None) -> bool:
    """The model's own features: the detector port at the released config, or precomputed features
    declared to come from the original detector."""
    if v["features"] == "detector":
        return _faithful_detector(detector)
    return v["features"] == "precomputed" and bool(v["features_faithful"])


def note(v: dict[str, Any], detector: DetectorSource | None) -> str:
    """The leaderboard footnote naming the feature source."""
    if v["features"] == "detector":
        if _faithful_detector(detector):
            return "image features: region detector (the Visual Genome X-152 Faster R-CNN ViLBERT was trained with)"
        return "image features: region detector, not at the released X-152 config and image scale"
    if v["features"] == "grid":
        return (
            f"image features: grid approximation ({v['backbone']} C5 over grid cells), not the Visual Genome "
            "detector ViLBERT was trained with"
        )
    if v["features_faithful"]:
        return "image features: precomputed, declared to come from the original Visual Genome detector"
    return "image features: precomputed (extractor not recorded)"


def identity(v: dict[str, Any], files: Files, detector: DetectorSource | None) -> dict[str, Any]:
    """What of the feature source determines answers (file contents, not paths, where they are files)."""
    features: dict[str, Any] = {"source": v["features"], "label": feature_label(v, detector)}
    if files.backbone is not None:
        features["backbone_sha256"] = file_sha256(files.backbone)
    if v["features"] == "detector" and detector is not None and detector.files.weights is not None:
        try:
            features["detector"] = detector.identity()
        except CheckpointError as exc:  # a config that cannot be read: before any model work
            raise VlmbenchError(str(exc)) from None
    if v["features"] == "precomputed":
        # a feature store can be many GB: it is identified by its location, not its content
        features["path"] = str(Path(v["features_path"]).expanduser().resolve())
    return features
