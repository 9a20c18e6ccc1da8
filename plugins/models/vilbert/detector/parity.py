"""Stage-by-stage parity of the detector port against outputs of the original code.

A fixture (format ``vg_detector_tiny_parity/v1``, read with ``weights_only=True``) holds the config
changes (``config.changed_yacs``) over the released X-152 yaml, the extraction settings, the weights,
the raw images and the original's outputs at every stage. ``check_detector_parity`` preprocesses the raw
images and compares them with the fixture's model input, runs the port on that input with the
fixture's (padded) image sizes, and compares every stage.

Proposals whose objectness ties are ordered differently by different kernels, so proposals are matched
by their coordinates (L-inf below 0.01 pixel, one to one) and every per-proposal output, and the kept
indices, are compared through that matching; what comes after the final sort is compared row by row.
Floats pass when ``|ours - theirs| <= atol + rtol * |theirs|`` everywhere (``torch.testing.assert_close``'s
rule); integers (levels, kept indices, counts, the ``objects`` field) must be equal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from vlmbench_plugins.models.parity_report import ComparedRows, render_rows

from .box_head import pool
from .config import RELEASE, DetectorConfig, apply_dotted, merge_tree
from .extraction import select_regions
from .loading import load_detector_state
from .model import RegionDetector
from .preprocess import prepare_image
from .rpn import image_proposals, level_proposals

FORMAT = "vg_detector_tiny_parity/v1"
TOLERANCE = 1e-4  # rtol and atol
MATCH_PIXELS = 1e-2


@dataclass
class StageParity:
    name: str
    shape: tuple[int, ...]
    max_abs_diff: float
    max_rel_diff: float  # over elements whose reference magnitude exceeds atol; 0 for integers
    exact: bool  # compared for equality (integers)
    passed: bool


@dataclass
class DetectorParityReport(ComparedRows):
    ROWS: ClassVar[str] = "stages"

    fixture: str
    tolerance: float
    stages: list[StageParity] = field(default_factory=list)


def is_detector_fixture(data: Any) -> bool:
    return isinstance(data, Mapping) and data.get("format") == FORMAT


def fixture_config(data: Mapping[str, Any]) -> DetectorConfig:
    """The released yaml with the fixture's changes, merged over the defaults as yacs does."""
    return DetectorConfig.from_tree(merge_tree(apply_dotted(RELEASE, data["config"]["changed_yacs"])))


class _Comparer:
    def __init__(self, report: DetectorParityReport) -> None:
        self.report = report
        self.tol = report.tolerance

    def floats(self, name: str, ours: Tensor, theirs: Tensor) -> None:
        ours, theirs = ours.detach().float().cpu(), theirs.detach().float().cpu()
        if ours.shape != theirs.shape:
            self.report.stages.append(
                StageParity(name, tuple(theirs.shape), math.inf, math.inf, False, False)
            )
            return
        diff = (ours - theirs).abs()
        big = theirs.abs() > self.tol
        rel = (diff[big] / theirs.abs()[big]).max().item() if bool(big.any()) else 0.0
        passed = bool((diff <= self.tol + self.tol * theirs.abs()).all())
        top = diff.max().item() if diff.numel() else 0.0
        self.report.stages.append(StageParity(name, tuple(theirs.shape), top, rel, False, passed))

    def ints(self, name: str, ours: Any, theirs: Any) -> None:
        ours, theirs = torch.as_tensor(ours).cpu(), torch.as_tensor(theirs).cpu()
        same = ours.shape == theirs.shape and bool(torch.equal(ours.long(), theirs.long()))
        top = 0.0 if same else math.inf
        self.report.stages.append(StageParity(name, tuple(theirs.shape), top, 0.0, True, same))


