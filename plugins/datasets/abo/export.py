"""Writing the curated set: CSV files in the study's format and a Hugging Face dataset.

- ``qa_all.csv``: every accepted row, ``image_id,path,question,answer,difficulty,generator``.
- ``splits/{train,val,test}.csv``: the study's columns ``image_id,path,question,answer,difficulty``
  (``path`` relative to ABO's ``images/small``).
- ``hf/``: a ``DatasetDict`` (``save_to_disk``) with one split per CSV and the columns
  ``sample_id,image_id,path,image,question,answer,difficulty``; ``image`` is an ``Image`` feature whose
  bytes are stored in the dataset, so it is self-contained. ``sample_id`` is stable: a hash of the image
  id and the normalised question.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from vlmbench.api import confined_path, vqa_normalize, write_text
from vlmbench_plugins.datasets.abo.curation import Accepted

STUDY_COLUMNS = ("image_id", "path", "question", "answer", "difficulty")
ALL_COLUMNS = (*STUDY_COLUMNS, "generator")
HF_COLUMNS = ("sample_id", "image_id", "path", "image", "question", "answer", "difficulty")


def sample_id(image_id: str, question: str) -> str:
    return hashlib.sha1(f"{image_id}\x00{vqa_normalize(question)}".encode()).hexdigest()[:16]


def write_csv(path: Path, rows: Sequence[Accepted], columns: Sequence[str] = STUDY_COLUMNS) -> Path:
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([getattr(row, c) for c in columns])
    write_text(Path(path), buf.getvalue())
    return Path(path)


def write_hf(folder: Path, splits: Mapping[str, Sequence[Accepted]], image_root: Path) -> Path:
    """Save the splits as a ``DatasetDict`` in ``folder`` (replaced as a whole, never half-written).

    Rows are streamed into Arrow files (memory stays flat however many images there are), and each
    split's fingerprint is a hash of its content, so the same rows always give the same dataset
    identity (which keys the prediction cache of the runs that read it).
    """
    import datasets
    from datasets.arrow_reader import ArrowReader
    from datasets.arrow_writer import ArrowWriter

    features = datasets.Features(
        {
            "sample_id": datasets.Value("string"),
            "image_id": datasets.Value("string"),
            "path": datasets.Value("string"),
            "image": datasets.Image(),
            "question": datasets.Value("string"),
            "answer": datasets.Value("string"),
            "difficulty": datasets.Value("int32"),
        }
    )
    folder = Path(folder)
    build = folder.with_name(f".{folder.name}.build")
    tmp = folder.with_name(f".{folder.name}.tmp")
    old = folder.with_name(f".{folder.name}.old")
    for leftover in (build, tmp):
        if leftover.exists():
            shutil.rmtree(leftover)
    build.mkdir(parents=True)
    try:
        parts = {}
        for name, rows in splits.items():
            digest = hashlib.sha256()
            arrow = build / f"{name}.arrow"
            with ArrowWriter(features=features, path=str(arrow)) as writer:
                for r in rows:
                    data = confined_path(Path(image_root), r.path).read_bytes()
                    example = {
                        "sample_id": sample_id(r.image_id, r.question),
                        "image_id": r.image_id,
                        "path": r.path,
                        "image": {"bytes": data, "path": Path(r.path).name},
                        "question": r.question,
                        "answer": r.answer,
                        "difficulty": r.difficulty,
                    }
                    writer.write(features.encode_example(example))
                    fields = [example[c] for c in ("sample_id", "path", "question", "answer")]
                    digest.update(
                        "\x00".join([*fields, str(r.difficulty), hashlib.sha256(data).hexdigest()]).encode()
                    )
                    digest.update(b"\x01")
                writer.finalize()
            table = ArrowReader.read_table(str(arrow))
            parts[name] = datasets.Dataset(
                table, split=datasets.NamedSplit(name), fingerprint=digest.hexdigest()[:16]
            )
        datasets.DatasetDict(parts).save_to_disk(str(tmp))
        del parts
    finally:
        shutil.rmtree(build, ignore_errors=True)
    if folder.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(folder, old)
    os.replace(tmp, folder)
    if old.exists():
        shutil.rmtree(old)
    return folder
