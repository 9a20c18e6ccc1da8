"""What a cached rerun, scoring and start-up cost: ``vlmbench`` against the least each has to do.

Every measurement is a fresh process, run side by side with the others, interleaved over ``--rounds``
rounds (each round starting one job later in the list); medians are reported. All processes share one
private vlmbench cache (``VLMBENCH_CACHE_DIR`` in a temporary folder), filled once before timing by a
first ``vlmbench run -m prior -t abo_sample`` (answers, the WordNet corpus built from the system copy,
the score cache). Offline (``VLMBENCH_OFFLINE=1``): metrics whose models are absent are skipped, as in
the test suite.

(a) **cached rerun**: ``vlmbench run -m prior -t abo_sample -q`` when every answer and every score is
    cached, against the *bare minimum* a rerun must do: a Python process that imports nothing but the
    standard library, reads the 225 stored answers from the prediction cache (SQLite), reads the task's
    CSV, hashes its 225 images (a rerun must check they are unchanged) and writes predictions.jsonl and
    results.json. It computes no metric.
(b) **scoring** the run's 225 answers with the task's default metrics (``score_records``, timed inside a
    fresh process that has imported vlmbench): with the score cache warm, and cold (an empty score cache:
    WordNet and the encoder are loaded and every score computed; also what ``--no-cache`` costs).
(c) **start-up**: ``vlmbench --help``, ``vlmbench list``, and an option error
    (``vlmbench run -m prior -t abo_sample -a k=abc``), against ``python -c pass``.

Targets (issue #27): (a) <= 3 s, (b) warm <= 1.5 s, (c) <= 1 s each.

    python benchmarks/scoring_cost.py --rounds 5
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TASK_DIR = REPO / "tasks" / "abo_sample"
VLMBENCH = [sys.executable, "-m", "vlmbench"]


# -- the bare minimum of a cached rerun (its own process: standard library only) --------------------------


def bare_main(cache: Path, out: Path) -> None:
    import csv

    with sqlite3.connect(cache / "predictions.sqlite") as db:
        answers = dict(db.execute("SELECT sample_id, raw FROM predictions"))
    with open(TASK_DIR / "abo_sample.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    images = {
        r["path"]: hashlib.sha256((TASK_DIR / "images" / r["path"]).read_bytes()).hexdigest() for r in rows
    }
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "predictions.jsonl", "w", encoding="utf-8") as fh:
        for sample_id, raw in sorted(answers.items()):
            fh.write(json.dumps({"sample_id": sample_id, "raw": raw}) + "\n")
    results = {"status": "ok", "n": len(rows), "answers": len(answers), "images": images}
    (out / "results.json").write_text(json.dumps(results), encoding="utf-8")


# -- scoring, timed inside a fresh process ----------------------------------------------------------------


def score_main(run_dir: Path) -> None:
    started = time.perf_counter()
    from vlmbench.artifacts.run_files import read_predictions
    from vlmbench.plugin.loading import load_plugins, resolve_task
    from vlmbench.plugin.metric import MetricContext
    from vlmbench.scoring.records import score_records
    from vlmbench.scoring.score_cache import default_score_cache_path
    from vlmbench.scoring.scorer import build_metrics

    plugins = load_plugins()
    task = resolve_task("abo_sample", plugins)
    context = MetricContext(difficulty_weights=task.spec.difficulty_weights, device="cpu")
    metrics = build_metrics(task.spec.metrics, plugins, context)
    records = read_predictions(run_dir / "predictions.jsonl")
    imported = time.perf_counter()
    scored = score_records(
        records, metrics, weights=task.spec.difficulty_weights, bootstrap_samples=task.spec.bootstrap_samples,
        seed=0, cache=default_score_cache_path(),
    )  # fmt: skip
    done = time.perf_counter()
    print(json.dumps({
        "scoring_seconds": done - imported, "before_seconds": imported - started,
        "by_metric": scored.seconds, "metrics": scored.metrics, "skipped": sorted(scored.skipped),
    }))  # fmt: skip


# -- the benchmark ------------------------------------------------------------------------------------------


def timed(argv: list[str], env: dict[str, str], expect: int = 0) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if proc.returncode != expect:
        sys.exit(f"{' '.join(argv)} exited {proc.returncode}, expected {expect}:\n{proc.stderr[-2000:]}")
    return seconds, proc.stdout


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bare"]:
        return bare_main(Path(argv[1]), Path(argv[2]))
    if argv[:1] == ["score"]:
        return score_main(Path(argv[1]))
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keep", help="work folder to use and keep (default: a new temporary one)")
    args = parser.parse_args(argv)

    work = Path(args.keep or tempfile.mkdtemp(prefix="vlmbench-scoring-cost-"))
    cache, out = work / "cache", work / "runs"
    env = {**os.environ, "VLMBENCH_CACHE_DIR": str(cache), "VLMBENCH_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("VLMBENCH_SCORE_CACHE", None)
    rerun = [*VLMBENCH, "run", "-m", "prior", "-t", "abo_sample", "-o", str(out), "-q"]
    first, _ = timed(rerun, env)  # answers, WordNet, score cache
    run_dir = next(out.rglob("results.json")).parent
    reference = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))["metrics"]
    cold_env = {**env, "VLMBENCH_SCORE_CACHE": str(work / "cold.sqlite")}

    def cold_score() -> tuple[float, str]:
        (work / "cold.sqlite").unlink(missing_ok=True)
        return timed([sys.executable, __file__, "score", str(run_dir)], cold_env)

    jobs = {
        "(a) cached rerun: vlmbench run -m prior -t abo_sample": lambda: timed(rerun, env),
        "(a) bare minimum of a rerun": lambda: timed([sys.executable, __file__, "bare", str(cache), str(work / "bare")], env),
        "(b) scoring 225 samples, warm score cache": lambda: timed([sys.executable, __file__, "score", str(run_dir)], env),
        "(b) scoring 225 samples, cold score cache": cold_score,
        "(c) vlmbench --help": lambda: timed([*VLMBENCH, "--help"], env),
        "(c) vlmbench list": lambda: timed([*VLMBENCH, "list"], env),
        "(c) option error (-a k=abc)": lambda: timed([*VLMBENCH, "run", "-m", "prior", "-t", "abo_sample", "-a", "k=abc"], env, 2),
        "(c) python -c pass": lambda: timed([sys.executable, "-c", "pass"], env),
    }  # fmt: skip
    names = list(jobs)
    wall: dict[str, list[float]] = {n: [] for n in names}
    inside: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(args.rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            seconds, stdout = jobs[name]()
            wall[name].append(seconds)
            if name.startswith("(b)"):
                inside[name].append(json.loads(stdout))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    report(wall, inside, reference, first, args.rounds)
    print(f"\nfiles: {work}")


def report(wall: dict, inside: dict, reference: dict, first: float, rounds: int) -> None:
    med = statistics.median
    w = {name: med(v) for name, v in wall.items()}
    print(
        f"\nmedians of {rounds} interleaved rounds, {os.cpu_count()} CPU cores; first (uncached) run {first:.2f} s\n"
    )
    print("| measurement | wall s | ratio | target |")
    print("|---|---|---|---|")
    rerun, bare = w["(a) cached rerun: vlmbench run -m prior -t abo_sample"], w["(a) bare minimum of a rerun"]
    print(
        f"| (a) cached rerun of prior on abo_sample | {rerun:.2f} | {rerun / bare:.1f}x the bare minimum ({bare:.2f} s) | <= 3 s |"
    )
    for cache in ("warm", "cold"):
        name = f"(b) scoring 225 samples, {cache} score cache"
        scoring = med(x["scoring_seconds"] for x in inside[name])
        before = med(x["before_seconds"] for x in inside[name])
        target = "<= 1.5 s" if cache == "warm" else "-"
        print(
            f"| (b) scoring, {cache} score cache (process {w[name]:.2f} s, imports and set-up {before:.2f} s) | {scoring:.2f} | - | {target} |"
        )
    python = w["(c) python -c pass"]
    for name in ("(c) vlmbench --help", "(c) vlmbench list", "(c) option error (-a k=abc)"):
        print(
            f"| {name} | {w[name]:.2f} | {w[name] / python:.1f}x python -c pass ({python:.2f} s) | <= 1 s |"
        )
    for cache in ("warm", "cold"):
        runs = inside[f"(b) scoring 225 samples, {cache} score cache"]
        by_metric = {m: med(x["by_metric"][m] for x in runs) for m in runs[0]["by_metric"]}
        same = all(x["metrics"] == reference for x in runs)
        print(
            f"\nscoring seconds by metric, {cache} (medians): "
            + ", ".join(f"{m} {s:.2f}" for m, s in by_metric.items())
        )
        print(f"  metrics equal to the first run's results.json, bit for bit: {same}; skipped: {', '.join(runs[0]['skipped']) or 'none'}")  # fmt: skip


if __name__ == "__main__":
    main()
