"""The detector's configuration: the yacs ``MODEL`` keys of vqa-maskrcnn-benchmark, read from
``detectron_config.yaml`` the way yacs merges a file over the library defaults.

``DEFAULTS`` are the fork's defaults (``maskrcnn_benchmark/config/defaults.py``) for every ``MODEL`` key
it declares, ``RELEASE`` what the X-152 yaml of ViLBERT's extraction changes. A file is merged over
``DEFAULTS`` (not over ``RELEASE``), as yacs does, so a key a file leaves out takes the library default.
Keys the fork does not declare are errors, as in yacs; values that select code this port does not hold
(another backbone family, no FPN, other heads) are errors too. Sections other than ``MODEL`` (``INPUT``,
``SOLVER``, ``DATASETS``...) are read by nothing in the extraction and are ignored: the original script
does its own resizing and never reads ``INPUT``.
"""

from __future__ import annotations

import ast
import contextlib
import copy
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

DEFAULTS: dict[str, dict[str, Any] | Any] = {
    "RPN_ONLY": False, "MASK_ON": False, "DEVICE": "cuda", "META_ARCHITECTURE": "GeneralizedRCNN", "WEIGHT": "",
    "BACKBONE": {"CONV_BODY": "R-50-C4", "FREEZE_CONV_BODY_AT": 2, "OUT_CHANNELS": 256 * 4},
    "RPN": {
        "USE_FPN": False, "ANCHOR_SIZES": (32, 64, 128, 256, 512), "ANCHOR_STRIDE": (16,),
        "ASPECT_RATIOS": (0.5, 1.0, 2.0), "STRADDLE_THRESH": 0, "FG_IOU_THRESHOLD": 0.7, "BG_IOU_THRESHOLD": 0.3,
        "BATCH_SIZE_PER_IMAGE": 256, "POSITIVE_FRACTION": 0.5, "PRE_NMS_TOP_N_TRAIN": 12000,
        "PRE_NMS_TOP_N_TEST": 6000, "POST_NMS_TOP_N_TRAIN": 2000, "POST_NMS_TOP_N_TEST": 1000, "NMS_THRESH": 0.7,
        "MIN_SIZE": 0, "FPN_POST_NMS_TOP_N_TRAIN": 2000, "FPN_POST_NMS_TOP_N_TEST": 2000,
        "RPN_HEAD": "SingleConvRPNHead",
    },
    "ROI_HEADS": {
        "USE_FPN": False, "FG_IOU_THRESHOLD": 0.5, "BG_IOU_THRESHOLD": 0.5, "BBOX_REG_WEIGHTS": (10.0, 10.0, 5.0, 5.0),
        "BATCH_SIZE_PER_IMAGE": 512, "POSITIVE_FRACTION": 0.25, "SCORE_THRESH": 0.05, "NMS": 0.5,
        "DETECTIONS_PER_IMG": 100,
    },
    "ROI_BOX_HEAD": {
        "FEATURE_EXTRACTOR": "ResNet50Conv5ROIFeatureExtractor", "PREDICTOR": "FastRCNNPredictor",
        "POOLER_RESOLUTION": 14, "POOLER_SAMPLING_RATIO": 0, "POOLER_SCALES": (1.0 / 16,), "NUM_CLASSES": 81,
        "MLP_HEAD_DIM": 1024, "RETURN_FC_FEATS": False, "ATTR": False,
    },
    "ROI_MASK_HEAD": {
        "FEATURE_EXTRACTOR": "ResNet50Conv5ROIFeatureExtractor", "PREDICTOR": "MaskRCNNC4Predictor",
        "POOLER_RESOLUTION": 14, "POOLER_SAMPLING_RATIO": 0, "POOLER_SCALES": (1.0 / 16,), "MLP_HEAD_DIM": 1024,
        "CONV_LAYERS": (256, 256, 256, 256), "RESOLUTION": 14, "SHARE_BOX_FEATURE_EXTRACTOR": True,
        "POSTPROCESS_MASKS": False, "POSTPROCESS_MASKS_THRESHOLD": 0.5,
    },
    "RESNETS": {
        "NUM_GROUPS": 1, "WIDTH_PER_GROUP": 64, "STRIDE_IN_1X1": True, "TRANS_FUNC": "BottleneckWithFixedBatchNorm",
        "STEM_FUNC": "StemWithFixedBatchNorm", "RES5_DILATION": 1, "RES2_OUT_CHANNELS": 256, "STEM_OUT_CHANNELS": 64,
    },
}  # fmt: skip

