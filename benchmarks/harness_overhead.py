"""What the harness costs: ``vlmbench run`` against a bare hand-written loop, as whole processes.

Two models: a chat VLM (Qwen2.5-VL, 24.7M random parameters: the real checkpoint's vocabulary width
and the processor's real default pixel budget, see ``QWEN_SIZES`` in ``tests/tiny_models.py``) and
BLIP (the test suite's tiny checkpoint). For each, three processes run side by side, interleaved over
``--rounds`` rounds so that machine load hits all alike (each round starting one process later in
the list), with default torch threads and default DataLoader workers:

- ``vlmbench``: ``python -m vlmbench run -m MODEL -a pretrained=DIR -t TASK --dtype bfloat16
  --gen-kwargs max_new_tokens=5 -b 8 --no-cache`` (progress bar, scoring and artifacts included);
- ``bare``: a hand-written ``transformers`` loop in its own process that imports nothing of vlmbench:
  load processor and model, then per batch read and decode the images, build the same prompt text as
  the plugin (for Qwen2.5-VL the same chat conversation), call the processor, ``generate`` and decode
  to text; rows in file order;
- ``bare, sorted``: the same loop with rows in vlmbench's batch order (longest prompt first, stable;
  ``vlmbench.evaluation.loader.batch_order``): the same batches, hence the same padding, as vlmbench. Its answers
  are the reference for agreement (bfloat16 results depend on the padding of the batch).

Reported per process: whole-process seconds and their ratio (bare ÷ vlmbench: 1.00 means as fast as
the bare loop), its CPU seconds (workers included), the seconds outside the loop (start, imports,
loading, scoring, artifacts, exit), the loop's samples/s and ratio (vlmbench: ``timing.loop_seconds``
of results.json; bare: its own timer around the batches, after start and loading), harness ms per batch
(the loop's time outside the model's span — inputs to the model's dtype, ``generate``, decoding to
text, for vlmbench also storing the batch — i.e. reading and decoding images, prompt text, processor,
bookkeeping: vlmbench's ``loop_seconds - model_seconds``), and the answers equal to the sorted bare
loop's. Two tables: medians over the rounds, and the fastest round of each process (the one least
disturbed on a shared machine). Then vlmbench's worker count with its reason, and its timing.

The data: one question per image (the first in file order) for the first ``--n`` images of
``../shared/data/seed_project/qa_with_images_in_abo_images_256.csv``; where that folder is absent,
the bundled sample (``tasks/abo_sample``), one question per image and then further questions.

    python benchmarks/harness_overhead.py                            # both models, 256 rows, 3 rounds
    python benchmarks/harness_overhead.py --models qwen2.5-vl --variants default,0,1,1:1
        # vlmbench variants: WORKERS[:TORCH_THREADS], "default" for the default worker count
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
SHARED_CSV = SHARED / "seed_project" / "qa_with_images_in_abo_images_256.csv"
SHARED_IMAGES = SHARED / "abo_images_256"
SAMPLE = REPO / "tasks" / "abo_sample"

# What the plugins send (checked against them in run_benchmark): the chat plugins' default prompt
# template and system message, and BLIP's prompt (the task's default template, the bare question).
CHAT_PROMPT = "{question} Answer with exactly one word."
CHAT_SYSTEM = "You answer questions about product images with exactly one word."
PROMPTS = {"qwen2.5-vl": CHAT_PROMPT, "blip": "{question}"}
BUILDS = {"qwen2.5-vl": ("build_qwen2_5_vl", {"size": "small"}), "blip": ("build_blip", {})}


# -- the bare loop (its own process) ----------------------------------------------------------------------


def bare_main(argv: list[str]) -> None:
    """The hand-written loop: nothing but transformers, torch and PIL."""
    t_process = time.perf_counter()
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True, choices=sorted(PROMPTS))
    parser.add_argument("--pretrained", required=True)
    parser.add_argument("--task-dir", type=Path, required=True)
    parser.add_argument("--order", choices=("file", "sorted"), default="file")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=5)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    import torch
    import transformers
    from PIL import Image

    with open(args.task_dir / "data.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    image_root = Path((args.task_dir / "image_root.txt").read_text(encoding="utf-8").strip())
    prompts = [PROMPTS[args.model].format(question=row["question"]) for row in rows]
    order = list(range(len(rows)))
    if args.order == "sorted":
        order.sort(key=lambda i: (-len(prompts[i]), i))

    t_load = time.perf_counter()
    processor = transformers.AutoProcessor.from_pretrained(args.pretrained)
    if args.model == "qwen2.5-vl":
        processor.tokenizer.padding_side = "left"
        model_class = transformers.AutoModelForImageTextToText
    else:
        model_class = transformers.BlipForQuestionAnswering
    model = model_class.from_pretrained(args.pretrained, dtype=torch.bfloat16).eval()
    load_seconds = time.perf_counter() - t_load

    answers: dict[int, str] = {}
    answer_seconds = 0.0
    t_loop = time.perf_counter()
    for start in range(0, len(order), args.batch_size):
        chunk = order[start : start + args.batch_size]
        images = []
        for i in chunk:
            with Image.open(image_root / rows[i]["path"]) as img:
                images.append(img.convert("RGB"))
        if args.model == "qwen2.5-vl":
            texts = [
                processor.apply_chat_template(
                    [
                        {"role": "system", "content": [{"type": "text", "text": CHAT_SYSTEM}]},
                        {
                            "role": "user",
                            "content": [{"type": "image"}, {"type": "text", "text": prompts[i]}],
                        },
                    ],
                    add_generation_prompt=True,
                    tokenize=False,
                )
                for i in chunk
            ]
        else:
            texts = [prompts[i] for i in chunk]
        inputs = processor(images=images, text=texts, padding=True, return_tensors="pt")
        # The span vlmbench reports as model_seconds: inputs to the model's dtype, generate, text.
        t_answer = time.perf_counter()
        inputs = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in inputs.items()}
        with torch.inference_mode():
            output = model.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False)
        if args.model == "qwen2.5-vl":
            output = output[:, inputs["input_ids"].shape[1] :]
        texts = processor.tokenizer.batch_decode(output, skip_special_tokens=True)
        answers.update((i, t.strip()) for i, t in zip(chunk, texts, strict=True))
        answer_seconds += time.perf_counter() - t_answer
    loop_seconds = time.perf_counter() - t_loop
    result = {
        "answers": [answers[i] for i in range(len(rows))],
        "loop_seconds": loop_seconds,
        "model_seconds": answer_seconds,
        "load_seconds": load_seconds,
        "start_seconds": t_load - t_process,
        "batches": -(-len(rows) // args.batch_size),
        "torch_threads": torch.get_num_threads(),
    }
    args.out.write_text(json.dumps(result), encoding="utf-8")


# -- the benchmark -----------------------------------------------------------------------------------------


def benchmark_rows(n: int) -> tuple[list[dict], Path]:
    """``n`` rows, one per image first: the shared ABO data when present, else the bundled sample."""
    if SHARED_CSV.is_file() and SHARED_IMAGES.is_dir():
        source, root = SHARED_CSV, SHARED_IMAGES
    else:
        source, root = SAMPLE / "abo_sample.csv", SAMPLE / "images"
    with open(source, encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if (root / r["path"]).is_file()]
    firsts, seen = [], set()
    for i, r in enumerate(rows):
        if r["image_id"] not in seen:
            seen.add(r["image_id"])
            firsts.append(i)
    rest = [i for i in range(len(rows)) if i not in set(firsts)]
    keep = sorted((firsts + rest)[:n])
    fields = ("image_id", "path", "question", "answer", "difficulty")
    return [{k: rows[i][k] for k in fields} for i in keep], root


def write_task(folder: Path, rows: list[dict], root: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "data.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (folder / "image_root.txt").write_text(str(root), encoding="utf-8")
    spec = {"task": "overhead", "version": "1", "dataset": {"path": "data.csv", "image_root": str(root)}}
    (folder / "task.yaml").write_text(json.dumps(spec), encoding="utf-8")  # JSON is YAML
    return folder / "task.yaml"


def run_process(argv: list[str], env: dict[str, str], log: Path) -> dict[str, float]:
    """Run a process to its end: its wall-clock seconds, and the CPU seconds it and its children
    (DataLoader workers) used, which machine load disturbs less than wall-clock time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.run(argv, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, check=False)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed (exit {proc.returncode}); see {log}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {"process_seconds": seconds, "cpu_seconds": cpu}


