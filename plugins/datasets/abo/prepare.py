"""``vlmbench data prepare abo_single_word``: listings -> candidate QA -> validated, split, exported.

Output, under ``<data_dir>/abo_single_word/``::

    qa_all.csv                  every accepted row (study columns + generator)
    splits/{train,val,test}.csv the study's format, split by image
    hf/                         DatasetDict with an Image feature (what the task reads)
    report.md, report.json      the curation report
    state.json                  what produced the files above
    work/<generator>-<fp>.jsonl every generator reply, keyed by listing (resumes generation)

Generation is resumable: each listing's result is appended to the generator's store as soon as it
arrives, and stored listings are skipped next time (the store's name carries the generator's
fingerprint, so changing an output-affecting option starts a new one). Validation, splitting and
export are cheap and re-done whenever anything changed. When ``state.json`` records the same
configuration and inputs, a finished run is not repeated: re-running is a no-op.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vlmbench.api import (
    AssetMissingError,
    GenerationResult,
    Generator,
    Job,
    SecretMask,
    VlmbenchError,
    json_digest,
    load_plugins,
    read_image_file,
    write_json,
    write_text,
)
from vlmbench_plugins.datasets.abo import curation, export, reader, splits

TASKS = ("abo_single_word",)
PIPELINE_VERSION = "1"
STATE = "state.json"
# Longest stretch of a stored reply the report quotes as an example.
REPLY_EXCERPT = 300
SPLIT_NAMES = ("train", "val", "test")


def default_data_dir() -> Path:
    """``$VLMBENCH_DATA_DIR``, else ``~/.cache/vlmbench/data`` (what the task file reads)."""
    return Path(os.environ.get("VLMBENCH_DATA_DIR") or "~/.cache/vlmbench/data").expanduser()


@dataclass
class PrepareOptions:
    generators: Sequence[str] = ("attributes",)
    generator_args: Mapping[str, str | Mapping[str, Any]] = field(default_factory=dict)
    language: str = reader.DEFAULT_LANGUAGE
    limit: int | None = None
    seed: int = 0
    fractions: Mapping[str, float] = field(default_factory=lambda: dict(splits.DEFAULT_FRACTIONS))
    validation: curation.ValidationConfig = field(default_factory=curation.ValidationConfig)
    force: bool = False
    progress: bool = True


@dataclass
class PrepareResult:
    out_dir: Path
    skipped: bool
    complete: bool
    report: dict[str, Any]


def create_generator(name: str, args: str | Mapping[str, Any] | None = None, plugins=None) -> Generator:
    """A registered generator by name, with its options validated."""
    return (plugins or load_plugins()).create_generator(name, args)


class CandidateStore:
    """Append-only JSONL of :class:`GenerationResult`; the last successful line per key wins."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def load(self) -> dict[str, GenerationResult]:
        done: dict[str, GenerationResult] = {}
        if not self.path.is_file():
            return done
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    result = GenerationResult.from_dict(json.loads(line))
                except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
                    continue  # a line cut short by a crash: that listing is simply done again
                if result.error is None:
                    done[result.key] = result
        return done

    def mask(self, secrets: SecretMask) -> None:
        """Rewrite the store with every secret masked and the items holding one dropped, should lines
        written before the secrets were screened hold any."""
        if not self.path.is_file():
            return
        lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        if not any(secrets.found(line) for line in lines):
            return
        clean = []
        for line in lines:
            try:
                result = GenerationResult.from_dict(json.loads(line))
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
                clean.append(secrets.mask(line))  # unreadable, and skipped by load(), but no secret kept
                continue
            clean.append(json.dumps(secrets.screen(result).to_dict(), ensure_ascii=False))
        write_text(self.path, "".join(line + "\n" for line in clean))

    def append(self, result: GenerationResult) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(result.to_dict(), ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def _inputs_identity(abo_root: Path) -> list[list[Any]]:
    files = [*reader.listing_files(abo_root), abo_root / reader.IMAGES_CSV]
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def _outputs(out: Path) -> list[Path]:
    return [
        out / "qa_all.csv",
        *(out / "splits" / f"{s}.csv" for s in SPLIT_NAMES),
        out / "hf" / "dataset_dict.json",
        out / "report.json",
        out / "report.md",
    ]


def select_listings(
    abo_root: Path, order: Sequence[str], limit: int | None, stats: reader.ReadStats
) -> tuple[list[reader.Listing], Counter]:
    """Listings with a main image that is on disk, one per image, in file order, at most ``limit``."""
    image_paths = reader.read_image_paths(abo_root / reader.IMAGES_CSV)
    small = abo_root / reader.SMALL_IMAGES_DIR
    seen: set[str] = set()
    skipped: Counter = Counter()
    out: list[reader.Listing] = []
    for listing in reader.iter_listings(
        abo_root, order=order, image_paths=image_paths, stats=stats, require_image=True
    ):
        if listing.main_image_id in seen:
            skipped["image_already_used"] += 1
            continue
        if not (small / str(listing.image_path)).is_file():
            skipped["image_file_missing"] += 1
            continue
        seen.add(str(listing.main_image_id))
        out.append(listing)
        if limit is not None and len(out) >= limit:
            break
    return out, skipped


def _jobs(listings: Sequence[reader.Listing], small: Path) -> Iterator[Job]:
    for listing in listings:
        rel = str(listing.image_path)
        mime = "image/png" if rel.lower().endswith(".png") else "image/jpeg"
        yield Job(
            listing=listing,
            image=lambda rel=rel: read_image_file(small, rel),
            image_mime=mime,
            image_id=str(listing.main_image_id),
            image_ref=rel,
        )


def _sum_usage(results: Mapping[str, GenerationResult]) -> dict[str, float]:
    total: Counter = Counter()
    for r in results.values():
        for k, v in r.usage.items():
            if isinstance(v, (int, float)):
                total[k] += v
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in sorted(total.items())}


