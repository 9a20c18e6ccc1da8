from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from vlmbench.errors import SampleError
from vlmbench_plugins.models.vilbert import features as F
from vlmbench_plugins.models.vilbert.features import (
    MAX_REGIONS,
    LmdbFeatureReader,
    NumpyFeatureReader,
    RegionFeatureExtractor,
    RegionFeatureSource,
    collate_regions,
    regions_from_detections,
    safe_unpickle,
    save_regions_npz,
)
from vlmbench_plugins.models.vilbert.grid_features import (
    ResNetRegionExtractor,
    TorchvisionDetectorBoxes,
    grid_boxes,
)

BOXES = np.array([[0, 0, 100, 50], [50, 25, 200, 100]], dtype=np.float32)
FEATS = np.array([[1, 2], [3, 6]], dtype=np.float32)


def test_regions_follow_the_original_layout():
    regions = regions_from_detections(FEATS, BOXES, 200, 100, source="test")
    assert regions.features.tolist() == [[2, 4], [1, 2], [3, 6]]  # mean first
    expected = [[0, 0, 1, 1, 1], [0, 0, 0.5, 0.5, 0.25], [0.25, 0.25, 1, 1, 75 * 150 / 20000]]
    assert torch.allclose(regions.boxes, torch.tensor(expected))
    assert regions.image_size == (200, 100) and regions.source == "test"


def test_regions_are_cut_to_101():
    feats = np.random.default_rng(0).random((120, 4), dtype=np.float32)
    boxes = np.tile(np.array([[0, 0, 10, 10]], dtype=np.float32), (120, 1))
    regions = regions_from_detections(feats, boxes, 10, 10, source="test")
    assert regions.num_regions == MAX_REGIONS
    # the mean is over all detections, before the cut
    assert torch.allclose(regions.features[0], torch.from_numpy(feats.mean(0)), atol=1e-6)


def test_bad_detections_are_errors():
    with pytest.raises(ValueError, match="boxes"):
        regions_from_detections(FEATS, BOXES[:1], 200, 100, source="t")
    with pytest.raises(ValueError, match="no regions"):
        regions_from_detections(np.zeros((0, 2)), np.zeros((0, 4)), 200, 100, source="t")


def test_collate_pads_with_mask():
    a = regions_from_detections(FEATS, BOXES, 200, 100, source="t")
    b = regions_from_detections(FEATS[:1], BOXES[:1], 200, 100, source="t")
    batch = collate_regions([a, b])
    assert batch.input_imgs.shape == (2, 3, 2) and batch.image_loc.shape == (2, 3, 5)
    assert batch.image_attention_mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch.input_imgs[1, 2].eq(0).all()
    fixed = collate_regions([a, b], pad_to=MAX_REGIONS)
    assert fixed.input_imgs.shape == (2, MAX_REGIONS, 2) and fixed.image_attention_mask.sum() == 5
    with pytest.raises(ValueError, match="shorter"):
        collate_regions([a], pad_to=2)


def test_npz_reader_round_trip(tmp_path):
    save_regions_npz(tmp_path / "img1.npz", FEATS, BOXES, 200, 100, source="approximation: test boxes")
    reader = NumpyFeatureReader(tmp_path)
    assert isinstance(reader, RegionFeatureSource)
    assert "img1" in reader and "img2" not in reader
    regions = reader["img1"]
    assert regions.source == "approximation: test boxes"
    assert torch.allclose(regions.boxes, regions_from_detections(FEATS, BOXES, 200, 100, "x").boxes)
    with pytest.raises(KeyError, match="img2"):
        reader["img2"]


def test_npy_in_the_original_extractor_layout(tmp_path):
    info = {"bbox": BOXES, "num_boxes": 2, "objects": np.array([1, 2]), "image_width": 200, "image_height": 100,
            "cls_prob": np.ones((2, 3), dtype=np.float32), "image_id": "img7", "features": FEATS}  # fmt: skip
    np.save(tmp_path / "img7.npy", info)
    regions = NumpyFeatureReader(tmp_path, label="faithful: test")["img7"]
    assert regions.features.tolist() == [[2, 4], [1, 2], [3, 6]]
    assert regions.source == "faithful: test"


class _Exploit:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_code_is_refused(tmp_path):
    with pytest.raises(pickle.UnpicklingError, match="only numpy arrays"):
        safe_unpickle(pickle.dumps({"features": _Exploit()}))
    np.save(tmp_path / "bad.npy", np.array({"features": _Exploit()}, dtype=object), allow_pickle=True)
    with pytest.raises(SampleError, match="bad.npy: refusing to load .*only numpy arrays"):
        NumpyFeatureReader(tmp_path)["bad"]


def _write_lmdb(path, records):
    lmdb = pytest.importorskip("lmdb")
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for image_id, record in records.items():
            txn.put(image_id.encode(), pickle.dumps(record))
        txn.put(b"keys", pickle.dumps([k.encode() for k in records]))
    env.close()