def parse_variant(text: str) -> tuple[str, list[str], dict[str, str]]:
    """``default``, ``W`` or ``W:T`` (W DataLoader workers, T torch threads) -> name, CLI flags, env."""
    workers, _, threads = text.partition(":")
    name = "vlmbench" if workers == "default" else f"vlmbench --num-workers {workers}"
    flags = [] if workers == "default" else ["--num-workers", workers]
    env = {}
    if threads:
        name += f", {threads} torch thread(s)"
        env = {"OMP_NUM_THREADS": threads}
    return name, flags, env


def run_benchmark(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(REPO / "tests"))
    import tiny_models

    from vlmbench.hf.chat import SYSTEM_PROMPT, ChatVLM

    assert (ChatVLM.default_prompt, SYSTEM_PROMPT) == (CHAT_PROMPT, CHAT_SYSTEM), (
        "update the bare loop's prompt"
    )
    work = Path(args.keep or tempfile.mkdtemp(prefix="vlmbench-overhead-"))
    rows, image_root = benchmark_rows(args.n)
    task = write_task(work / "task", rows, image_root)
    env = {**os.environ, "PYTHONHASHSEED": "0", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    variants = [parse_variant(v) for v in args.variants.split(",")]
    models = args.models.split(",")
    checkpoints = {}
    for model in models:
        builder, kwargs = BUILDS[model]
        checkpoints[model] = work / "models" / model
        if not (checkpoints[model] / "config.json").is_file():
            getattr(tiny_models, builder)(checkpoints[model], **kwargs)

    timings: dict[tuple[str, str], list[dict]] = {}
    answers: dict[tuple[str, str], list[str]] = {}

    def bare(model: str, order: str, r: int) -> None:
        out = work / f"bare-{model}-{order}-{r}.json"
        argv = [sys.executable, __file__, "bare", "--model", model, "--pretrained", str(checkpoints[model]),
                "--task-dir", str(task.parent), "--order", order, "--out", str(out)]  # fmt: skip
        process = run_process(argv, env, work / f"bare-{model}-{order}-{r}.log")
        info = json.loads(out.read_text(encoding="utf-8"))
        name = "bare loop" + (", sorted" if order == "sorted" else "")
        timings[(model, name)].append({**info, **process})
        answers[(model, name)] = info["answers"]

    def vlmbench(model: str, v: int, r: int) -> None:
        name, flags, extra_env = variants[v]
        out_dir = work / "runs" / f"{model.replace('.', '')}-v{v}-r{r}"
        argv = [
            sys.executable, "-m", "vlmbench", "run", "-m", model, "-a", f"pretrained={checkpoints[model]}",
            "-t", str(task), "--dtype", "bfloat16", "--gen-kwargs", "max_new_tokens=5", "-b", "8",
            "--no-cache", "-o", str(out_dir), *flags,
        ]  # fmt: skip
        process = run_process(argv, {**env, **extra_env}, work / f"{out_dir.name}.log")
        run_dir = next(out_dir.rglob("results.json")).parent
        results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
        preds = [json.loads(x) for x in (run_dir / "predictions.jsonl").read_text().splitlines()]
        config = results["config"]
        timings[(model, name)].append(
            {**results["timing"], **process, "num_workers": config["num_workers"],
             "num_workers_reason": config.get("num_workers_reason", "")}
        )  # fmt: skip
        answers[(model, name)] = [p["raw"] for p in preds]

    jobs = []
    for model in models:
        for order in ("file", "sorted"):
            timings[(model, "bare loop" + (", sorted" if order == "sorted" else ""))] = []
            jobs.append((bare, model, order))
        for v, (name, _, _) in enumerate(variants):
            timings[(model, name)] = []
            jobs.append((vlmbench, model, v))
    for r in range(args.rounds):
        # Each round starts one process later in the list: no variant always follows the same one
        # (on a shared machine the n-th process of a round can be systematically slower).
        shift = r % len(jobs)
        for job, model, which in jobs[shift:] + jobs[:shift]:
            job(model, which, r)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)

    raw = [{"model": m, "config": name, "runs": runs} for (m, name), runs in timings.items()]
    (work / "timings.json").write_text(json.dumps(raw, indent=1), encoding="utf-8")
    what = f"{image_root.name}, {args.rounds} rounds"
    print_report(timings, answers, models, len(rows), f"{what}, medians", statistics.median)
    # On a shared machine a neighbour's burst can slow a round several times over; the fastest round of
    # each process is the one least disturbed.
    print_report(timings, answers, models, len(rows), f"{what}, fastest round of each", min)
    print_details(timings)
    print(f"\nfiles: {work}")


