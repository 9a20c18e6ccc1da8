"""Full precision against 8-bit and 4-bit (bitsandbytes) weights of one model, side by side.

For each variant the model is evaluated on a task through ``vlmbench.evaluate`` (the code path of
``vlmbench run``) and the script reports, in one Markdown table:

- weights: the bytes of the loaded model's state dict (quantised tensors and their scales included;
  ``get_memory_footprint()`` is not used, it is wrong for some quantisation backends);
- peak memory: on a GPU, CUDA's peak allocated memory while loading and answering; on the CPU, the
  growth of the process's resident memory (peak minus the value before loading) -- the table says which;
- throughput: samples per second over the model loop (image decoding, preprocessing, model calls,
  storing; weights loading excluded);
- every metric of the task, its change against full precision, and the share of answers that equal
  the full-precision answers.

Each variant runs in a fresh Python process by default, so that memory measurements do not see what
an earlier variant left behind (``--no-isolate`` runs them in this process; memory then is a sampled
approximation).

Without ``--pretrained`` the model is the test suite's tiny BLIP (``tests/tiny_models.py``), built in
a temporary folder: the figures then measure bitsandbytes and the harness on a 0.1M-parameter model,
not a real one (see docs/finetune.md).

    python benchmarks/quantization.py                                    # tiny BLIP, abo_sample, CPU
    python benchmarks/quantization.py --limit 32 --threads 1
    python benchmarks/quantization.py --pretrained Salesforce/blip-vqa-base --device cuda --batch-size 64
    python benchmarks/quantization.py --model lora-blip --model-args adapter=runs/blip-lora/best --device cuda
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

VARIANTS = {
    "full": {},
    "8bit": {"load_in_8bit": "true"},
    "4bit": {"load_in_4bit": "true"},
}
LABELS = {"full": "full precision", "8bit": "8-bit (LLM.int8)", "4bit": "4-bit (nf4)"}


def weights_bytes(model: Any) -> int:
    """Bytes of every tensor in the model's state dict (what the weights occupy once loaded)."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values() if hasattr(t, "numel"))


def _rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _PeakRSS:
    """Samples the resident set size in a thread (for runs that cannot use the process's own peak)."""

    def __init__(self, interval: float = 0.002):
        self.interval, self.peak, self._stop = interval, _rss_bytes(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> _PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


def measure(variant: str, args: argparse.Namespace, out_dir: Path, isolated: bool) -> dict[str, Any]:
    """Evaluate one variant and measure it (in the current process)."""
    import torch

    from vlmbench.evaluation.runner import evaluate, resolve_device
    from vlmbench.plugin.args import parse_kv
    from vlmbench.plugin.loading import load_plugins, resolve_task
    from vlmbench.plugin.registry import load_target

    logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)  # per-matmul cast notes
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model_args = {**parse_kv(args.model_args), **VARIANTS[variant]}
    if args.pretrained:
        model_args["pretrained"] = args.pretrained
    plugins = load_plugins()
    task = resolve_task(args.task, plugins)
    _ = task.samples  # read the data before measuring
    _warm_up(plugins.models.get(args.model))
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    rss_before = _rss_bytes()
    with _PeakRSS() as sampler:
        result = evaluate(
            args.model, task, model_args=model_args, plugins=plugins, limit=args.limit,
            batch_size=args.batch_size, device=device, dtype=args.dtype, num_workers=args.num_workers,
            cache=False, progress=False, output_dir=out_dir / variant,
            metrics=args.metrics.split(",") if args.metrics else None,
        )  # fmt: skip
    if result.status != "ok":
        raise SystemExit(f"{variant}: {result.results.get('reason')}")
    if cuda:
        peak, peak_kind = torch.cuda.max_memory_allocated() - before, "CUDA peak allocated"
    elif isolated:
        # A fresh process: its own peak resident size is exact (ru_maxrss is in KiB on Linux).
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
        peak_kind = "RSS growth"
    else:
        peak, peak_kind = sampler.peak - rss_before, "RSS growth (sampled)"
    timing = result.results["timing"]
    n = result.results["task"]["n_scored"]
    entry = plugins.models.get(args.model)
    instance = load_target(entry.target).create(entry, model_args, device=device, dtype=args.dtype)
    instance.load()
    info = {
        "variant": variant,
        "weights_bytes": weights_bytes(instance.model),
        "parameters": instance.describe().get("parameters"),
        "peak_bytes": peak,
        "peak_kind": peak_kind,
        "samples_per_second": n / max(timing["loop_seconds"] - timing["load_seconds"], 1e-9),
        "load_seconds": timing["load_seconds"],
        "n": n,
        "metrics": {k: v.get("value") for k, v in result.results["metrics"].items()},
        "run_dir": str(result.run_dir),
        "device": device,
        "dtype": instance.dtype,
        "checkpoint": instance.describe().get("checkpoint"),
    }
    return info


