"""Validating candidate QA pairs and reporting on the curated dataset.

Every candidate from every generator passes the same rules (:func:`validate`), in this order; the
first rule it breaks is its rejection reason:

=====================  ==========================================================================
``empty_question``     the question is empty
``empty_answer``       the answer is empty (after trimming quotes and end punctuation)
``not_single_word``    the answer is not exactly one word after VQA normalisation (the
                       normalisation the metrics apply: lower case, articles and punctuation
                       removed, so "The Oak." is one word and "t-shirt" is two)
``yes_no``             the answer is yes/no and the policy is ``reject`` (the study's rule)
``bad_difficulty``     the difficulty is missing or not in the allowed set (default 0, 1, 2, 3, 5)
``answer_in_question`` the normalised answer appears as a whole word in the normalised question
``duplicate``          the same normalised question was already accepted for the same image
=====================  ==========================================================================

:func:`build_report` counts what was kept (per difficulty, per generator, per split), what was
rejected and why (with examples of each reason), describes the answer vocabulary and draws a seeded
random sample of accepted rows for a manual quality check; :func:`write_report` writes it as
``report.json`` and ``report.md``.
"""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vlmbench.api import QAItem, vqa_normalize, write_json, write_text

DIFFICULTIES = (0, 1, 2, 3, 5)
YES_NO = frozenset({"yes", "no"})
REASONS = (
    "empty_question",
    "empty_answer",
    "not_single_word",
    "yes_no",
    "bad_difficulty",
    "answer_in_question",
    "duplicate",
)
_EDGE = " \t\"'`.,;:!?()[]{}*"
#: Accepted rows drawn for the report's manual quality check (all of them when there are fewer).
QUALITY_SAMPLE = 20


@dataclass(frozen=True)
class ValidationConfig:
    """``yes_no``: ``reject`` yes/no answers (the study did) or ``allow`` them."""

    yes_no: Literal["reject", "allow"] = "reject"
    difficulties: tuple[int, ...] = DIFFICULTIES

    def __post_init__(self) -> None:
        if self.yes_no not in ("reject", "allow"):
            raise ValueError(f"yes_no must be 'reject' or 'allow', not {self.yes_no!r}")


@dataclass(frozen=True)
class Candidate:
    """A generated item together with the image it is about."""

    item: QAItem
    image_id: str
    path: str
    listing: str = ""


@dataclass(frozen=True)
class Accepted:
    image_id: str
    path: str
    question: str
    answer: str
    difficulty: int
    generator: str
    source: str = ""
    listing: str = ""


@dataclass
class ValidationResult:
    accepted: list[Accepted] = field(default_factory=list)
    rejected: Counter = field(default_factory=Counter)  # (generator, reason) -> count
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # reason -> a few examples


def clean_answer(answer: str) -> str:
    """Trim whitespace, quotes and end punctuation: ``' "Oak." '`` -> ``Oak``."""
    return " ".join(str(answer).split()).strip(_EDGE)


def clean_question(question: str) -> str:
    return " ".join(str(question).split()).strip(" \t\"'`")


def is_single_word(answer: str) -> bool:
    """Exactly one word after VQA normalisation."""
    return len(vqa_normalize(answer).split()) == 1


def answer_in_question(answer: str, question: str) -> bool:
    norm = vqa_normalize(answer)
    if not norm:
        return False
    return re.search(rf"(?<!\S){re.escape(norm)}(?!\S)", vqa_normalize(question)) is not None


def check(item: QAItem, config: ValidationConfig) -> str | None:
    """The first rule ``item`` breaks (a reason from :data:`REASONS`), or None; duplicates aside."""
    question = clean_question(item.question)
    answer = clean_answer(item.answer)
    if not question:
        return "empty_question"
    if not answer or not vqa_normalize(answer):
        return "empty_answer"
    if not is_single_word(answer):
        return "not_single_word"
    if config.yes_no == "reject" and vqa_normalize(answer) in YES_NO:
        return "yes_no"
    if not isinstance(item.difficulty, int) or isinstance(item.difficulty, bool):
        return "bad_difficulty"
    if item.difficulty not in config.difficulties:
        return "bad_difficulty"
    if answer_in_question(answer, question):
        return "answer_in_question"
    return None


def validate(
    candidates: Iterable[Candidate], config: ValidationConfig = ValidationConfig()
) -> ValidationResult:
    """Apply the rules to ``candidates`` in order; the first of two duplicates is kept."""
    result = ValidationResult()
    seen: set[tuple[str, str]] = set()
    for cand in candidates:
        item = cand.item
        reason = check(item, config)
        key = (cand.image_id, vqa_normalize(clean_question(item.question)))
        if reason is None and key in seen:
            reason = "duplicate"
        if reason is not None:
            result.rejected[(item.generator, reason)] += 1
            examples = result.examples.setdefault(reason, [])
            if len(examples) < 5:
                examples.append(
                    {"image_id": cand.image_id, "question": item.question, "answer": item.answer,
                     "difficulty": item.difficulty, "generator": item.generator}
                )  # fmt: skip
            continue
        seen.add(key)
        result.accepted.append(
            Accepted(
                image_id=cand.image_id,
                path=cand.path,
                question=clean_question(item.question),
                answer=clean_answer(item.answer),
                difficulty=int(item.difficulty),  # type: ignore[arg-type]
                generator=item.generator,
                source=item.source,
                listing=cand.listing,
            )
        )
    return result


