"""How ``vlmbench plot`` and ``vlmbench leaderboard`` scale with the number of run folders.

Writes (or reuses, in ``--data-dir``) ``--runs`` synthetic run folders of one task in the study's shape,
as ``vlmbench run`` writes them: results.json with the study's eleven metric columns (values and 95%
intervals), five difficulty levels, provenance, and a predictions.jsonl of ``--samples`` answered
samples with per-sample Exact Match; model sizes spread over 50M..10B parameters, some runs of equal
size, a few without a parameter count. Then each command runs as a user runs it, in a process of its
own (``python -m vlmbench``), and its wall time and peak memory (the child's maximum resident set,
from ``wait4``) are reported.

    python benchmarks/analysis_at_scale.py                      # 100 and 1,000 runs
    python benchmarks/analysis_at_scale.py --runs 1000 --samples 300 --timeout 600
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

STUDY_METRICS = (
    "bertscore_precision",
    "bertscore_recall",
    "bertscore_f1",
    "bartscore_f",
    "sbert",
    "meteor",
    "exact_match",
    "average_mark",
    "wups_0.0",
    "wups_0.9",
    "wups_weighted",
)
LEVELS = (0, 1, 2, 3, 5)
WORDS = [
    "black",
    "white",
    "red",
    "blue",
    "green",
    "gray",
    "brown",
    "wood",
    "metal",
    "plastic",
    "round",
    "square",
    "sofa",
    "chair",
    "table",
    "lamp",
    "two",
    "three",
    "floral",
    "striped",
]


def _metric(value: float, n: int, rng: random.Random) -> dict:
    value = min(1.0, max(0.0, value))
    half = 0.03 + rng.uniform(0, 0.04)
    return {
        "value": value,
        "ci95": [max(0.0, value - half), min(1.0, value + half)],
        "n": n,
        "higher_is_better": True,
    }


def write_runs(root: Path, n_runs: int, n_samples: int) -> Path:
    """``n_runs`` run folders of task ``scale`` under ``root/runs`` (reused when already written)."""
    runs = root / f"runs-{n_runs}x{n_samples}"
    marker = runs / ".complete"
    if marker.exists():
        return runs
    shutil.rmtree(runs, ignore_errors=True)
    task_rng = random.Random(0)
    refs = [task_rng.randrange(len(WORDS)) for _ in range(n_samples)]
    for i in range(n_runs):
        rng = random.Random(i)
        skill = rng.uniform(0.2, 0.8)
        folder = runs / "scale" / f"model{i:04d}-{i:08x}"
        folder.mkdir(parents=True)
        by_level: dict[int, list[float]] = {}
        with open(folder / "predictions.jsonl", "w", encoding="utf-8") as fh:
            for s, ref in enumerate(refs):
                right = rng.random() < skill
                answer = WORDS[ref] if right else WORDS[rng.randrange(len(WORDS))]
                level = LEVELS[s % len(LEVELS)]
                by_level.setdefault(level, []).append(float(answer == WORDS[ref]))
                row = {
                    "sample_id": f"s{s:05d}",
                    "image_id": f"img{s % 97}",
                    "question": f"What is shown in {s}?",
                    "references": [WORDS[ref]],
                    "difficulty": level,
                    "prompt": f"What is shown in {s}?",
                    "status": "ok",
                    "raw": answer,
                    "answer": answer,
                    "scores": {"exact_match": float(answer == WORDS[ref])},
                }
                fh.write(json.dumps(row) + "\n")
        # Sizes over 50M..10B; every tenth run shares the previous one's size; a few have no count.
        size = None if i % 50 == 7 else int(5e7 * 200 ** rng.random())
        results = {
            "schema": "vlmbench.results/1",
            "status": "ok",
            "task": {
                "name": "scale",
                "version": "1",
                "hash": "0" * 16,
                "split": "test",
                "n_samples": n_samples,
                "n_scored": n_samples,
            },
            "model": {
                "name": f"model{i % 37}",
                "label": f"model{i % 37}[checkpoint=ckpt-{i:04d}]",
                "fingerprint": f"{i:016x}",
                "parameters": size,
            },
            "notes": [],
            "metrics": {m: _metric(skill + 0.02 * j, n_samples, rng) for j, m in enumerate(STUDY_METRICS)},
            "by_difficulty": {
                str(level): {
                    "n": len(v),
                    "weight": float(level + 1),
                    "metrics": {m: _metric(sum(v) / len(v), len(v), rng) for m in STUDY_METRICS},
                }
                for level, v in sorted(by_level.items())
            },
            "skipped_metrics": {},
            "config": {"seed": 0},
            "timing": {},
            "provenance": {
                "vlmbench_version": "0.1.0",
                "created": "2025-01-01T10:00:00+00:00",
                "command": f"vlmbench run -m model{i}",
            },
        }
        (folder / "results.json").write_text(json.dumps(results), encoding="utf-8")
    marker.touch()
    return runs


def measure(args: list[str], timeout: float, log: Path) -> tuple[float, float, float, int | None]:
    """(wall seconds, CPU seconds, peak RSS in MiB, exit status or None when stopped at ``timeout``) of
    one command; its messages go to ``log``. CPU seconds (user + system) say more than wall time on a
    machine shared with other work."""
    started = time.perf_counter()
    with open(log, "w", encoding="utf-8") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vlmbench", *args], stdout=subprocess.DEVNULL, stderr=err
        )
    status: int | None = None
    while True:
        pid, raw, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            status = os.waitstatus_to_exitcode(raw)
            break
        if time.perf_counter() - started > timeout:
            proc.kill()
            _, raw, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    proc.returncode = -9 if status is None else status  # reaped by wait4 above, not by Popen
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, status


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--samples", type=int, default=300, help="answered samples per run")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds before a command is stopped")
    ap.add_argument("--data-dir", type=Path, default=Path("/tmp/vlmbench-analysis-scale"))
    args = ap.parse_args()
    print(f"{'runs':>6} {'command':<12} {'wall s':>8} {'CPU s':>8} {'peak MiB':>9}  status")
    for n in args.runs:
        t0 = time.perf_counter()
        runs = write_runs(args.data_dir, n, args.samples)
        print(
            f"# {n} runs of {args.samples} samples in {runs} ({time.perf_counter() - t0:.1f} s to write or find)"
        )
        commands = {
            "leaderboard": ["leaderboard", str(runs), "--no-write"],
            "plot": ["plot", str(runs), "-o", str(args.data_dir / f"plots-{n}")],
        }
        for name, command in commands.items():
            log = args.data_dir / f"{name}-{n}.log"
            seconds, cpu, rss, status = measure(command, args.timeout, log)
            state = "stopped (timeout)" if status is None else f"exit {status}"
            if status:
                state += f" (see {log})"
            print(f"{n:>6} {name:<12} {seconds:8.1f} {cpu:8.1f} {rss:9.0f}  {state}", flush=True)


if __name__ == "__main__":
    main()