def match_proposals(ours: Tensor, theirs: Tensor, limit: float = MATCH_PIXELS) -> Tensor | None:
    """For each reference proposal, the index of our proposal with the same coordinates, or None when
    the two sets do not match one to one."""
    if ours.shape != theirs.shape:
        return None
    distance = torch.cdist(theirs.double(), ours.double(), p=math.inf)
    index = distance.argmin(dim=1)
    close = distance.gather(1, index[:, None]).squeeze(1) < limit
    if not bool(close.all()) or len(set(index.tolist())) != len(index):
        return None
    return index


def check_detector_parity(
    fixture: str | Path | Mapping[str, Any], tolerance: float = TOLERANCE, device: str = "cpu"
) -> DetectorParityReport:
    """Compare every stage of the port with the fixture, each stage fed the original's output of the
    stage before it (so that float32 rounding of one kernel is not amplified through 50 residual blocks
    of random weights into a difference of the next), and the whole pipeline end to end."""
    data = (
        fixture
        if isinstance(fixture, Mapping)
        else torch.load(fixture, map_location="cpu", weights_only=True)
    )
    if not is_detector_fixture(data):
        raise ValueError(f"not a detector parity fixture (format {FORMAT!r})")
    model = RegionDetector(fixture_config(data))
    load_detector_state(model, data["state_dict"], warn=False)
    model = model.to(device).eval()
    report = DetectorParityReport("<dict>" if isinstance(fixture, Mapping) else str(fixture), tolerance)
    check = _Comparer(report)
    images, extract = data["images"], data["config"]["extract"]
    for i, raw in enumerate(images["raw_uint8"]):
        prepared = prepare_image(raw.numpy(), extract["MIN_SIZE"], extract["MAX_SIZE"])
        h, w = prepared.pixels.shape[1:]
        check.floats(f"preprocessed[{i}]", prepared.pixels, images["batch_tensor"][i, :, :h, :w])
        check.floats(
            f"im_scale[{i}]", torch.tensor(prepared.scale), torch.tensor(float(images["im_scales"][i]))
        )
    with torch.inference_mode():
        _compare_stages(check, model, data, device)
    return report


def _to(values: list[Tensor], device: str) -> list[Tensor]:
    return [v.to(device) for v in values]


def _compare_stages(check: _Comparer, model: RegionDetector, data: Mapping[str, Any], device: str) -> None:
    images, expected, config = data["images"], data["outputs"], model.config
    batch = images["batch_tensor"].to(device)
    body = model.backbone.body
    stem = body.stem(batch)
    if "stem" in expected:
        check.floats("stem", stem, expected["stem"])
    reference_body = _to(expected.get("body", []), device)
    if reference_body:
        inputs = [expected["stem"].to(device), *reference_body[:3]]
        for level, stage in enumerate(body.stages):
            check.floats(f"body[{level}]", stage(inputs[level]), reference_body[level])
    where = ""
    if not reference_body:  # a fixture without the body's outputs: the FPN is compared from the image
        reference_body, where = body(batch)[1], " (from the image)"
    for level, ours in enumerate(model.backbone.fpn(reference_body)):
        check.floats(f"fpn[{level}]{where}", ours, expected["fpn"][level])
    fpn = _to(expected["fpn"], device)
    logits, deltas = model.rpn.head(fpn)
    for level in range(len(fpn)):
        check.floats(
            f"rpn_objectness_logits[{level}]", logits[level], expected["rpn_objectness_logits"][level]
        )
        check.floats(f"rpn_box_deltas[{level}]", deltas[level], expected["rpn_box_deltas"][level])
    sizes = [tuple(int(v) for v in hw) for hw in images["image_sizes_padded_hw"]]
    logits, deltas = _to(expected["rpn_objectness_logits"], device), _to(expected["rpn_box_deltas"], device)
    anchors = [model.rpn.anchor_generator.grid_anchors(level, *f.shape[-2:]) for level, f in enumerate(fpn)]
    for i, size in enumerate(sizes):
        per_level = [
            level_proposals(config, logits[level][i], deltas[level][i], anchors[level], size)
            for level in range(len(fpn))
        ]
        boxes, objectness = image_proposals(config, per_level)
        match = match_proposals(boxes.cpu(), expected["proposals"][i])
        if match is None:
            check.ints(f"proposals[{i}] (matched by coordinates)", torch.zeros(0), expected["proposals"][i])
            continue
        check.floats(f"proposals[{i}]", boxes[match], expected["proposals"][i])
        check.floats(f"proposals_objectness[{i}]", objectness[match], expected["proposals_objectness"][i])
        _compare_head(check, model, fpn, expected, i, data)