def test_lmdb_reader_original_layout(tmp_path):
    feats = np.random.default_rng(1).random((3, 2048), dtype=np.float32)
    boxes = np.array([[0, 0, 10, 20], [5, 5, 40, 30], [1, 2, 3, 4]], dtype=np.float32)
    record = {"image_id": "42", "image_h": 30, "image_w": 40, "num_boxes": 3, "boxes": boxes,
              "features": feats.reshape(-1)}  # fmt: skip
    _write_lmdb(tmp_path / "feats.lmdb", {"42": record})
    reader = LmdbFeatureReader(tmp_path / "feats.lmdb", label="faithful: VG X-152")
    assert len(reader) == 1 and "42" in reader and 42 in reader and reader.keys() == ["42"]
    regions = reader["42"]
    assert regions.num_regions == 4 and regions.source == "faithful: VG X-152"
    assert torch.allclose(regions.features[0], torch.from_numpy(feats.mean(0)), atol=1e-6)
    assert torch.allclose(regions.boxes[2], torch.tensor([5 / 40, 5 / 30, 1.0, 1.0, 35 * 25 / 1200]))
    reader.close()


def test_lmdb_without_the_package_is_a_clear_error(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_lmdb(name, *args, **kwargs):
        if name == "lmdb":
            raise ImportError("No module named 'lmdb'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_lmdb)
    with pytest.raises(ImportError, match="pip install lmdb"):
        LmdbFeatureReader(tmp_path)


def test_grid_boxes_tile_the_image():
    boxes = grid_boxes(200, 100, columns=4, rows=2)
    assert boxes.shape == (8, 4)
    assert boxes[0].tolist() == [0, 0, 50, 50] and boxes[-1].tolist() == [150, 50, 200, 100]
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    assert float(areas.sum()) == 200 * 100


def _image(width=96, height=64, seed=0):
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def random_extractor():
    torch.manual_seed(0)
    return ResNetRegionExtractor(
        arch="resnet50", grid=(4, 3), min_size=64, max_size=128, allow_random_weights=True
    )


def test_resnet_grid_extractor(random_extractor):
    assert isinstance(random_extractor, RegionFeatureExtractor)
    assert not random_extractor.faithful
    assert random_extractor.label.startswith("approximation: torchvision resnet50")
    assert "not the VG X-152 detector" in random_extractor.label and "RANDOM" in random_extractor.label
    regions = random_extractor.extract([_image(), _image(50, 80, seed=1)])
    assert [r.num_regions for r in regions] == [13, 13]  # mean + 4x3 cells
    first = regions[0]
    assert first.features.shape == (13, 2048) and first.image_size == (96, 64)
    assert (first.features >= 0).all()  # post-ReLU like fc6
    assert first.boxes[0].tolist() == [0, 0, 1, 1, 1]
    assert torch.allclose(first.boxes[1:, 4].sum(), torch.tensor(1.0))  # cells tile the image
    assert torch.allclose(first.features[0], first.features[1:].mean(0), atol=1e-5)
    assert not torch.allclose(first.features[1], first.features[-1])
    batch = collate_regions(regions)
    assert batch.input_imgs.shape == (2, 13, 2048)


def test_resnet_weights_come_from_a_local_file(tmp_path, random_extractor):
    import torchvision

    with pytest.raises(ValueError, match="random weights are for tests only"):
        ResNetRegionExtractor(arch="resnet50")
    torch.manual_seed(3)
    net = torchvision.models.resnet50(weights=None)
    path = tmp_path / "resnet50.pth"
    torch.save(net.state_dict(), path)
    loaded = ResNetRegionExtractor(path, arch="resnet50", grid=(4, 3), min_size=64, max_size=128)
    assert "RANDOM" not in loaded.label
    assert torch.equal(loaded.body[0].weight, net.conv1.weight)
    with pytest.raises(ValueError, match="2048-channel"):
        ResNetRegionExtractor(path, arch="resnet18")


def test_box_proposer_boxes_are_pooled(random_extractor, monkeypatch):
    fixed = torch.tensor([[0.0, 0.0, 48.0, 32.0], [10.0, 10.0, 90.0, 60.0]])
    monkeypatch.setattr(random_extractor, "box_proposer", lambda image: fixed)
    regions = random_extractor.extract([_image()])[0]
    assert regions.num_regions == 3
    assert torch.allclose(regions.boxes[1], torch.tensor([0, 0, 0.5, 0.5, 0.25]))
    # no detections: the whole image is the one region
    monkeypatch.setattr(random_extractor, "box_proposer", lambda image: torch.zeros(0, 4))
    regions = random_extractor.extract([_image()])[0]
    assert regions.num_regions == 2 and regions.boxes[1].tolist() == [0, 0, 1, 1, 1]


def test_torchvision_detector_as_box_proposer():
    torch.manual_seed(0)
    proposer = TorchvisionDetectorBoxes(arch="fasterrcnn_mobilenet_v3_large_320_fpn", allow_random_weights=True,
                                        min_size=64, max_size=96, max_boxes=5, num_classes=3)  # fmt: skip
    boxes = proposer(_image())
    assert boxes.ndim == 2 and boxes.shape[1] == 4 and boxes.shape[0] <= 5
    extractor = ResNetRegionExtractor(arch="resnet50", min_size=64, max_size=128, box_proposer=proposer,
                                      allow_random_weights=True)  # fmt: skip
    assert "fasterrcnn_mobilenet_v3_large_320_fpn boxes" in extractor.label
    regions = extractor.extract([_image()])[0]
    assert 2 <= regions.num_regions <= 6 and regions.features.shape[1] == 2048
    with pytest.raises(ValueError, match="tests only"):
        TorchvisionDetectorBoxes()


def test_module_exports_label_constants():
    assert F.FAITHFUL_LABEL.startswith("faithful")
