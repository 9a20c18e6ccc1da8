"""ViLBERT's region detector: stage-by-stage parity with the original code (fixture A of the shared
reference, when it is there), the released model's exact state-dict layout, the original loader's
leniencies, the yacs config and the preprocessing."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vlmbench_plugins.models.vilbert.detector.config import DetectorConfig, DetectorConfigError, merge_tree
from vlmbench_plugins.models.vilbert.detector.extraction import select_regions
from vlmbench_plugins.models.vilbert.detector.loading import load_detector_state
from vlmbench_plugins.models.vilbert.detector.model import RegionDetector
from vlmbench_plugins.models.vilbert.detector.parity import (
    check_detector_parity,
    is_detector_fixture,
    match_proposals,
    render_detector_report,
)
from vlmbench_plugins.models.vilbert.detector.preprocess import pad_batch, prepare_image, resize_scale
from vlmbench_plugins.models.vilbert.detector.rpn import cell_anchors
from vlmbench_plugins.models.vilbert.loading import CheckpointMismatchError

from .plugin_assets import TINY_DETECTOR_YAML

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "vilbert" / "detector"
FIXTURE_A = REFERENCE / "vg_detector_tiny_parity.pt"
MANIFEST = REFERENCE / "vg_detector_x152_keys.json"
needs_reference = pytest.mark.skipif(not FIXTURE_A.is_file(), reason="../shared reference material absent")
# Every other detector fixture is checked the same way (other configs, greyscale images, padding): the
# .pt files beside fixture A and those named in VLMBENCH_DETECTOR_FIXTURES (paths joined by os.pathsep).
OTHER_FIXTURES = sorted(
    (set(REFERENCE.glob("*.pt")) - {FIXTURE_A})
    | {Path(p) for p in os.environ.get("VLMBENCH_DETECTOR_FIXTURES", "").split(os.pathsep) if p}
)

# The released cell anchors (x1, y1, x2, y2) per level, aspect ratios 0.5, 1, 2 (Detectron's values).
RELEASED_ANCHORS = [
    [[-22, -10, 25, 13], [-14, -14, 17, 17], [-10, -22, 13, 25]],
    [[-40, -20, 47, 27], [-28, -28, 35, 35], [-20, -44, 27, 51]],
    [[-84, -40, 99, 55], [-56, -56, 71, 71], [-36, -80, 51, 95]],
    [[-164, -72, 195, 103], [-112, -112, 143, 143], [-76, -168, 107, 199]],
    [[-332, -152, 395, 215], [-224, -224, 287, 287], [-148, -328, 211, 391]],
]


@needs_reference
@pytest.mark.slow(seconds=12)
def test_fixture_a_matches_stage_by_stage():
    report = check_detector_parity(FIXTURE_A)
    assert report.passed, render_detector_report(report)
    names = {s.name.split("[")[0] for s in report.stages}
    for stage in ("preprocessed", "stem", "body", "fpn", "rpn_objectness_logits", "rpn_box_deltas", "proposals",
                  "proposal_fpn_level", "class_logits_all", "pooled_kept", "fc6_kept", "max_conf", "keep_boxes",
                  "features", "bbox", "cls_prob", "num_boxes", "objects"):  # fmt: skip
        assert stage in names, stage
    # the preprocessing (cv2 on the mean-subtracted float image) and the kept regions are exact here
    exact = {s.name: s.max_abs_diff for s in report.stages}
    assert exact["preprocessed[0]"] == 0.0 and exact["keep_boxes[1]"] == 0.0
    # every stage fed the original's input passes the stated tolerance itself; only the FPN computed end
    # to end from the image may lean on the measured float32 rounding bound
    for stage in report.stages:
        assert stage.within_tolerance or stage.name.endswith("(from the image)"), stage
    from_image = [s for s in report.stages if s.rounding is not None]
    assert len(from_image) == 5 and all(0 < s.rounding < 1e-2 for s in from_image)


@pytest.mark.parametrize("fixture", OTHER_FIXTURES or [None], ids=lambda p: p.name if p else "none")
def test_other_reference_fixtures_match(fixture):
    if fixture is None:
        pytest.skip(
            "no detector fixture besides A (../shared/reference/vilbert/detector, VLMBENCH_DETECTOR_FIXTURES)"
        )
    data = torch.load(fixture, map_location="cpu", weights_only=True)
    if not is_detector_fixture(data):
        pytest.skip(f"{fixture.name} is not a detector parity fixture")
    report = check_detector_parity(data)
    assert report.passed, render_detector_report(report)


def test_proposals_with_the_same_coordinates_are_matched_one_to_one_by_objectness():
    boxes = torch.tensor([[0.0, 10, 415, 9], [5, 5, 20, 20], [0, 10, 415, 9], [1, 2, 3, 4]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.7])
    # the border-clipped box appears twice; the last two rows tie and come in the other order
    ours = boxes[[0, 1, 3, 2]]
    ours_scores = scores[[0, 1, 3, 2]]
    match = match_proposals(ours, boxes, ours_scores, scores)
    assert match is not None and match.tolist() == [0, 1, 3, 2]
    assert torch.equal(ours[match], boxes) and torch.equal(ours_scores[match], scores)
    assert match_proposals(boxes, boxes, scores, scores).tolist() == [0, 1, 2, 3]  # the same order wins
    assert match_proposals(boxes[[0, 1, 1, 3]], boxes, scores, scores) is None  # the border box once only
    assert match_proposals(boxes + 0.5, boxes, scores, scores) is None


def test_kept_regions_follow_the_originals_sort_of_equal_confidences():
    # Equal max_conf values occur (saturated probabilities, duplicate proposals); the extraction keeps
    # the order of the original's call, torch.sort(max_conf, descending=True), not a stable sort's.
    torch.manual_seed(0)
    count = 400
    proposals = torch.rand(count, 2) * 300
    proposals = torch.cat([proposals, proposals + 40], dim=1)
    logits = torch.zeros(count, 3)
    logits[:, 1] = torch.randint(0, 3, (count,)).float() * 10  # three confidence levels, many ties
    found = select_regions(proposals, logits, torch.arange(count).float()[:, None], 1.0, (400, 400))
    expected = torch.sort(found.max_conf, descending=True)[1][:100]
    assert torch.equal(found.keep, expected)
    stable = torch.sort(found.max_conf, descending=True, stable=True)[1][:100]
    assert not torch.equal(stable, expected)  # the case above does tell the two apart


def _meta_state(manifest: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """Weightless tensors of the manifest's shapes; the cell anchors (real buffers) with their values."""
    state = {key: torch.empty(shape, device="meta") for key, shape in manifest.items()}
    for level, anchors in enumerate(RELEASED_ANCHORS):
        state[f"rpn.anchor_generator.cell_anchors.{level}"] = torch.tensor(anchors, dtype=torch.float32)
    return state


