"""What the harness costs: `vlmbench run` against a bare hand-written batched loop, side by side.

Both run the same BLIP model (the test suite's tiny checkpoint by default, or ``--pretrained DIR``)
with the same batch size and the same preprocessing (the plugin's own processor call and forward
pass) over N real ABO images: the bundled sample's 54, plus ``../shared/data/abo_images_256`` when
that folder exists. The bare loop reads and decodes each image, builds the batch, calls the model and
keeps the answers in a list. The harness adds what a benchmark needs: requests, hashing each image,
DataLoader workers, batches sorted by prompt length, an SQLite transaction per batch, answer filters,
metrics with bootstrap intervals and the artifacts.

Reported per variant (best of ``--repeats``, interleaved so that machine load hits all alike):

- loop samples/s: the model loop alone (harness: ``timing.loop_seconds`` of results.json), which is
  what scales with N; the target is harness >= 0.95x bare;
- end-to-end seconds: the whole ``evaluate()`` call without loading weights (task, loop, scoring,
  artifacts) against the bare loop;
- the effect of DataLoader workers (0, 1, 2) and of the cache (a rerun asks the model nothing).

    python benchmarks/harness_overhead.py                   # N = all images found, batch 16
    python benchmarks/harness_overhead.py --n 256 --batch-size 8 --threads 1
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED_IMAGES = REPO.parent / "shared" / "data" / "abo_images_256"
sys.path.insert(0, str(REPO / "tests"))

QUESTIONS = [
    "What colour is this product?",
    "What is it made of?",
    "What is this item?",
    "Which room would this be used in?",
]


def collect_images(n: int | None) -> list[tuple[Path, str]]:
    """(image root, relative path) pairs: the bundled sample first, then the shared folder if present."""
    roots = [REPO / "tasks" / "abo_sample" / "images"]
    if SHARED_IMAGES.is_dir():
        roots.append(SHARED_IMAGES)
    found = [(root, str(p.relative_to(root))) for root in roots for p in sorted(root.rglob("*.jpg"))]
    return found[:n] if n else found


def write_task(folder: Path, images: list[tuple[Path, str]]) -> Path:
    """One task whose image root holds symlinks to every image (two roots cannot share one task)."""
    root = folder / "images"
    rows = []
    for i, (src_root, rel) in enumerate(images):
        target = root / f"{i % 64:02d}" / f"{i:05d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((src_root / rel).read_bytes())
        rows.append(
            {
                "image_id": str(i),
                "path": str(target.relative_to(root)),
                "question": QUESTIONS[i % 4],
                "answer": "x",
                "difficulty": 0,
            }
        )
    with open(folder / "data.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (folder / "task.yaml").write_text(
        "task: overhead\nversion: 1\ndataset: {path: data.csv, image_root: images}\n", encoding="utf-8"
    )
    return folder / "task.yaml"


def bare_loop(model, task_dir: Path, batch_size: int) -> tuple[float, list[str]]:
    """The hand-written loop: read, decode, preprocess, generate; nothing else."""
    from PIL import Image

    from vlmbench.request import Batch, Request
    from vlmbench.spec import GenerationSpec

    with open(task_dir / "data.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    generation = GenerationSpec()
    answers: list[str] = []
    start = time.perf_counter()
    for i in range(0, len(rows), batch_size):
        chunk = rows[i : i + batch_size]
        requests = []
        for row in chunk:
            with Image.open(task_dir / "images" / row["path"]) as img:
                image = img.convert("RGB")
            requests.append(
                Request(
                    row["image_id"],
                    "generate",
                    row["question"],
                    row["question"],
                    row["path"],
                    row["image_id"],
                    image=image,
                )
            )
        batch = Batch(requests, model.collate(requests))
        answers.extend(model.generate(batch, generation))
    return time.perf_counter() - start, answers


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=None, help="number of images (default: all found)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the main process")
    parser.add_argument("--workers", default="0,1,2", help="DataLoader worker counts to measure")
    parser.add_argument("--pretrained", help="a BLIP VQA checkpoint folder (default: a tiny random one)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import vlmbench
    from vlmbench.plugins import load_plugins
    from vlmbench.registry import load_target

    work = Path(tempfile.mkdtemp(prefix="vlmbench-overhead-"))
    pretrained = args.pretrained
    if pretrained is None:
        import tiny_models

        pretrained = str(tiny_models.build_blip(work / "tiny-blip"))
    images = collect_images(args.n)
    task = write_task(work / "task", images)
    n = len(images)
    workers = [int(w) for w in args.workers.split(",")]

    plugins = load_plugins()
    entry = plugins.models.get("blip")
    model = load_target(entry.target).create(entry, {"pretrained": pretrained}, device="cpu")
    model.load()
    bare_loop(model, task.parent, args.batch_size)  # warm-up: first calls allocate

    best: dict[str, dict] = {}

    def keep(name: str, loop_s: float, total_s: float) -> None:
        old = best.get(name)
        if old is None or loop_s < old["loop"]:
            best[name] = {"loop": loop_s, "total": total_s}

    for r in range(args.repeats):
        seconds, bare_answers = bare_loop(model, task.parent, args.batch_size)
        keep("bare loop", seconds, seconds)
        for w in workers:
            t0 = time.perf_counter()
            result = vlmbench.evaluate(
                "blip", task, model_args={"pretrained": pretrained}, plugins=plugins, batch_size=args.batch_size,
                num_workers=w, cache=work / f"cache-{r}-{w}.sqlite", output_dir=work / "runs", progress=False,
            )  # fmt: skip
            total = time.perf_counter() - t0 - result.results["timing"]["load_seconds"]
            keep(f"vlmbench run, {w} workers", result.results["timing"]["loop_seconds"], total)
            if w == workers[0]:
                harness_answers = {
                    p["image_id"]: p["raw"]
                    for p in map(_json, (result.run_dir / "predictions.jsonl").read_text().splitlines())
                }
        t0 = time.perf_counter()
        rerun = vlmbench.evaluate(
            "blip", task, model_args={"pretrained": pretrained}, plugins=plugins, batch_size=args.batch_size,
            num_workers=workers[-1], cache=work / f"cache-{r}-{workers[-1]}.sqlite", output_dir=work / "runs", progress=False,
        )  # fmt: skip
        keep(
            "rerun from the cache", 0.0 if rerun.model_calls == 0 else float("inf"), time.perf_counter() - t0
        )
    same = sum(harness_answers[str(i)] == a for i, a in enumerate(bare_answers))

    bare = best["bare loop"]["loop"]
    print(f"\n{n} images, batch size {args.batch_size}, {args.threads} torch thread(s), BLIP ({pretrained})")
    print(f"answers identical between bare loop and harness: {same}/{n}\n")
    print("| variant | loop samples/s | ratio to bare loop | end-to-end seconds (weights loaded) |")
    print("|---|---|---|---|")
    for name, v in best.items():
        if name == "rerun from the cache":
            print(f"| {name} | (no model calls) | – | {v['total']:.2f} |")
            continue
        rate = n / v["loop"]
        print(f"| {name} | {rate:.1f} | {bare / v['loop']:.3f} | {v['total']:.2f} |")


def _json(line: str) -> dict:
    import json

    return json.loads(line)


if __name__ == "__main__":
    main()