def _warm_up(entry: Any) -> None:
    """Import what loading and answering will import, so the memory baseline includes the libraries
    and the measured growth is the model's (weights, activations, quantisation buffers)."""
    import bitsandbytes  # noqa: F401
    import torch
    import transformers
    from transformers import BitsAndBytesConfig  # noqa: F401

    from vlmbench.plugin.registry import load_target

    cls = load_target(entry.target)
    getattr(transformers, getattr(cls, "model_class", "AutoModel"), None)
    getattr(transformers, getattr(cls, "processor_class", "AutoProcessor"), None)
    torch.nn.functional.linear(torch.ones(2, 2), torch.ones(2, 2))


def _answers(run_dir: str) -> dict[str, str]:
    lines = (Path(run_dir) / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    return {d["sample_id"]: d["answer"] for d in map(json.loads, lines)}


def table(rows: list[dict[str, Any]]) -> str:
    """The side-by-side table: every variant against the first (full precision)."""
    base = rows[0]
    metrics = list(base["metrics"])
    base_answers = _answers(base["run_dir"])
    header = ["variant", "weights", "vs full", f"peak memory ({base['peak_kind']})", "samples/s"]
    for m in metrics:
        header += [m, f"Δ {m}"]
    header.append("same answer as full")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        answers = _answers(row["run_dir"])
        same = sum(answers.get(k) == v for k, v in base_answers.items()) / max(len(base_answers), 1)
        cells = [
            LABELS[row["variant"]] + (f" ({row['dtype']})" if row["variant"] == "full" else ""),
            _size(row["weights_bytes"]),
            f"{row['weights_bytes'] / base['weights_bytes'] - 1:+.1%}",
            _size(row["peak_bytes"]),
            f"{row['samples_per_second']:.1f}",
        ]
        for m in metrics:
            value, ref = row["metrics"].get(m), base["metrics"].get(m)
            cells.append("–" if value is None else f"{value:.4f}")
            cells.append("–" if value is None or ref is None else f"{value - ref:+.4f}")
        cells.append(f"{same:.1%}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _size(n: float) -> str:
    for unit, size in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="blip", help="model plugin (a Hugging Face one)")
    parser.add_argument("--pretrained", help="checkpoint: Hub id or folder (default: a tiny BLIP built here)")
    parser.add_argument("--model-args", default="", help="further k=v,... for the model")
    parser.add_argument("--task", default="abo_sample", help="task name or YAML file")
    parser.add_argument("--limit", type=int, help="evaluate the first N samples only")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument(
        "--dtype",
        default="float32",
        help="dtype of full precision and of the unquantised parts (default float32)",
    )
    parser.add_argument("--variants", default="full,8bit,4bit", help="comma-separated, full first")
    parser.add_argument("--metrics", help="comma-separated metrics instead of the task's")
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--threads", type=int, help="torch intra-op threads")
    parser.add_argument("--no-isolate", action="store_true", help="run every variant in this process")
    parser.add_argument("--output", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", type=Path, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = _parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.worker:  # one variant in a fresh process: print its measurements as JSON
        print(json.dumps(measure(args.worker, args, args.work_dir, isolated=True)))
        return []
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants or variants[0] != "full":
        raise SystemExit(f"--variants: choose from {', '.join(VARIANTS)}, full first")
    with tempfile.TemporaryDirectory(prefix="vlmbench-quant-") as tmp:
        work = Path(tmp)
        if not args.pretrained and args.model == "blip":
            sys.path.insert(0, str(REPO / "tests"))
            import tiny_models

            with contextlib.redirect_stdout(sys.stderr):  # save_pretrained's progress bar
                args.pretrained = str(tiny_models.build("blip", work / "checkpoints"))
            tiny = True
        else:
            tiny = False
        rows = []
        for variant in variants:
            if args.no_isolate:
                rows.append(measure(variant, args, work / "runs", isolated=False))
            else:
                rows.append(_in_subprocess(variant, argv if argv is not None else sys.argv[1:], args, work))
            print(f"{variant}: done", file=sys.stderr, flush=True)
        text = table(rows)
        print(_preamble(args, rows, tiny))
        print()
        print(text)
        if args.output:
            args.output.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return rows


def _in_subprocess(variant: str, argv: list[str], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), *argv, "--worker", variant,
               "--work-dir", str(work / "runs")]  # fmt: skip
    if "--pretrained" not in argv and args.pretrained:  # the tiny BLIP built above
        command += ["--pretrained", args.pretrained]
    res = subprocess.run(command, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _preamble(args: argparse.Namespace, rows: list[dict[str, Any]], tiny: bool) -> str:
    import bitsandbytes
    import torch
    import transformers

    base = rows[0]
    device = base["device"]
    hardware = (
        torch.cuda.get_device_name(0)
        if device.startswith("cuda")
        else f"{platform.machine()} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    )
    model = f"{args.model} ({'tiny test BLIP, ' if tiny else ''}{base['parameters']:,} parameters)"
    return (
        f"{model} on {args.task} ({base['n']} samples, batch {args.batch_size}); {hardware}; "
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"bitsandbytes {bitsandbytes.__version__}; each variant in "
        f"{'this process' if args.no_isolate else 'a fresh process'}; {time.strftime('%Y-%m-%d')}"
    )


if __name__ == "__main__":
    main()