# The MODEL part of e2e_faster_rcnn_X-152-32x8d-FPN_1x_MLP_2048_FPN_512_train.yaml, the file the
# vilbert-multi-task README downloads as detectron_config.yaml.
RELEASE: dict[str, dict[str, Any]] = {
    "BACKBONE": {"CONV_BODY": "R-152-FPN", "OUT_CHANNELS": 512},
    "RPN": {
        "USE_FPN": True, "ANCHOR_STRIDE": (4, 8, 16, 32, 64), "PRE_NMS_TOP_N_TRAIN": 2000,
        "PRE_NMS_TOP_N_TEST": 1000, "POST_NMS_TOP_N_TEST": 1000, "FPN_POST_NMS_TOP_N_TEST": 1000,
    },
    "ROI_HEADS": {"USE_FPN": True},
    "ROI_BOX_HEAD": {
        "POOLER_RESOLUTION": 7, "POOLER_SCALES": (0.25, 0.125, 0.0625, 0.03125), "POOLER_SAMPLING_RATIO": 2,
        "FEATURE_EXTRACTOR": "FPN2MLPFeatureExtractor", "RETURN_FC_FEATS": True, "PREDICTOR": "FPNPredictor",
        "MLP_HEAD_DIM": 2048, "NUM_CLASSES": 1601, "ATTR": False,
    },
    "RESNETS": {"STRIDE_IN_1X1": False, "NUM_GROUPS": 32, "WIDTH_PER_GROUP": 8},
}  # fmt: skip

# Residual blocks per stage (res2..res5) of the FPN bodies the fork registers.
STAGE_BLOCKS = {"R-50-FPN": (3, 4, 6, 3), "R-101-FPN": (3, 4, 23, 3), "R-152-FPN": (3, 8, 36, 3)}

# Values that select code paths; anything else is another model than this port implements.
_REQUIRED = {
    ("META_ARCHITECTURE",): "GeneralizedRCNN",
    ("RPN_ONLY",): False,
    ("RPN", "USE_FPN"): True,
    ("RPN", "RPN_HEAD"): "SingleConvRPNHead",
    ("ROI_HEADS", "USE_FPN"): True,
    ("ROI_BOX_HEAD", "FEATURE_EXTRACTOR"): "FPN2MLPFeatureExtractor",
    ("ROI_BOX_HEAD", "PREDICTOR"): "FPNPredictor",
    ("RESNETS", "TRANS_FUNC"): "BottleneckWithFixedBatchNorm",
    ("RESNETS", "STEM_FUNC"): "StemWithFixedBatchNorm",
}


class DetectorConfigError(ValueError):
    """A detector config this port cannot build (unknown key, unsupported architecture, bad value)."""


