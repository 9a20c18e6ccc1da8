"""Metric speed at the study's scale: WUPS, SBERT and BERTScore on ~80k answers, side by side in one run.

Predictions are a seeded shuffle of the references (the seed study's answers, read from
``../shared/data/seed_project/dataset_csv/*.csv`` when present, else from ``--data``; without either, a
synthetic Zipf-distributed answer list of the same size is used and the output says so).

- WUPS: vlmbench's metric through the scoring path (unique pairs, memoised words, synset pairs and word
  pairs in both directions) against a straightforward per-pair implementation of the reference
  definition on nltk (every pair computed from scratch, Wu-Palmer in both directions, both thresholds from
  those similarities). Values must be identical. Target: >= 20x faster.
- SBERT: vlmbench's metric through the scoring path against encoding only the distinct strings once with
  the same model and batch size (the lower bound for any implementation). Target: <= 1.2x that time.
- BERTScore: strings the encoder sees through the scoring path (all distinct pairs in one bert-score call)
  against calling bert-score per chunk of 4,096 distinct pairs (bert-score deduplicates within a call
  only), counted at the encoder's input, with the time of each and the largest difference in values. The
  encoder is the packaged all-MiniLM-L6-v2 unless ``--bertscore-model`` names another (roberta-large when
  its weights are at hand); the counts do not depend on it.

Model and WordNet loading happen once, before any timing. Run from the repository root::

    python benchmarks/metrics_speed.py              # full run (the per-pair WUPS baseline takes minutes)
    python benchmarks/metrics_speed.py --naive-limit 5000   # time the baseline on a sample, extrapolate
    python benchmarks/metrics_speed.py --skip wups --skip sbert  # the BERTScore counts only
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SEED_DATA = REPO.parent / "shared" / "data" / "seed_project" / "dataset_csv"
# The plain per-pair reference implementation is the one the WUPS tests check against.
sys.path.insert(0, str(REPO / "tests" / "metrics"))
from wups_reference import reference_wups  # noqa: E402


def load_answers(folder: Path | None, n_synthetic: int = 80336) -> tuple[list[str], str]:
    if folder is not None and folder.is_dir():
        answers = []
        for path in sorted(glob.glob(str(folder / "*.csv"))):
            with open(path, newline="", encoding="utf-8") as fh:
                answers += [row["answer"] for row in csv.DictReader(fh)]
        if answers:
            return answers, f"{len(answers)} answers from {folder}"
    words = ["black", "white", "red", "blue", "green", "gray", "brown", "beige", "pink", "silver", "gold", "wood", "metal", "plastic", "glass", "leather", "cotton", "rubber", "steel", "ceramic", "round", "square", "oval", "rectangular", "sofa", "chair", "table", "lamp", "shoe", "bag", "case", "phone", "two", "three", "four", "one", "none", "floral", "striped", "solid", "matte", "glossy"]  # fmt: skip
    rng = np.random.default_rng(0)
    weights = 1.0 / np.arange(1, len(words) + 1)
    picks = rng.choice(len(words), size=n_synthetic, p=weights / weights.sum())
    return [words[i] for i in picks], f"{n_synthetic} synthetic answers (seed data not found)"


def score_through_vlmbench(names_options, preds, refs, device):
    from vlmbench.plugin.loading import load_plugins
    from vlmbench.plugin.metric import MetricContext
    from vlmbench.scoring.scorer import build_metrics, score
    from vlmbench.tasks.spec import MetricSpec

    context = MetricContext({}, 0, device)
    metrics = build_metrics([MetricSpec(n, o) for n, o in names_options], load_plugins(), context)
    for m in metrics:
        m.setup()  # assets load before the clock starts
    t0 = time.perf_counter()
    result = score(metrics, preds, [[r] for r in refs], [None] * len(preds), weights={},
                   bootstrap_samples=0, seed=0)  # fmt: skip
    return time.perf_counter() - t0, result, metrics


def bench_wups(preds, refs, naive_limit, rows, figures):
    from vlmbench.scoring.assets import find_wordnet, load_wordnet

    t0 = time.perf_counter()
    wn = load_wordnet(find_wordnet())
    figures["wordnet_load_seconds"] = time.perf_counter() - t0

    fast_s, result, _ = score_through_vlmbench([("wups", {"mode": "reference"})], preds, refs, "cpu")
    fast0, fast9 = result.sample_scores["wups_0.0"], result.sample_scores["wups_0.9"]

    n = len(preds)
    idx = list(range(n))
    if naive_limit and naive_limit < n:
        idx = sorted(random.Random(1).sample(idx, naive_limit))
    t0 = time.perf_counter()
    naive = [reference_wups(wn, preds[i], refs[i]) for i in idx]
    naive_s = time.perf_counter() - t0
    measured = len(idx)
    naive_full = naive_s * n / measured
    mismatches = sum(1 for k, i in enumerate(idx) if naive[k][0] != fast0[i] or naive[k][1] != fast9[i])
    unique = len(set(zip(preds, refs, strict=True)))
    label = "per-pair reference" + ("" if measured == n else f" ({measured} pairs timed, extrapolated)")
    rows.append(("WUPS", label, n, unique, naive_full, 1.0, "", ""))
    rows.append(("WUPS", "vlmbench wups (unique pairs, memoised)", n, unique, fast_s, naive_full / fast_s,
                 ">= 20x faster", f"{mismatches} mismatches in {measured}"))  # fmt: skip
    figures["wups"] = {
        "pairs": n,
        "unique_pairs": unique,
        "vlmbench_seconds": fast_s,
        "naive_seconds_measured": naive_s,
        "naive_pairs_measured": measured,
        "naive_seconds_for_all_pairs": naive_full,
        "speedup": naive_full / fast_s,
        "mismatches": mismatches,
        "mean_wups_0.0": float(np.mean(fast0)),
        "mean_wups_0.9": float(np.mean(fast9)),
    }


def bench_sbert(preds, refs, device, repeats, rows, figures):
    from vlmbench_plugins.metrics.sbert import DEFAULT_MODEL

    unique_strings = list(dict.fromkeys([*preds, *refs]))
    options = {"model": DEFAULT_MODEL, "device": device}
    # Load the model (shared by both measurements) and warm it up.
    _, _, metrics = score_through_vlmbench([("sbert", options)], preds[:64], refs[:64], device)
    model = metrics[0]._model
    batch = metrics[0].options["batch_size"]
    lower, ours = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.encode(unique_strings, batch_size=batch, convert_to_numpy=True, normalize_embeddings=True,
                     show_progress_bar=False)  # fmt: skip
        lower.append(time.perf_counter() - t0)
        seconds, result, _ = score_through_vlmbench([("sbert", options)], preds, refs, device)
        ours.append(seconds)
    base, mine = min(lower), min(ours)
    n = len(preds)
    unique = len(set(zip(preds, refs, strict=True)))
    rows.append(
        ("SBERT", f"encode the {len(unique_strings)} distinct strings only", n, unique, base, 1.0, "", "")
    )
    rows.append(("SBERT", "vlmbench sbert (unique pairs, embedding cache)", n, unique, mine, mine / base,
                 "<= 1.2x the lower bound", ""))  # fmt: skip
    figures["sbert"] = {
        "pairs": n,
        "distinct_strings": len(unique_strings),
        "encode_distinct_seconds": base,
        "vlmbench_seconds": mine,
        "ratio": mine / base,
        "repeats": repeats,
        "device": device,
        "model_source": metrics[0].describe()["model"]["source"],
        "mean_sbert": float(np.mean(result.sample_scores["sbert"])),
    }


def bench_bertscore(preds, refs, model, layers, device, rows, figures):
    from vlmbench.scoring.assets import resolve_model

    folder = str(resolve_model(model, purpose="BERTScore").path)
    options = {"model": folder, "num_layers": layers, "rescale": False, "device": device}
    _, _, metrics = score_through_vlmbench([("bertscore", options)], preds[:8], refs[:8], device)  # load
    metric = metrics[0]
    encoded: list[int] = []
    hook = metric._scorer._model.register_forward_pre_hook(lambda _m, args: encoded.append(len(args[0])))
    try:
        # The alternative: bert-score called per 4,096 distinct pairs (the default chunk of sample metrics),
        # in the scoring path's order.
        pairs = list(dict.fromkeys(zip(preds, refs, strict=True)))
        t0 = time.perf_counter()
        chunked = []
        for start in range(0, len(pairs), 4096):
            chunk = pairs[start : start + 4096]
            chunked += metric.score([p for p, _ in chunk], [r for _, r in chunk])["bertscore_f1"]
        chunked_s = time.perf_counter() - t0
        before, encoded[:] = sum(encoded), []
        seconds, result, _ = score_through_vlmbench([("bertscore", options)], preds, refs, device)
        after = sum(encoded)
    finally:
        hook.remove()
    # Per distinct pair: the scoring path's value against the per-chunk one.
    new = dict(zip(zip(preds, refs, strict=True), result.sample_scores["bertscore_f1"], strict=True))
    gaps = np.abs(np.array([new[pair] for pair in pairs]) - np.array(chunked))
    diff, differing = float(gaps.max()), int((gaps > 1e-6).sum())
    distinct = len({s for s in [*preds, *refs] if s.strip()})
    n, unique = len(preds), len(pairs)
    rows.append(("BERTScore", f"bert-score per 4,096-pair chunk: {before} strings encoded", n, unique,
                 chunked_s, 1.0, "", ""))  # fmt: skip
    rows.append(("BERTScore", f"vlmbench bertscore (one call): {after} strings encoded", n, unique, seconds,
                 chunked_s / seconds, f"{distinct} distinct strings",
                 f"max |dF1| {diff:.1e}; {differing} pairs differ by > 1e-6"))  # fmt: skip
    figures["bertscore"] = {
        "pairs": n,
        "unique_pairs": unique,
        "model": model,
        "num_layers": layers,
        "device": device,
        "distinct_nonempty_strings": distinct,
        "strings_encoded_per_chunk": before,
        "strings_encoded_vlmbench": after,
        "chunked_seconds": chunked_s,
        "vlmbench_seconds": seconds,
        "speedup": chunked_s / seconds,
        "max_abs_difference_f1": diff,
        "pairs_differing_over_1e-6": differing,
        "hash": metric.describe()["hash"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, default=SEED_DATA, help="folder of CSV files with an 'answer' column"
    )
    parser.add_argument(
        "--naive-limit", type=int, default=0, help="time the per-pair WUPS baseline on N pairs"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2, help="SBERT timings: best of N")
    parser.add_argument("--skip", choices=["wups", "sbert", "bertscore"], action="append", default=[])
    parser.add_argument("--bertscore-model", default="sentence-transformers/all-MiniLM-L6-v2",
                        help="encoder for the BERTScore counts (Hub id or folder)")  # fmt: skip
    parser.add_argument("--bertscore-layers", type=int, default=6, help="its layer (bert-score num_layers)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    refs, origin = load_answers(args.data)
    preds = refs[:]
    random.Random(0).shuffle(preds)
    rows: list[tuple] = []
    figures: dict = {"data": origin, "machine": f"{platform.processor() or platform.machine()}, "
                     f"{os.cpu_count()} CPUs", "python": sys.version.split()[0]}  # fmt: skip
    print(f"data: {origin}; predictions: a seeded shuffle of the references", flush=True)
    if "wups" not in args.skip:
        bench_wups(preds, refs, args.naive_limit, rows, figures)
    if "sbert" not in args.skip:
        bench_sbert(preds, refs, args.device, args.repeats, rows, figures)
    if "bertscore" not in args.skip:
        bench_bertscore(preds, refs, args.bertscore_model, args.bertscore_layers, args.device, rows, figures)

    header = ("metric", "implementation", "pairs", "unique pairs", "seconds", "ratio", "target", "values")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for metric, impl, n, unique, secs, ratio, target, values in rows:
        print(f"| {metric} | {impl} | {n} | {unique} | {secs:.2f} | {ratio:.2f}x | {target} | {values} |")
    if "wordnet_load_seconds" in figures:
        print(f"(WordNet loaded once in {figures['wordnet_load_seconds']:.1f} s, not counted above)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