def _compare_head(check: _Comparer, model: RegionDetector, fpn: list[Tensor], expected: Mapping[str, Any],
                  i: int, data: Mapping[str, Any]) -> None:  # fmt: skip
    """The box head and the extraction on the original's proposals of image ``i``."""
    images, extract = data["images"], data["config"]["extract"]
    proposals = expected["proposals"][i].to(fpn[0].device)
    single = [level[i : i + 1] for level in fpn[:4]]
    pooled, levels = pool(single, [proposals], model.config)
    check.ints(f"proposal_fpn_level[{i}]", levels, expected["proposal_fpn_level"][i])
    fc6, fc7 = model.roi_heads.box.feature_extractor(pooled)
    class_logits, bbox_deltas = model.roi_heads.box.predictor(fc7)
    check.floats(f"class_logits_all[{i}]", class_logits, expected["class_logits_all"][i])
    check.floats(f"cls_prob_all[{i}]", torch.softmax(class_logits, -1), expected["cls_prob_all"][i])
    reference_keep = expected["keep_boxes"][i].to(proposals.device)
    for name, ours in (("pooled_kept", pooled), ("fc6_kept", fc6), ("fc7_kept", fc7),
                       ("bbox_deltas_kept", bbox_deltas)):  # fmt: skip
        check.floats(f"{name}[{i}]", ours[reference_keep], expected[name][i])
    size = (int(images["image_width"][i]), int(images["image_height"][i]))
    found = select_regions(
        proposals, expected["class_logits_all"][i].to(proposals.device), fc6, float(images["im_scales"][i]), size,
        num_features=int(extract["num_features"]), confidence_threshold=float(extract["confidence_threshold"]),
        background=bool(extract["background"]),
    )  # fmt: skip
    check.floats(f"max_conf[{i}]", found.max_conf, expected["max_conf"][i])
    check.ints(f"keep_boxes[{i}]", found.keep, expected["keep_boxes"][i])
    for name, ours in (("features", found.features), ("bbox", found.boxes), ("cls_prob", found.cls_prob)):
        check.floats(f"{name}[{i}]", ours, expected[name][i])
    check.ints(f"num_boxes[{i}]", found.num_boxes, int(expected["num_boxes"][i]))
    check.ints(f"objects[{i}]", found.objects, expected["objects"][i])
    check.ints(f"image_size[{i}]", found.image_size,
               (int(expected["image_width"][i]), int(expected["image_height"][i])))  # fmt: skip


def render_detector_report(report: DetectorParityReport) -> str:
    """One row per stage: shape, max |diff|, max relative diff and verdict."""
    rows = [
        (s.name, "x".join(map(str, s.shape)) or "scalar", s.max_abs_diff,
         ("exact" if s.exact else f"{s.max_rel_diff:.2e}",), s.passed)
        for s in report.stages
    ]  # fmt: skip
    heading = [
        f"ViLBERT region detector parity: {report.fixture}",
        f"tolerance: rtol = atol = {report.tolerance:.1e}; integers exact",
    ]
    verdict = "PASS" if report.passed else "FAIL"
    summary = (
        f"{verdict}: {sum(s.passed for s in report.stages)}/{len(report.stages)} stages within tolerance"
    )
    return render_rows(heading, "stage", rows, summary, extra_columns=("max rel",))
