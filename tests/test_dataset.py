import json
from pathlib import Path

import pytest
from PIL import Image

from vlmbench.errors import AssetMissingError, DataError
from vlmbench.tasks.dataset import ImageSource, load_split
from vlmbench.tasks.images import ImageProblem, decode_image
from vlmbench.tasks.spec import Columns, DatasetSpec

from vlmbench_testing import SHARED, make_images


def _csv(tmp_path: Path, text: str, name="d.csv") -> DatasetSpec:
    (tmp_path / name).write_bytes(text.encode() if isinstance(text, str) else text)
    return DatasetSpec(path=str(tmp_path / name), image_root=str(tmp_path))


def test_seed_format_loads_with_stable_ids(tmp_path):
    spec = _csv(
        tmp_path,
        "image_id,path,question,answer,difficulty\nA1,aa/x.jpg,What colour?,Red,0\nA1,aa/x.jpg,What material?,Wood,1\n",
    )
    loaded, _ = load_split(spec, None)
    assert [s.answers for s in loaded.samples] == [("Red",), ("Wood",)]
    assert [s.difficulty for s in loaded.samples] == [0, 1]
    assert loaded.samples[0].image_id == "A1" and loaded.samples[0].where.endswith("d.csv:2")
    # ids depend on (image, question), not on the row order
    spec2 = _csv(
        tmp_path,
        "image_id,path,question,answer,difficulty\nA1,aa/x.jpg,What material?,Wood,1\nA1,aa/x.jpg,What colour?,Red,0\n",
        "e.csv",
    )
    again, _ = load_split(spec2, None)
    assert {s.id for s in again.samples} == {s.id for s in loaded.samples}


def test_row_problems_are_reported_not_dropped(tmp_path):
    spec = _csv(
        tmp_path,
        "image_id,path,question,answer,difficulty\n"
        "A,a.jpg,Q1?,,0\n"  # empty reference
        "A,a.jpg,,red,0\n"  # empty question
        "A,a.jpg,Q3?,red,hard\n"  # bad difficulty
        "A,a.jpg,Q4?,red,2.0\n",  # fine: 2.0 is an integer
    )
    loaded, _ = load_split(spec, None)
    assert [p.reason for p in loaded.problems] == ["empty_reference", "empty_question", "bad_difficulty"]
    assert ":2:" in loaded.problems[0].message + ":" or "d.csv:2" in loaded.problems[0].message
    assert len(loaded.samples) == 1 and loaded.samples[0].difficulty == 2


def test_duplicate_ids_with_id_column(tmp_path):
    spec = _csv(tmp_path, "id,path,question,answer\n1,a.jpg,Q?,red\n1,b.jpg,Q?,blue\n")
    spec.columns = Columns(id="id", image_id=None, difficulty=None)
    loaded, _ = load_split(spec, None)
    assert len(loaded.samples) == 1
    assert loaded.problems[0].reason == "duplicate_id" and "line 2" in loaded.problems[0].message


def test_malformed_rows_are_problems_naming_file_and_line(tmp_path):
    spec = _csv(
        tmp_path,
        b"image_id,path,question,answer,difficulty\nA,a.jpg,Q?,red,0\nA,a.jpg,Q\xff?,red,0\nA,a.jpg,Q?,red\nB,b.jpg,Q2?,blue,1\n",
    )
    loaded, _ = load_split(spec, None)
    assert [(p.reason, p.message.split(": ")[0][-7:]) for p in loaded.problems] == [
        ("bad_encoding", "d.csv:3"),
        ("malformed_row", "d.csv:4"),
    ]
    assert [s.answers for s in loaded.samples] == [("red",), ("blue",)]
    assert loaded.samples[1].where.endswith("d.csv:5")  # line numbers survive the bad lines
    (tmp_path / "d.jsonl").write_text(
        '{"path": "a.jpg", "question": "Q?", "answer": "red"}\n{"path": oops}\n[1, 2]\n'
    )
    loaded, _ = load_split(DatasetSpec(path=str(tmp_path / "d.jsonl")), None)
    assert [p.message.split(" ", 1)[0][-10:] for p in loaded.problems] == ["d.jsonl:2:", "d.jsonl:3:"]
    assert len(loaded.samples) == 1


def test_file_level_errors(tmp_path):
    spec = _csv(tmp_path, "image_id,path,query,answer,difficulty\nA,a.jpg,Q?,red,0\n")
    with pytest.raises(
        DataError, match=r"column 'question' for 'question' not found.*dataset.columns.question"
    ):
        load_split(spec, None)
    with pytest.raises(DataError, match="the file is empty"):
        load_split(_csv(tmp_path, ""), None)
    with pytest.raises(AssetMissingError, match="does not exist"):
        load_split(DatasetSpec(path=str(tmp_path / "nope.csv")), None)