@dataclass
class _Plan:
    """What one ``prepare`` call will do, settled (and checked) before any work."""

    out: Path
    abo_root: Path
    generators: list[Generator]
    order: tuple[str, ...]
    fractions: dict[str, float]
    config: dict[str, Any]
    config_hash: str


def _plan(task: str, abo_root: Path, data_dir: Path | None, options: PrepareOptions, plugins) -> _Plan:
    """Check the task, the inputs and the options, and create the generators (nothing loaded yet)."""
    if task not in TASKS:
        raise VlmbenchError(f"unknown dataset {task!r} to prepare; known: {', '.join(TASKS)}")
    abo_root = Path(abo_root).expanduser()
    if not (abo_root / reader.LISTINGS_DIR).is_dir():
        raise AssetMissingError(
            f"the ABO listings under {abo_root}",
            "download them first with `vlmbench data download abo` (or pass --abo-root)",
        )
    if not options.generators:
        raise VlmbenchError("name at least one generator (--generator attributes, gemini or local)")
    if len(set(options.generators)) != len(options.generators):
        raise VlmbenchError(f"a generator is named twice: {list(options.generators)}")
    unknown = set(options.generator_args) - set(options.generators)
    if unknown:
        raise VlmbenchError(f"--generator-args for {sorted(unknown)}, which are not among the generators")
    gens = [create_generator(n, options.generator_args.get(n), plugins) for n in options.generators]
    order = reader.language_order(options.language)
    fractions = splits.check_fractions(options.fractions)
    config = {
        "task": task,
        "pipeline_version": PIPELINE_VERSION,
        "generators": [g.identity() for g in gens],
        "language_order": list(order),
        "limit": options.limit,
        "seed": options.seed,
        "fractions": fractions,
        "validation": asdict(options.validation),
    }
    config_hash = json_digest({"config": config, "inputs": _inputs_identity(abo_root)}, length=None)
    out = Path(data_dir or default_data_dir()).expanduser() / task
    return _Plan(out, abo_root, gens, order, fractions, config, config_hash)