@needs_reference
def test_released_config_has_exactly_the_manifest_keys_and_loads_strictly():
    manifest = json.loads(MANIFEST.read_text())
    with torch.device("meta"):
        model = RegionDetector(DetectorConfig.release())
    state = model.state_dict()
    assert list(state) == list(manifest)  # same keys, same order
    assert {k: list(v.shape) for k, v in state.items()} == manifest
    assert sum(p.numel() for p in model.parameters()) == 205_784_084
    report = load_detector_state(model, _meta_state(manifest), warn=False)
    assert report.messages() == []


def test_original_loader_leniencies_are_warned_and_a_missing_weight_is_an_error(tmp_path):
    config = DetectorConfig.from_tree(merge_tree(_tiny_tree()))
    torch.manual_seed(0)
    source = RegionDetector(config).state_dict()
    saved = {f"module.{k}": v for k, v in source.items() if ".cell_anchors." not in k}
    saved["module.roi_heads.box.predictor.attr_linear1.weight"] = torch.zeros(3, 3)  # an attribute head
    model = RegionDetector(config)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_detector_state(model, saved)
    text = " ".join(str(w.message) for w in caught)
    assert "prefix 'module.'" in text and "attr_linear1.weight" in text and "cell_anchors.0" in text
    for key, value in source.items():
        assert torch.equal(model.state_dict()[key], value), key
    del saved["module.rpn.head.conv.weight"]
    with pytest.raises(CheckpointMismatchError, match=r"rpn\.head\.conv\.weight"):
        load_detector_state(RegionDetector(config), saved, warn=False)
    saved["module.rpn.head.conv.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointMismatchError, match="shape"):
        load_detector_state(RegionDetector(config), saved, warn=False)


def test_cell_anchors_are_the_released_ones():
    config = DetectorConfig.release()
    for level, (stride, size) in enumerate(zip(config.anchor_strides, config.anchor_sizes, strict=True)):
        assert cell_anchors(stride, size, config.aspect_ratios).tolist() == RELEASED_ANCHORS[level]


def _tiny_tree() -> dict:
    import yaml

    return yaml.safe_load(TINY_DETECTOR_YAML)["MODEL"]


def test_yaml_is_merged_over_the_library_defaults_as_yacs_does(tmp_path):
    path = tmp_path / "detectron_config.yaml"
    path.write_text(TINY_DETECTOR_YAML)
    config = DetectorConfig.from_yaml(path)
    assert config.anchor_strides == (4, 8, 16, 32, 64)  # a yacs tuple written as a string
    assert config.stage_blocks == (3, 4, 6, 3) and config.mlp_head_dim == 2048
    tree = _tiny_tree()
    del tree["RPN"]["PRE_NMS_TOP_N_TEST"]
    assert DetectorConfig.from_tree(merge_tree(tree)).pre_nms_top_n == 6000  # the library default
    release = DetectorConfig.release()
    assert (release.pre_nms_top_n, release.fpn_post_nms_top_n, release.num_classes) == (1000, 1000, 1601)
    with pytest.raises(DetectorConfigError, match=r"unknown detector config key MODEL\.RPN\.TYPO"):
        merge_tree({"RPN": {"TYPO": 1}})
    with pytest.raises(DetectorConfigError, match="CONV_BODY"):
        DetectorConfig.from_tree(merge_tree({**tree, "BACKBONE": {"CONV_BODY": "R-50-C4"}}))
    with pytest.raises(DetectorConfigError, match="USE_FPN"):
        DetectorConfig.from_tree(merge_tree({**tree, "RPN": {"USE_FPN": False}}))


def test_preprocessing_follows_the_original_extraction():
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (50, 75), dtype=np.uint8)
    as_grey = prepare_image(Image.fromarray(grey, mode="L"))
    as_rgb = prepare_image(Image.fromarray(grey, mode="L").convert("RGB"))
    assert torch.equal(as_grey.pixels, as_rgb.pixels)  # repeated channels, as the original
    assert as_grey.scale == 16.0 and as_grey.pixels.shape == (3, 800, 1200) and as_grey.image_size == (75, 50)
    # BGR means subtracted: a black pixel becomes minus the means in B, G, R order
    black = prepare_image(np.zeros((10, 10, 3), dtype=np.uint8), 10, 10)
    assert black.pixels[:, 0, 0].tolist() == pytest.approx([-102.9801, -115.9465, -122.7717], abs=1e-4)
    assert resize_scale(100, 400) == 1333 / 400  # the longer side would exceed 1333
    batch, padded = pad_batch([torch.ones(3, 33, 70)])
    assert padded == (64, 96) and batch[0, :, 33:].abs().sum() == 0 and batch[0, :, :33, :70].min() == 1
