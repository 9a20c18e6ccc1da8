"""How fast ``vlmbench view`` answers at scale: 80,000 samples answered by 8 models, generated once.

Writes (or reuses, in ``--data-dir``) a task of ``--samples`` samples over ``--images`` small JPEG
images, and ``--models`` run folders with predictions.jsonl (exact_match, wups_0.0 and sbert per sample)
and results.json as ``vlmbench run`` writes them. Then, as a user would: the app is started on a free
localhost port and pages are fetched over HTTP.

Reported: loading the runs (reading and checking every predictions.jsonl, building the columns), the
first page (loading + the first request: what a user waits for after starting the command), and
the median and slowest of ``--repeat`` requests for each kind of page: paging, a difficulty and
right/wrong filter, models disagree, a text search, a sort by a score, two runs side by side (its first
request pairs the runs as ``compare`` does; later ones reuse the pairing) and a thumbnail.

    python benchmarks/explorer_pages.py                     # 80,000 x 8, data in /tmp/vlmbench-explorer
    python benchmarks/explorer_pages.py --samples 5000 --models 3
"""

from __future__ import annotations

import argparse
import gc
import resource
import statistics
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
from PIL import Image

from vlmbench.artifacts.run_files import write_json, write_jsonl

WORDS = ["black", "white", "red", "blue", "green", "gray", "brown", "wood", "metal", "plastic", "round",
         "square", "sofa", "chair", "table", "lamp", "two", "three", "floral", "striped"]  # fmt: skip


def generate(folder: Path, n: int, n_models: int, n_images: int) -> Path:
    """The task's images and the run folders under ``folder`` (skipped when they are there already)."""
    runs = folder / "runs"
    marker = folder / f"done-{n}-{n_models}-{n_images}"
    if marker.exists():
        return runs
    rng = np.random.default_rng(0)
    images = []
    for i in range(n_images):
        rel = f"{i % 256:02x}/img{i:05d}.jpg"
        (folder / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (256, 256), tuple(int(x) for x in rng.integers(0, 255, 3))).save(
            folder / "images" / rel
        )
        images.append(rel)
    refs = rng.integers(0, len(WORDS), n)
    difficulty = rng.integers(0, 6, n)
    for m in range(n_models):
        skill = 0.3 + 0.08 * m
        answers = np.where(rng.random(n) < skill, refs, rng.integers(0, len(WORDS), n))
        rows = []
        for i in range(n):
            right = float(answers[i] == refs[i])
            rows.append({
                "sample_id": f"s{i:06d}", "image_id": f"i{i % n_images}", "image": images[i % n_images],
                "question": f"What is shown in picture {i}?", "references": [WORDS[refs[i]]],
                "difficulty": int(difficulty[i]), "prompt": f"What is shown in picture {i}?", "status": "ok",
                "raw": WORDS[answers[i]], "answer": WORDS[answers[i]],
                "scores": {"exact_match": right, "wups_0.0": max(right, 0.4), "sbert": 0.5 + right / 2},
            })  # fmt: skip
        run = runs / "bench" / f"model{m}-{m:08x}"
        write_jsonl(run / "predictions.jsonl", rows)
        em = float(np.mean(answers == refs))
        metric = {"value": em, "ci95": [em, em], "n": n, "higher_is_better": True}
        write_json(run / "results.json", {
            "schema": "vlmbench.results/1", "status": "ok",
            "task": {"name": "bench", "version": "1", "hash": "0" * 16, "n_samples": n, "n_scored": n,
                     "image_root": str(folder / "images")},
            "model": {"name": f"model{m}", "label": f"model{m}", "fingerprint": f"{m:016x}"},
            "metrics": {"exact_match": metric, "wups_0.0": metric, "sbert": metric, "average_mark": metric},
        })  # fmt: skip
    marker.touch()
    return runs


def fetch(url: str) -> float:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url) as response:
        response.read()
        assert response.status == 200, url
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=80_000)
    ap.add_argument("--models", type=int, default=8)
    ap.add_argument("--images", type=int, default=2_000)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--data-dir", type=Path, default=Path("/tmp/vlmbench-explorer"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    runs = generate(args.data_dir, args.samples, args.models, args.images)
    print(
        f"data: {args.samples} samples x {args.models} models ({time.perf_counter() - t0:.1f} s to write or find)"
    )

    from werkzeug.serving import make_server

    from vlmbench.analysis.explorer import load_explorer
    from vlmbench.analysis.explorer_app import create_app

    t0 = time.perf_counter()
    explorer = load_explorer([runs])
    loaded = time.perf_counter() - t0
    gc.freeze()  # as `vlmbench view` does before serving
    server = make_server("127.0.0.1", 0, create_app(explorer), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}/"
    first = fetch(base)
    print(
        f"loading the runs: {loaded:.2f} s; first page: {loaded + first:.2f} s (its request {first * 1000:.0f} ms)"
    )
    pages = {
        "page 2..": [("page", str(p)) for p in range(2, 2 + args.repeat)],
        "difficulty 5, model0 wrong": [("difficulty", "5"), ("outcome", "model0=wrong")],
        "models disagree": [("disagree", "1")],
        "search": [("q", "picture 123")],
        "sort by sbert of model3": [("sort", "sbert:model3"), ("order", "desc")],
        "model0 vs model7": [("pair", "model0 vs model7")],
    }
    print(f"\n{'page':<30} {'first ms':>9} {'median ms':>10} {'max ms':>8}")
    for name, fields in pages.items():
        if name == "page 2..":
            times = [fetch(base + "?" + urlencode([f])) for f in fields]
        else:
            times = [fetch(base + "?" + urlencode(fields)) for _ in range(args.repeat)]
        print(
            f"{name:<30} {times[0] * 1000:9.0f} {statistics.median(times) * 1000:10.0f} {max(times) * 1000:8.0f}"
        )
    thumbs = [fetch(f"{base}thumb/0/{i % 256:02x}/img{i:05d}.jpg") for i in range(args.repeat)]
    print(
        f"{'thumbnail (new)':<30} {thumbs[0] * 1000:9.0f} {statistics.median(thumbs) * 1000:10.0f} {max(thumbs) * 1000:8.0f}"
    )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"\npeak memory of the process: {rss:.1f} GiB")
    server.shutdown()


if __name__ == "__main__":
    main()