# -- report ----------------------------------------------------------------------------------------


def build_report(
    validation: ValidationResult,
    *,
    splits: Mapping[str, Sequence[Accepted]] | None = None,
    generation: Mapping[str, Mapping[str, Any]] | None = None,
    reading: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    top: int = 20,
    reply_examples: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    sample_seed: int = 0,
    sample_size: int = QUALITY_SAMPLE,
) -> dict[str, Any]:
    """Counts and vocabulary of the curated set (see docs/data.md, "The report").

    ``generation`` holds per-generator facts (listings done, errors, unparsed reply fragments, usage);
    fragments that could not be parsed are reported as rejections of their generator too, with the
    stored replies in ``reply_examples`` (reason -> examples) as their examples. ``quality_sample``
    holds ``sample_size`` accepted rows drawn with ``sample_seed``: the same rows and seed always
    draw the same sample.
    """
    accepted = validation.accepted
    per_difficulty = Counter(a.difficulty for a in accepted)
    per_generator: dict[str, Counter] = defaultdict(Counter)
    for a in accepted:
        per_generator[a.generator][a.difficulty] += 1
    rejected: dict[str, Counter] = defaultdict(Counter)
    for (generator, reason), n in validation.rejected.items():
        rejected[generator][reason] += n
    for name, facts in (generation or {}).items():
        for reason, n in (facts.get("unparsed") or {}).items():
            rejected[name][reason] += n
    by_reason = Counter()
    for counts in rejected.values():
        by_reason.update(counts)
    answers = Counter(vqa_normalize(a.answer) for a in accepted)
    yes_no = sum(n for a, n in answers.items() if a in YES_NO)
    report: dict[str, Any] = {
        "accepted": len(accepted),
        "images": len({a.image_id for a in accepted}),
        "per_difficulty": {str(d): per_difficulty[d] for d in sorted(per_difficulty)},
        "per_generator": {
            g: {"accepted": sum(c.values()), "per_difficulty": {str(d): c[d] for d in sorted(c)}}
            for g, c in sorted(per_generator.items())
        },
        "rejected": {
            "total": sum(by_reason.values()),
            "by_reason": dict(sorted(by_reason.items())),
            "by_generator": {g: dict(sorted(c.items())) for g, c in sorted(rejected.items())},
            "examples": {**dict(reply_examples or {}), **validation.examples},
        },
        "answers": {
            "vocabulary_size": len(answers),
            "yes_no_share": round(yes_no / len(accepted), 4) if accepted else 0.0,
            "top": [
                {"answer": a, "count": n}
                for a, n in sorted(answers.items(), key=lambda x: (-x[1], x[0]))[:top]
            ],
        },
    }
    report["quality_sample"] = quality_sample(accepted, sample_seed, sample_size)
    if splits is not None:
        report["splits"] = {
            name: {
                "questions": len(rows),
                "images": len({r.image_id for r in rows}),
                "per_difficulty": {str(d): n for d, n in sorted(Counter(r.difficulty for r in rows).items())},
            }
            for name, rows in splits.items()
        }
    if generation is not None:
        report["generation"] = {k: dict(v) for k, v in generation.items()}
    if reading is not None:
        report["reading"] = dict(reading)
    if config is not None:
        report["config"] = dict(config)
    return report


def quality_sample(accepted: Sequence[Accepted], seed: int, size: int = QUALITY_SAMPLE) -> dict[str, Any]:
    """``size`` accepted rows drawn at random with ``seed`` (kept in their accepted order)."""
    chosen = sorted(random.Random(seed).sample(range(len(accepted)), min(size, len(accepted))))
    rows = [
        {"image_id": a.image_id, "question": a.question, "answer": a.answer,
         "difficulty": a.difficulty, "generator": a.generator}
        for a in (accepted[i] for i in chosen)
    ]  # fmt: skip
    return {"seed": seed, "of": len(accepted), "rows": rows}


