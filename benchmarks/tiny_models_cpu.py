"""CPU throughput of every built-in model plugin on its tiny test checkpoint.

Builds the tiny checkpoints of the test suite (``tests/tiny_models.py``), a task of generated
256x256 product-like images (the size of the resized ABO images) and runs each plugin through
``vlmbench.evaluation.runner.evaluate`` (the code path of ``vlmbench run``) for generate and rank requests at
a few batch sizes. Prints a Markdown table of samples per second, measured over the model loop
(image decoding in DataLoader workers, preprocessing, model calls, storing), weights loading excluded.

The tiny models have about 0.1M parameters: the numbers measure the harness and the libraries'
per-call overhead, not the real models (whose cost is dominated by their size; see docs/models.md).

    python benchmarks/tiny_models_cpu.py                     # all plugins, batch sizes 1 and 8
    python benchmarks/tiny_models_cpu.py --threads 1 --samples 96 --models blip,clip
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import tiny_models  # noqa: E402

MODELS = ("blip", "blip2", "qwen2.5-vl", "smolvlm", "clip")
QUESTIONS = [
    ("What colour is the product?", "red"),
    ("Is it made of wood?", "yes"),
    ("How many chairs are shown in this picture?", "two"),
    ("Which room is this item used in?", "kitchen"),
]


def make_task(folder: Path, n: int) -> dict[str, Path]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        rel = f"{i % 16:02x}/img{i}.jpg"
        (folder / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 255, size=3)
        noise = rng.integers(-40, 40, size=(256, 256, 3))
        pixels = np.clip(base + noise, 0, 255).astype("uint8")
        Image.fromarray(pixels).save(folder / "images" / rel, quality=90)
        question, answer = QUESTIONS[i % len(QUESTIONS)]
        rows.append(
            {"image_id": f"img{i}", "path": rel, "question": question, "answer": answer, "difficulty": 0}
        )
    with open(folder / "data.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    common = "version: 1\ndataset: {path: data.csv, image_root: images}\nbootstrap_samples: 0\n"
    tasks = {
        "generate": "task: bench_generate\nrequest_type: generate\ngeneration: {max_new_tokens: 10}\n",
        "rank": "task: bench_rank\nrequest_type: rank\ncandidates: {source: task_answers}\n",
    }
    out = {}
    for kind, text in tasks.items():
        path = folder / f"bench_{kind}.yaml"
        path.write_text(text + common, encoding="utf-8")
        out[kind] = path
    return out


def measure(model: str, task: Path, ckpt: Path, batch_size: int, workers: int, out: Path) -> float:
    from vlmbench.evaluation.runner import evaluate

    result = evaluate(
        model,
        task,
        model_args={"pretrained": str(ckpt)},
        batch_size=batch_size,
        num_workers=workers,
        cache=False,
        progress=False,
        output_dir=out,
        metrics=["exact_match"],
    )
    timing = result.results["timing"]
    n = result.results["task"]["n_samples"]
    return n / (timing["loop_seconds"] - timing["load_seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (the CLI default)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=3, help="report the best of this many runs")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="vlmbench-bench-") as tmp:
        run(args, Path(tmp))


def run(args: argparse.Namespace, root: Path) -> None:
    import torch

    tasks = make_task(root / "task", args.samples)
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {args.workers} DataLoader workers, {args.samples} samples, "
        f"best of {args.repeats}\n",
        file=sys.stderr,
    )
    header = "| model | parameters | request | " + " | ".join(f"batch {b}" for b in sizes) + " |"
    lines = [header, "|" + "---|" * (3 + len(sizes))]
    for model in args.models.split(","):
        ckpt = tiny_models.build(model, root / "checkpoints")
        kinds = ["rank"] if model == "clip" else ["generate", "rank"]
        for kind in kinds:
            cells = []
            for b in sizes:
                measure(model, tasks[kind], ckpt, b, args.workers, root / "runs")  # warm-up
                best = max(
                    measure(model, tasks[kind], ckpt, b, args.workers, root / "runs")
                    for _ in range(args.repeats)
                )
                cells.append(f"{best:.1f}")
            params = _parameters(model, ckpt)
            lines.append(f"| {model} | {params / 1e3:.0f}K | {kind} | " + " | ".join(cells) + " |")
            print(lines[-1], file=sys.stderr)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print("\n".join(lines))
    print(
        f"\nsamples/s, best of {args.repeats}; {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
        f"{args.workers} DataLoader workers, {args.samples} samples; load average {load}; "
        f"measured {time.strftime('%Y-%m-%d')}"
    )


def _parameters(model: str, ckpt: Path) -> int:
    from vlmbench.plugin.loading import load_plugins
    from vlmbench.plugin.registry import load_target

    entry = load_plugins().models.get(model)
    instance = load_target(entry.target).create(entry, {"pretrained": str(ckpt)})
    instance.load()
    return instance.describe()["parameters"]


if __name__ == "__main__":
    main()