def _finished_report(plan: _Plan) -> dict[str, Any] | None:
    """The report of an earlier run with the same configuration and inputs that finished, if any."""
    state_path = plan.out / STATE
    if not state_path.is_file():
        return None
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None  # unreadable: simply redo the cheap steps
    if state.get("config_hash") != plan.config_hash or not state.get("complete"):
        return None
    if not all(p.exists() for p in _outputs(plan.out)):
        return None
    return json.loads((plan.out / "report.json").read_text(encoding="utf-8"))


@dataclass
class _Work:
    """One generator's store and the listings it still has to do."""

    gen: Generator
    store: CandidateStore
    secrets: SecretMask
    done: dict[str, GenerationResult]
    pending: list[reader.Listing]


def _open_work(gen: Generator, listings: Sequence[reader.Listing], plan: _Plan) -> _Work:
    store = CandidateStore(plan.out / "work" / f"{gen.name}-{gen.fingerprint()}.jsonl")
    secrets = SecretMask(gen.secrets())
    store.mask(secrets)
    done = store.load()
    return _Work(gen, store, secrets, done, [x for x in listings if x.key not in done])


def _generate(
    work: _Work, listings: Sequence[reader.Listing], plan: _Plan, progress: bool, say: Callable[[str], None]
) -> tuple[dict[str, GenerationResult], dict[str, Any]]:
    """Run the generator over its pending listings; its stored results for ``listings``, and the
    facts for the report (``failed`` counts listings that failed after the generator's retries)."""
    gen, done, pending = work.gen, work.done, work.pending
    wanted = {x.key for x in listings}
    errors: Counter = Counter()
    cached = len(wanted & done.keys())
    if pending:
        from tqdm.auto import tqdm

        with tqdm(total=len(pending), desc=gen.name, unit="listing", disable=not progress) as bar:
            for result in gen.generate_many(_jobs(pending, plan.abo_root / reader.SMALL_IMAGES_DIR)):
                result = work.secrets.screen(result)  # nothing a service echoes of a key is kept
                work.store.append(result)
                if result.error is None:
                    done[result.key] = result
                else:
                    errors[result.error.split(":", 1)[0]] += 1
                bar.update(1)
    mine = {k: v for k, v in done.items() if k in wanted}
    unparsed: Counter = Counter()
    for r in mine.values():
        unparsed.update(r.rejected)
    if errors:
        say(f"{gen.name}: {sum(errors.values())} listings failed ({dict(errors)}); re-run to retry them")
    return mine, {
        "listings": len(listings),
        "generated_now": len(pending) - sum(errors.values()),
        "from_store": cached,
        "failed": sum(errors.values()),
        "failures": dict(errors),
        "unparsed": dict(unparsed),
        "usage_stored": _sum_usage(mine),
        "usage_this_run": gen.usage() if pending else {},
    }


def _reply_examples(results: Mapping[str, Mapping[str, GenerationResult]], per_reason: int = 5) -> dict:
    """A few stored replies per reason their fragments were rejected for (in listing order), so the
    report shows what the generators wrote when it could not be read."""
    examples: dict[str, list[dict[str, Any]]] = {}
    for name, mine in results.items():
        for key, result in mine.items():
            for reason in result.rejected:
                shown = examples.setdefault(reason, [])
                if len(shown) < per_reason and result.raw:
                    shown.append({"listing": key, "generator": name, "reply": result.raw[:REPLY_EXCERPT]})
    return {reason: shown for reason, shown in examples.items() if shown}