def test_jsonl_with_mapping_multiple_references_and_splits(tmp_path):
    rows = [
        {"img": "a.jpg", "q": "Seat?", "refs": ["sofa", "couch"], "level": 1, "part": "test"},
        {"img": "b.jpg", "q": "Colour?", "refs": ["red"], "level": 0, "part": "train"},
    ]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    spec = DatasetSpec(
        path=str(tmp_path / "d.jsonl"),
        columns=Columns(
            image="img", question="q", answer="refs", difficulty="level", image_id=None, split="part"
        ),
    )
    test, _ = load_split(spec, "test")
    assert [s.answers for s in test.samples] == [("sofa", "couch")]
    assert test.samples[0].image_id == "a"
    train, _ = load_split(spec, "train")
    assert [s.question for s in train.samples] == ["Colour?"]
    with pytest.raises(DataError, match="names no split column"):
        load_split(
            DatasetSpec(
                path=str(tmp_path / "d.jsonl"), columns=Columns(image="img", question="q", answer="refs")
            ),
            "test",
        )


def test_hf_dataset_with_image_feature(tmp_path):
    datasets = pytest.importorskip("datasets")
    make_images(tmp_path / "imgs", 2)
    paths = sorted(str(p) for p in (tmp_path / "imgs").rglob("*.jpg"))
    ds = datasets.Dataset.from_dict(
        {"image": paths, "question": ["Colour?", "Colour?"], "answer": ["red", "green"], "difficulty": [0, 1]}
    ).cast_column("image", datasets.Image())
    datasets.DatasetDict({"test": ds}).save_to_disk(str(tmp_path / "hf"))
    spec = DatasetSpec(path=str(tmp_path / "hf"), format="hf", columns=Columns(image="image", image_id=None))
    loaded, source = load_split(spec, "test")
    assert [s.answers for s in loaded.samples] == [("red",), ("green",)]
    data = source.read(loaded.samples[1].image)
    assert decode_image(data).getpixel((5, 5))[1] > 120  # the green image
    assert loaded.content_hash
    with pytest.raises(DataError, match="no split 'val'"):
        load_split(spec, "val")


def test_image_paths_are_confined_to_the_root(tmp_path):
    root = tmp_path / "root"
    make_images(root, 1)
    (tmp_path / "secret.jpg").write_bytes((root / "00" / "img000.jpg").read_bytes())
    (root / "link.jpg").symlink_to(tmp_path / "secret.jpg")
    source = ImageSource(str(root))
    assert source.read("00/img000.jpg")
    for bad in ["../secret.jpg", "/etc/passwd", "00/../../secret.jpg", "link.jpg"]:
        with pytest.raises(ImageProblem) as exc:
            source.read(bad)
        assert exc.value.reason == "image_outside_root"
    with pytest.raises(ImageProblem) as exc:
        source.read("00/none.jpg")
    assert exc.value.reason == "missing_image"


def test_image_decoding_modes_and_failures(tmp_path):
    import io

    import numpy as np

    def encode(img, fmt="PNG"):
        buf = io.BytesIO()
        img.save(buf, fmt)
        return buf.getvalue()

    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent -> white background
    assert decode_image(encode(rgba)).getpixel((0, 0)) == (255, 255, 255)
    grey16 = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert decode_image(encode(grey16)).getpixel((0, 0)) == (255, 255, 255)
    half16 = Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16))
    assert decode_image(encode(half16)).getpixel((0, 0))[0] in (127, 128)
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))
    assert decode_image(encode(cmyk, "JPEG")).mode == "RGB"
    full = encode(Image.new("RGB", (64, 64), (1, 2, 3)), "JPEG")
    for data, reason in [
        (b"", "empty_image"),
        (b"not an image", "corrupt_image"),
        (full[: len(full) // 2], "corrupt_image"),
    ]:
        with pytest.raises(ImageProblem) as exc:
            decode_image(data)
        assert exc.value.reason == reason
    with pytest.raises(ImageProblem) as exc:
        decode_image(full, max_pixels=1000)
    assert exc.value.reason == "image_too_large"


@pytest.mark.skipif(not (SHARED / "data" / "seed_project" / "dataset_csv").exists(), reason="needs ../shared")
def test_real_seed_csv_loads_without_mapping():
    spec = DatasetSpec(path=str(SHARED / "data" / "seed_project" / "dataset_csv" / "1.csv"))
    loaded, _ = load_split(spec, None)
    assert len(loaded.samples) > 1000
    assert {s.difficulty for s in loaded.samples} <= {0, 1, 2, 3, 4, 5}