def print_report(timings: dict, answers: dict, models: list[str], n: int, what: str, med) -> None:
    """The comparison table; ``med`` summarises the rounds of each process (median, min)."""
    print(f"\n{n} rows ({what}), batch 8, bfloat16, greedy, 5 new tokens, {os.cpu_count()} CPU cores\n")
    print("| model | config | whole process s | whole ÷ bare | CPU s | outside the loop s | loop samples/s | "
          "loop ÷ bare | harness ms/batch | answers = bare sorted |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for model in models:
        bare = timings[(model, "bare loop")]
        reference = answers[(model, "bare loop, sorted")]
        bare_process = med(t["process_seconds"] for t in bare)
        bare_loop = med(t["loop_seconds"] for t in bare)
        batches = bare[0]["batches"]
        for (m, name), runs in timings.items():
            if m != model:
                continue
            process = med(t["process_seconds"] for t in runs)
            loop = med(t["loop_seconds"] for t in runs)
            harness = med(t["loop_seconds"] - t["model_seconds"] for t in runs)
            if name.startswith("bare"):
                config = f"{runs[0]['torch_threads']} torch threads"
            else:
                config = f"{runs[0]['num_workers']} workers"
            same = sum(a == b for a, b in zip(answers[(m, name)], reference, strict=True))
            print(
                f"| {model} | {name} ({config}) | {process:.2f} | {bare_process / process:.2f} | "
                f"{med(t['cpu_seconds'] for t in runs):.1f} | {med(t['process_seconds'] - t['loop_seconds'] for t in runs):.2f} | "
                f"{n / loop:.1f} | {bare_loop / loop:.2f} | {1000 * harness / batches:.0f} | {same}/{n} |"
            )  # fmt: skip


def print_details(timings: dict) -> None:
    med = statistics.median
    for (model, name), runs in timings.items():
        if not name.startswith("bare"):
            reason = runs[0]["num_workers_reason"]
            keys = ("load_seconds", "data_wait_seconds", "model_seconds", "loop_seconds", "scoring_seconds")
            print(f"\n{model}, {name}: {runs[0]['num_workers']} DataLoader workers ({reason})")
            print("  timing: " + ", ".join(f"{k} {med(t[k] for t in runs):.2f}" for k in keys))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bare"]:
        bare_main(argv[1:])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=256, help="rows (one per image first)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", default="qwen2.5-vl,blip", help="comma-separated: qwen2.5-vl, blip")
    parser.add_argument(
        "--variants", default="default", help="vlmbench variants: default, W or W:T, comma-separated"
    )
    parser.add_argument("--keep", help="work folder to use and keep (default: a new temporary one)")
    run_benchmark(parser.parse_args(argv))


if __name__ == "__main__":
    main()