def _write_outputs(
    plan: _Plan,
    listings: Sequence[reader.Listing],
    results: Mapping[str, Mapping[str, GenerationResult]],
    facts: dict[str, Any],
    options: PrepareOptions,
) -> dict[str, Any]:
    """Validate every candidate, split, export, and write the report; returns the report."""
    out = plan.out
    candidates = [
        curation.Candidate(item=item, image_id=str(x.main_image_id), path=str(x.image_path), listing=x.key)
        for x in listings
        for gen in plan.generators
        for item in (results[gen.name][x.key].items if x.key in results[gen.name] else [])
    ]
    validation = curation.validate(candidates, options.validation)
    if not validation.accepted:
        raise VlmbenchError(
            "no question-answer pair passed validation; see the generators' output in " + str(out / "work")
        )
    parts = splits.split_rows(
        validation.accepted, image_of=lambda r: r.image_id, difficulty_of=lambda r: r.difficulty,
        fractions=plan.fractions, seed=options.seed,
    )  # fmt: skip
    for name in SPLIT_NAMES:
        parts.setdefault(name, [])
    export.write_csv(out / "qa_all.csv", validation.accepted, export.ALL_COLUMNS)
    for name in SPLIT_NAMES:
        export.write_csv(out / "splits" / f"{name}.csv", parts[name])
    export.write_hf(out / "hf", {n: parts[n] for n in SPLIT_NAMES}, plan.abo_root / reader.SMALL_IMAGES_DIR)
    report = curation.build_report(
        validation,
        splits={n: parts[n] for n in SPLIT_NAMES},
        generation=facts["generation"],
        reading=facts["reading"],
        config={k: v for k, v in plan.config.items() if k != "pipeline_version"},
        reply_examples=_reply_examples(results),
        sample_seed=options.seed,
    )
    curation.write_report(report, out)
    return report


def prepare(
    task: str,
    abo_root: Path,
    data_dir: Path | None = None,
    options: PrepareOptions | None = None,
    *,
    plugins=None,
    log: Callable[[str], None] | None = None,
) -> PrepareResult:
    """Run the whole pipeline for ``task`` (see the module docstring). Returns what it wrote.

    Every check of the task, inputs and options comes before any work. Listings a generator failed
    on (after its retries) leave the result ``complete=False``; the outputs are written from the
    others, and the next run retries those listings only.
    """
    options = options or PrepareOptions()
    say = log or (lambda _msg: None)
    plan = _plan(task, abo_root, data_dir, options, plugins)
    if not options.force:
        report = _finished_report(plan)
        if report is not None:
            say(f"{plan.out}: up to date (same configuration and inputs), nothing to do")
            return PrepareResult(plan.out, skipped=True, complete=True, report=report)
    if not options.progress:
        import datasets

        datasets.disable_progress_bars()
    stats = reader.ReadStats()
    listings, selection_skips = select_listings(plan.abo_root, plan.order, options.limit, stats)
    if not listings:
        raise VlmbenchError(f"no usable listings under {plan.abo_root} (none has a main image on disk)")
    say(f"{len(listings)} listings with an image selected from {stats.files} listing files")
    results: dict[str, dict[str, GenerationResult]] = {}
    generation: dict[str, dict[str, Any]] = {}
    works = [_open_work(gen, listings, plan) for gen in plan.generators]
    for work in works:  # a missing key or model of any generator stops the run before the first request
        if work.pending:
            stored = len(listings) - len(work.pending)
            say(f"{work.gen.name}: {len(work.pending)} listings to generate, {stored} already stored")
            work.gen.setup()
    for work in works:
        results[work.gen.name], generation[work.gen.name] = _generate(
            work, listings, plan, options.progress, say
        )
    complete = not any(facts["failed"] for facts in generation.values())
    reading = {**stats.as_dict(), **dict(selection_skips), "selected": len(listings)}
    facts = {"generation": generation, "reading": reading}
    report = _write_outputs(plan, listings, results, facts, options)
    state = {"config_hash": plan.config_hash, "complete": complete, "config": plan.config}
    write_json(plan.out / STATE, {**state, "accepted": report["accepted"]})
    say(f"{report['accepted']} questions about {report['images']} images written to {plan.out}")
    return PrepareResult(plan.out, skipped=False, complete=complete, report=report)
