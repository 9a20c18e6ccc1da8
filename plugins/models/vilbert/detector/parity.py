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

The FPN is also computed end to end from the image, as a user's run does. Through 50 residual blocks of
random weights, float32 rounding grows to about 1e-3, and the rounding depends on the CPU's convolution
kernels: the original code itself, run on a CPU other than the fixture's, misses its own fixture by that
much. So these rows also pass when the difference is within twice the port's own float32 rounding of
the same computation, measured against float64 on the spot (the original's rounding and the port's
are each of that size); the report says which rows needed that bound. A fixture without the body's
outputs (fixture B of the reference) has only these rows for its FPN.
"""

from __future__ import annotations

import copy
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
    # Rows computed from the image: twice the port's own float32 rounding of this output
    # (max |float32 - float64|), which such a row may also differ by; None for the other rows.
    rounding: float | None = None
    within_tolerance: bool = True  # without that allowance


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

    def floats(self, name: str, ours: Tensor, theirs: Tensor, exact_ours: Tensor | None = None) -> None:
        """Compare within the tolerance; with ``exact_ours`` (the same output computed in float64), also
        pass within the tolerance plus twice the port's measured float32 rounding."""
        ours, theirs = ours.detach().float().cpu(), theirs.detach().float().cpu()
        if ours.shape != theirs.shape:
            self.report.stages.append(
                StageParity(name, tuple(theirs.shape), math.inf, math.inf, False, False)
            )
            return
        diff = (ours - theirs).abs()
        big = theirs.abs() > self.tol
        rel = (diff[big] / theirs.abs()[big]).max().item() if bool(big.any()) else 0.0
        limit = self.tol + self.tol * theirs.abs()
        strict = bool((diff <= limit).all())
        top = diff.max().item() if diff.numel() else 0.0
        row = StageParity(name, tuple(theirs.shape), top, rel, False, strict, within_tolerance=strict)
        if exact_ours is not None:
            row.rounding = 2 * (ours.double() - exact_ours.detach().double().cpu()).abs().max().item()
            row.passed = strict or bool((diff <= limit + row.rounding).all())
        self.report.stages.append(row)

    def ints(self, name: str, ours: Any, theirs: Any) -> None:
        ours, theirs = torch.as_tensor(ours).cpu(), torch.as_tensor(theirs).cpu()
        same = ours.shape == theirs.shape and bool(torch.equal(ours.long(), theirs.long()))
        top = 0.0 if same else math.inf
        self.report.stages.append(StageParity(name, tuple(theirs.shape), top, 0.0, True, same))


def match_proposals(
    ours: Tensor, theirs: Tensor, ours_score: Tensor, theirs_score: Tensor, limit: float = MATCH_PIXELS
) -> Tensor | None:
    """For each reference proposal, the index of our proposal with the same coordinates, or None when
    the two sets do not match one to one.

    Boxes clipped flat against the image border can come out of the RPN more than once with the same
    coordinates (NMS never suppresses a box of zero area), so coordinates alone do not decide: among
    our unused proposals within ``limit`` pixels, the one at the same position wins when its objectness
    is as close as any other's, otherwise the one with the closest objectness."""
    if ours.shape != theirs.shape:
        return None
    distance = torch.cdist(theirs.double(), ours.double(), p=math.inf)
    score_gap = (theirs_score.double()[:, None] - ours_score.double()[None, :]).abs()
    close = distance < limit
    used = torch.zeros(len(ours), dtype=torch.bool)
    index = torch.empty(len(theirs), dtype=torch.long)
    for row in range(len(theirs)):
        free = close[row] & ~used
        if not bool(free.any()):
            return None
        gaps = torch.where(free, score_gap[row], math.inf)
        best = int(gaps.argmin())
        if row < len(ours) and bool(free[row]) and gaps[row] <= gaps[best]:
            best = row
        index[row], used[best] = best, True
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
    if reference_body:
        for level, ours in enumerate(model.backbone.fpn(reference_body)):
            check.floats(f"fpn[{level}]", ours, expected["fpn"][level])
    exact = copy.deepcopy(model.backbone).double()
    from_image = model.backbone.fpn(body(batch)[1])
    from_image_exact = exact.fpn(exact.body(batch.double())[1])
    for level, ours in enumerate(from_image):
        check.floats(f"fpn[{level}] (from the image)", ours, expected["fpn"][level], from_image_exact[level])
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
        match = match_proposals(
            boxes.cpu(), expected["proposals"][i], objectness.cpu(), expected["proposals_objectness"][i]
        )
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
    """One row per stage: shape, max |diff|, max relative diff, the rounding bound of rows computed from
    the image, and verdict."""
    rows = [
        (s.name, "x".join(map(str, s.shape)) or "scalar", s.max_abs_diff,
         ("exact" if s.exact else f"{s.max_rel_diff:.2e}", "-" if s.rounding is None else f"{s.rounding:.2e}"),
         s.passed)
        for s in report.stages
    ]  # fmt: skip
    heading = [
        f"ViLBERT region detector parity: {report.fixture}",
        f"tolerance: rtol = atol = {report.tolerance:.1e}; integers exact; rows computed from the image may"
        " also differ by the 'rounding' column (2x the port's own float32 rounding of them)",
    ]
    verdict = "PASS" if report.passed else "FAIL"
    summary = (
        f"{verdict}: {sum(s.passed for s in report.stages)}/{len(report.stages)} stages within tolerance"
    )
    bounded = [s for s in report.stages if s.rounding is not None]
    loose = [s for s in bounded if s.passed and not s.within_tolerance]
    if loose:
        summary += (
            f" ({len(loose)} of the {len(bounded)} computed from the image only within the rounding bound:"
            " this CPU's convolutions round differently from the fixture's)"
        )
    return render_rows(heading, "stage", rows, summary, extra_columns=("max rel", "rounding"))