@dataclass(frozen=True)
class DetectorConfig:
    """What the network and its inference read, resolved from the yacs tree (``MODEL`` keys)."""

    conv_body: str
    out_channels: int
    num_groups: int
    width_per_group: int
    stride_in_1x1: bool
    stem_out_channels: int
    res2_out_channels: int
    anchor_sizes: tuple[int, ...]
    anchor_strides: tuple[int, ...]
    aspect_ratios: tuple[float, ...]
    pre_nms_top_n: int
    post_nms_top_n: int
    fpn_post_nms_top_n: int
    rpn_nms_thresh: float
    rpn_min_size: float
    pooler_resolution: int
    pooler_sampling_ratio: int
    pooler_scales: tuple[float, ...]
    mlp_head_dim: int
    num_classes: int

    @property
    def stage_blocks(self) -> tuple[int, ...]:
        return STAGE_BLOCKS[self.conv_body]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def release(cls) -> DetectorConfig:
        """The released X-152 detector's config (the yaml merged over the defaults)."""
        return cls.from_tree(merge_tree(RELEASE))

    @classmethod
    def from_yaml(cls, path: str | Path) -> DetectorConfig:
        """Read a yacs yaml file (``detectron_config.yaml``): its ``MODEL`` section over ``DEFAULTS``."""
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise DetectorConfigError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
        if not isinstance(data, Mapping):
            raise DetectorConfigError(f"{path} holds no yacs config (a mapping of sections)")
        return cls.from_tree(merge_tree(data.get("MODEL") or {}))

    @classmethod
    def from_tree(cls, tree: Mapping[str, Any]) -> DetectorConfig:
        """Resolve a full MODEL tree (``merge_tree``'s result) into what the port reads."""
        for path, wanted in _REQUIRED.items():
            value = _get(tree, path)
            if value != wanted:
                raise DetectorConfigError(
                    f"MODEL.{'.'.join(path)} is {value!r}; this port implements {wanted!r} (the Visual Genome "
                    "FPN Faster R-CNN of ViLBERT's feature extraction)"
                )
        body, rpn, box, res = tree["BACKBONE"], tree["RPN"], tree["ROI_BOX_HEAD"], tree["RESNETS"]
        if body["CONV_BODY"] not in STAGE_BLOCKS:
            raise DetectorConfigError(
                f"MODEL.BACKBONE.CONV_BODY {body['CONV_BODY']!r} is not one of {', '.join(STAGE_BLOCKS)}"
            )
        if len(rpn["ANCHOR_STRIDE"]) != len(rpn["ANCHOR_SIZES"]):
            raise DetectorConfigError("MODEL.RPN.ANCHOR_STRIDE needs one stride per anchor size (FPN)")
        if len(box["POOLER_SCALES"]) != 4:
            raise DetectorConfigError("MODEL.ROI_BOX_HEAD.POOLER_SCALES needs one scale per level P2..P5")
        return cls(
            conv_body=body["CONV_BODY"], out_channels=int(body["OUT_CHANNELS"]),
            num_groups=int(res["NUM_GROUPS"]), width_per_group=int(res["WIDTH_PER_GROUP"]),
            stride_in_1x1=bool(res["STRIDE_IN_1X1"]),
            stem_out_channels=int(res["STEM_OUT_CHANNELS"]), res2_out_channels=int(res["RES2_OUT_CHANNELS"]),
            anchor_sizes=tuple(int(s) for s in rpn["ANCHOR_SIZES"]),
            anchor_strides=tuple(int(s) for s in rpn["ANCHOR_STRIDE"]),
            aspect_ratios=tuple(float(r) for r in rpn["ASPECT_RATIOS"]),
            pre_nms_top_n=int(rpn["PRE_NMS_TOP_N_TEST"]), post_nms_top_n=int(rpn["POST_NMS_TOP_N_TEST"]),
            fpn_post_nms_top_n=int(rpn["FPN_POST_NMS_TOP_N_TEST"]), rpn_nms_thresh=float(rpn["NMS_THRESH"]),
            rpn_min_size=float(rpn["MIN_SIZE"]), pooler_resolution=int(box["POOLER_RESOLUTION"]),
            pooler_sampling_ratio=int(box["POOLER_SAMPLING_RATIO"]),
            pooler_scales=tuple(float(s) for s in box["POOLER_SCALES"]),
            mlp_head_dim=int(box["MLP_HEAD_DIM"]), num_classes=int(box["NUM_CLASSES"]),
        )  # fmt: skip


def _get(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    for part in path:
        tree = tree[part]
    return tree


def _coerce(value: Any, default: Any, where: str) -> Any:
    """yacs' rules: strings that are Python literals become them (``(4, 8)`` in a yaml is a string);
    the type must then match the default's, lists and tuples being interchangeable."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError, SyntaxError):
            value = ast.literal_eval(value)
    if isinstance(default, (tuple, list)) and isinstance(value, (tuple, list)):
        return tuple(value)
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not type(default):
        raise DetectorConfigError(
            f"{where} must be a {type(default).__name__} like the default {default!r}, got {value!r}"
        )
    return value


def merge_tree(model: Mapping[str, Any]) -> dict[str, Any]:
    """``DEFAULTS`` with the given ``MODEL`` mapping merged in (yacs ``merge_from_file`` semantics)."""
    if not isinstance(model, Mapping):
        raise DetectorConfigError("the MODEL section must be a mapping")
    tree = copy.deepcopy(DEFAULTS)
    for key, value in model.items():
        if key not in tree:
            raise DetectorConfigError(f"unknown detector config key MODEL.{key}")
        if isinstance(tree[key], dict):
            if not isinstance(value, Mapping):
                raise DetectorConfigError(f"MODEL.{key} must be a section")
            for sub, item in value.items():
                if sub not in tree[key]:
                    raise DetectorConfigError(f"unknown detector config key MODEL.{key}.{sub}")
                tree[key][sub] = _coerce(item, tree[key][sub], f"MODEL.{key}.{sub}")
        else:
            tree[key] = _coerce(value, tree[key], f"MODEL.{key}")
    return tree


def apply_dotted(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """A MODEL mapping with ``{"MODEL.RESNETS.NUM_GROUPS": 4, ...}`` applied (a parity fixture's form)."""
    model = copy.deepcopy(dict(base))
    for dotted, value in changes.items():
        parts = dotted.split(".")
        if parts[0] != "MODEL" or len(parts) not in (2, 3):
            raise DetectorConfigError(f"{dotted}: expected MODEL.KEY or MODEL.SECTION.KEY")
        if len(parts) == 2:
            model[parts[1]] = value
        else:
            model.setdefault(parts[1], {})[parts[2]] = value
    return model