def report_markdown(report: Mapping[str, Any]) -> str:
    lines = ["# abo_single_word curation report", ""]
    lines.append(
        f"{report['accepted']} questions about {report['images']} images accepted; "
        f"{report['rejected']['total']} rejected."
    )
    lines += ["", "## Per difficulty", "", "| difficulty | questions |", "|---|---|"]
    lines += [f"| {d} | {n} |" for d, n in report["per_difficulty"].items()]
    lines += ["", "## Per generator", "", "| generator | accepted | per difficulty |", "|---|---|---|"]
    for g, facts in report["per_generator"].items():
        mix = ", ".join(f"{d}: {n}" for d, n in facts["per_difficulty"].items())
        lines.append(f"| {g} | {facts['accepted']} | {mix} |")
    if report.get("splits"):
        lines += ["", "## Splits", "", "| split | questions | images | per difficulty |", "|---|---|---|---|"]
        for name, facts in report["splits"].items():
            mix = ", ".join(f"{d}: {n}" for d, n in facts["per_difficulty"].items())
            lines.append(f"| {name} | {facts['questions']} | {facts['images']} | {mix} |")
    lines += ["", "## Rejected, by reason", ""]
    if report["rejected"]["by_generator"]:
        lines += ["| generator | reason | count |", "|---|---|---|"]
        for g, counts in report["rejected"]["by_generator"].items():
            lines += [f"| {g} | {r} | {n} |" for r, n in counts.items()]
    else:
        lines.append("None.")
    lines += _examples_markdown(report["rejected"].get("examples") or {})
    lines += _sample_markdown(report.get("quality_sample"))
    answers = report["answers"]
    lines += [
        "",
        "## Answers",
        "",
        f"Vocabulary: {answers['vocabulary_size']} distinct answers (after VQA normalisation); "
        f"yes/no share {answers['yes_no_share']:.2%}.",
        "",
        "| answer | count |",
        "|---|---|",
    ]
    lines += [f"| {t['answer']} | {t['count']} |" for t in answers["top"]]
    if report.get("generation"):
        lines += ["", "## Generation", ""]
        for g, facts in report["generation"].items():
            shown = {k: v for k, v in facts.items() if k != "unparsed" and v not in ({}, None)}
            lines.append(f"- **{g}**: " + ", ".join(f"{k} {_fmt(v)}" for k, v in shown.items()))
    if report.get("reading"):
        lines += ["", "## Listings read", ""]
        lines.append(", ".join(f"{k} {v}" for k, v in report["reading"].items()))
    lines += [
        "",
        "Images and listings: Amazon Berkeley Objects, © Amazon.com, CC BY 4.0 "
        "(https://creativecommons.org/licenses/by/4.0/); images as published in the 256-px small variant.",
        "",
    ]
    return "\n".join(lines)


def _cell(value: Any, width: int = 160) -> str:
    """``value`` fit for one Markdown table cell: one line (a reply's line breaks shown as ⏎), pipes
    escaped, long text shortened."""
    lines = (" ".join(line.split()) for line in str("" if value is None else value).splitlines())
    text = " ⏎ ".join(line for line in lines if line).replace("|", "\\|")
    return text if len(text) <= width else text[: width - 1] + "…"


def _examples_markdown(examples: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[str]:
    """Per reason, the rejected items (or, for replies that could not be read, the replies)."""
    if not examples:
        return []
    lines = ["", "## Rejected, examples", ""]
    for reason in sorted(examples):
        lines += [f"### {reason}", ""]
        shown = examples[reason]
        if shown and "reply" in shown[0]:
            lines += ["| generator | listing | reply |", "|---|---|---|"]
            lines += [
                f"| {_cell(e['generator'])} | {_cell(e['listing'])} | {_cell(e['reply'])} |" for e in shown
            ]
        else:
            lines += ["| generator | image | question | answer | difficulty |", "|---|---|---|---|---|"]
            lines += [
                f"| {_cell(e['generator'])} | {_cell(e['image_id'])} | {_cell(e['question'])} | "
                f"{_cell(e['answer'])} | {_cell(e['difficulty'])} |"
                for e in shown
            ]
        lines.append("")
    return lines[:-1]


def _sample_markdown(sample: Mapping[str, Any] | None) -> list[str]:
    if not sample or not sample["rows"]:
        return []
    lines = [
        "",
        "## Sample for a manual check",
        "",
        f"{len(sample['rows'])} of the {sample['of']} accepted rows, drawn at random with seed {sample['seed']} "
        "(the same data and seed draw the same rows). Mark each as right or wrong in the last column.",
        "",
        "| image | question | answer | difficulty | generator | ok? |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {_cell(r['image_id'])} | {_cell(r['question'])} | {_cell(r['answer'])} | {r['difficulty']} | "
        f"{_cell(r['generator'])} |  |"
        for r in sample["rows"]
    ]
    return lines


def _fmt(value: Any) -> str:
    if isinstance(value, dict):
        return "(" + ", ".join(f"{k} {_fmt(v)}" for k, v in value.items()) + ")"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def write_report(report: Mapping[str, Any], folder: Path) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` into ``folder``."""
    folder = Path(folder)
    json_path, md_path = folder / "report.json", folder / "report.md"
    write_json(json_path, report)
    write_text(md_path, report_markdown(report))
    return json_path, md_path
