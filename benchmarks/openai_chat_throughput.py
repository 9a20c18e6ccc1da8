"""Throughput of ``openai-chat`` against ``transformers serve``, beside the in-process plugin on the same
checkpoint, all measured in one run of this script.

One ``transformers serve CHECKPOINT`` process (fp32 on the CPU, pinned to the checkpoint) is started on
a free port; then, in this process and one after another, on the same samples with the cache off and
the same number of torch threads on both sides (``--threads``, default 1: on a small shared machine more
threads of a tiny model mostly wait for each other):

- ``qwen2.5-vl`` in-process (``-b 8``), the reference;
- ``openai-chat`` at ``num_concurrent`` 1, 4 and 16 (its default batch: 4 times the concurrency).

Reported per run: the model loop's samples/s (results.json ``timing.loop_seconds``) and its ratio to the
in-process plugin, the request latency percentiles, and the client's overhead per request: the loop's
seconds per sample minus the mean request latency (at concurrency 1 the requests follow one another, so
what is left is vlmbench's own work per request — reading the image, the JSON body, storing the
answer) and its share of the server's time (the mean latency). ``transformers serve`` answers one VLM
request at a time (it does not batch them), so concurrency is not expected to raise its throughput;
an engine that batches (vLLM, SGLang) is where it pays.

    python benchmarks/openai_chat_throughput.py                       # the tests' tiny Qwen2.5-VL, abo_sample
    python benchmarks/openai_chat_throughput.py --checkpoint DIR --limit 100 --dtype float32
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(checkpoint: Path, dtype: str, threads: int, log: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "transformers.cli.transformers", "serve", str(checkpoint), "--device", "cpu",
               "--dtype", dtype, "--host", "127.0.0.1", "--port", str(port), "--log-level", "error"]  # fmt: skip
    with open(log, "wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"transformers serve exited:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if json.loads(response.read()).get("status") == "ok":
                    return process, f"http://127.0.0.1:{port}/v1"
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("transformers serve did not start within 300 s")


def run(model: str, model_args: dict, options: dict, out: Path) -> dict:
    from vlmbench.api import evaluate

    result = evaluate(model, options["task"], model_args=model_args, output_dir=out, cache=False, progress=False,
                      metrics=["exact_match"], limit=options["limit"], num_workers=0, dtype=options["dtype"])  # fmt: skip
    timing = result.results["timing"]
    n = result.computed
    row = {"samples": n, "loop_seconds": timing["loop_seconds"], "per_second": n / timing["loop_seconds"]}
    latency = timing.get("request_latency_seconds")
    if latency:
        row["latency"] = latency
    if latency and model_args.get("num_concurrent") == "1":  # requests one after another: the rest is ours
        row["overhead_ms"] = 1000 * (timing["loop_seconds"] / n - latency["mean"])
        row["overhead_share"] = row["overhead_ms"] / (1000 * latency["mean"])
    row["answers"] = [json.loads(line)["raw"] for line in (result.run_dir / "predictions.jsonl").open()]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--checkpoint", type=Path, help="a Qwen2.5-VL checkpoint folder (default: the tests' tiny one)"
    )
    parser.add_argument("--task", default="abo_sample")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of the server and of the in-process plugin alike",
    )
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="openai-bench-"))
    checkpoint = args.checkpoint
    if checkpoint is None:
        sys.path.insert(0, str(REPO / "tests"))
        import tiny_models

        checkpoint = tiny_models.build("qwen2.5-vl", work / "checkpoints")
    options = {"task": args.task, "limit": args.limit, "dtype": args.dtype}
    server, base_url = start_server(checkpoint, args.dtype, args.threads, work / "serve.log")
    try:
        rows = {
            "in-process qwen2.5-vl": run("qwen2.5-vl", {"pretrained": str(checkpoint)}, options, work / "a")
        }
        for c in [int(x) for x in args.concurrency.split(",")]:
            model_args = {"base_url": base_url, "num_concurrent": str(c)}
            rows[f"openai-chat, concurrency {c}"] = run("openai-chat", model_args, options, work / f"c{c}")
    finally:
        server.terminate()
        server.wait(timeout=30)
    reference = rows["in-process qwen2.5-vl"]
    print(
        f"{args.task}: {reference['samples']} samples, {checkpoint.name}, {args.dtype}, CPU, {args.threads} torch thread(s)\n"
    )
    print(
        "| run | samples/s | ratio to in-process | latency p50 / p90 / p99 (ms) | client overhead per request | equal answers |"
    )
    print("|---|---|---|---|---|---|")
    for name, row in rows.items():
        latency = row.get("latency")
        lat = "—" if not latency else " / ".join(f"{1000 * latency[p]:.0f}" for p in ("p50", "p90", "p99"))
        over = (
            "—"
            if "overhead_ms" not in row
            else f"{row['overhead_ms']:.1f} ms ({100 * row['overhead_share']:.1f}% of the server's time)"
        )
        same = sum(a == b for a, b in zip(row["answers"], reference["answers"], strict=True))
        print(f"| {name} | {row['per_second']:.2f} | {row['per_second'] / reference['per_second']:.2f} | {lat} "
              f"| {over} | {same} of {row['samples']} |")  # fmt: skip


if __name__ == "__main__":
    main()
