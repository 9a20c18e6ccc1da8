"""What a ``vlmbench view`` page asks for (task, models, difficulty, right/wrong per model, disagreement,
text search, sort, a pair of runs, a page) and its answer: the selected rows in order, the metrics
recomputed on them beside the whole-run values, and one page of rows ready for a template.

The same :class:`Query` comes from the page's form (:func:`parse_query`) and from the command line's
``--export`` options, so a shared static copy holds exactly what the page showed."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from vlmbench.analysis.explorer import (
    OUTCOMES,
    PAGE_SIZE,
    UNKNOWN_LEVEL,
    Explorer,
    TaskTable,
    level_name,
    mean_of,
)
from vlmbench.errors import VlmbenchError


@dataclass(frozen=True)
class Query:
    """A selection of one task's samples. Empty tuples mean "no restriction"; ``models`` are the runs shown
    (all when empty); ``outcomes`` pairs a run's label with right, wrong or skipped; ``sort`` is
    ``METRIC:LABEL`` (a per-sample score of one run); ``pair`` puts two runs side by side, flips first."""

    task: str | None = None
    models: tuple[str, ...] = ()
    difficulties: tuple[int, ...] = ()
    outcomes: tuple[tuple[str, str], ...] = ()
    disagree: bool = False
    search: str = ""
    sort: str = ""
    descending: bool = False
    pair: tuple[str, str] | None = None
    page: int = 1


def parse_query(get: Callable[[str], str | None], getlist: Callable[[str], list[str]]) -> Query:
    """A :class:`Query` from form fields (``get`` one value, ``getlist`` all values of a name)."""
    difficulties = []
    for value in getlist("difficulty"):
        if value == "unknown":
            difficulties.append(UNKNOWN_LEVEL)
        elif value.strip().lstrip("-").isdigit():
            difficulties.append(int(value))
        else:
            raise VlmbenchError(f"difficulty {value!r} is not a whole number or 'unknown'")
    outcomes = []
    for value in getlist("outcome"):
        if not value:
            continue  # the form's "any"
        label, sep, outcome = value.rpartition("=")
        if not sep or outcome not in OUTCOMES:
            raise VlmbenchError(f"outcome {value!r}: expected MODEL=right, MODEL=wrong or MODEL=skipped")
        outcomes.append((label, outcome))
    pair = None
    if get("pair"):
        a, sep, b = (get("pair") or "").partition(" vs ")
        if not sep:
            raise VlmbenchError(f"pair {get('pair')!r}: expected 'A vs B'")
        pair = (a, b)
    page = get("page") or "1"
    if not page.isdigit() or int(page) < 1:
        raise VlmbenchError(f"page {page!r} is not a page number")
    return Query(
        task=get("task") or None,
        models=tuple(m for m in getlist("model") if m),
        difficulties=tuple(difficulties),
        outcomes=tuple(outcomes),
        disagree=bool(get("disagree")),
        search=(get("q") or "").strip(),
        sort=get("sort") or "",
        descending=get("order") == "desc",
        pair=pair,
        page=int(page),
    )


def shown_models(table: TaskTable, query: Query) -> list[str]:
    """The runs whose answers are shown: the pair, else the ones asked for, else all (each checked)."""
    labels = list(query.pair) if query.pair else list(query.models) or table.labels
    for label in labels:
        table.model(label)
    return labels


def select(table: TaskTable, query: Query) -> tuple[np.ndarray, dict[str, str]]:
    """The indices of the samples ``query`` selects, in the order shown, and the flip of each sample of a
    pair (sample id -> "right → wrong" or "wrong → right")."""
    shown = shown_models(table, query)
    mask = np.ones(len(table.sample_ids), dtype=bool)
    if query.difficulties:
        mask &= np.isin(table.difficulty, np.asarray(query.difficulties, dtype=np.int64))
    for label, outcome in query.outcomes:
        m = table.model(label)
        mask &= {"right": m.right, "wrong": m.ok & ~m.right, "skipped": m.present & ~m.ok}[outcome]
    if query.disagree:
        codes = np.stack([table.model(label).codes for label in shown])
        answered = codes >= 0
        high = np.where(answered, codes, -1).max(axis=0)
        low = np.where(answered, codes, np.iinfo(np.int64).max).min(axis=0)
        mask &= (answered.sum(axis=0) >= 2) & (high != low)
    if query.search:
        needle = query.search.lower()
        mask &= np.fromiter((needle in text for text in table.haystack), dtype=bool, count=len(mask))
    chosen = np.flatnonzero(mask)
    if query.sort:
        chosen = _sorted(table, chosen, query)
    flips: dict[str, str] = {}
    if query.pair:
        report = table.pair(*query.pair)
        first = []
        for key, name in (("right_to_wrong", "right → wrong"), ("wrong_to_right", "wrong → right")):
            for flip in report["flips"][key]:
                flips[flip["sample_id"]] = name
                first.append(flip["sample_id"])
        position = {sid: i for i, sid in enumerate(first)}
        rank = np.array([position.get(table.sample_ids[i], len(first)) for i in chosen], dtype=np.int64)
        chosen = chosen[np.argsort(rank, kind="stable")]
    return chosen, flips


def _sorted(table: TaskTable, chosen: np.ndarray, query: Query) -> np.ndarray:
    metric, _, label = query.sort.partition(":")
    column = table.model(label).scores.get(metric)
    if column is None:
        raise VlmbenchError(f"sort {query.sort!r}: {label} has no per-sample {metric!r} scores")
    values = column[chosen]
    # samples without a score go last either way; the sort is stable, so ties keep the task's order
    key = np.where(np.isnan(values), np.inf, -values if query.descending else values)
    return chosen[np.argsort(key, kind="stable")]


def summary(table: TaskTable, chosen: np.ndarray, shown: Sequence[str]) -> list[dict]:
    """Per shown run: samples answered, right, and every metric on the selection beside the whole run:
    the mean of its per-sample scores, or a corpus-level metric rebuilt as ``compare`` rebuilds it (where
    it cannot be, no value and the reason why)."""
    mask = np.zeros(len(table.sample_ids), dtype=bool)
    mask[chosen] = True
    out = []
    for label in shown:
        m = table.model(label)
        metrics = []
        for name in [*table.metrics, *table.corpus_metrics]:
            if name in m.scores:
                value, why = mean_of(m.scores[name], mask & m.ok), ""
            else:
                value, why = m.corpus_value(name, mask, table.difficulty)
            metrics.append({"name": name, "selection": value, "whole": m.whole_run(name), "why": why})
        out.append(
            {
                "label": label,
                "answered": int((mask & m.ok).sum()),
                "right": int((mask & m.right).sum()),
                "whole_answered": int(m.ok.sum()),
                "whole_right": int(m.right.sum()),
                "metrics": metrics,
            }
        )
    return out


def page_rows(
    table: TaskTable, indices: np.ndarray, shown: Sequence[str], flips: Mapping[str, str]
) -> list[dict]:
    """The rows of one page as plain values for a template (the template escapes every one)."""
    rows = []
    for i in (int(x) for x in indices):
        cells = []
        for label in shown:
            m = table.model(label)
            cells.append(
                {
                    "label": label,
                    "answer": m.answers[i],
                    "state": "right" if m.right[i] else "wrong" if m.ok[i] else "skipped",
                    "reason": m.reasons.get(i, ""),
                    "scores": [(k, float(v[i])) for k, v in m.scores.items() if not np.isnan(v[i])],
                }
            )
        sid = table.sample_ids[i]
        rows.append(
            {
                "index": i,
                "sample_id": sid,
                "question": table.questions[i],
                "references": table.references[i],
                "difficulty": level_name(int(table.difficulty[i])),
                "image": table.images[i],
                "flip": flips.get(sid, ""),
                "cells": cells,
            }
        )
    return rows


@dataclass
class Page:
    """One page of a query's answer, what the template and the export need."""

    table: TaskTable
    query: Query
    shown: list[str]
    total: int
    pages: int
    rows: list[dict]
    summary: list[dict]
    flips: dict[str, str]


def run_query(explorer: Explorer, query: Query, page_size: int = PAGE_SIZE) -> Page:
    """Select, summarise and cut out the page ``query.page`` (the last one when it asks past the end)."""
    table = explorer.task(query.task)
    shown = shown_models(table, query)
    chosen, flips = select(table, query)
    pages = max(1, -(-len(chosen) // page_size))
    query = replace(query, task=table.name, page=min(query.page, pages))
    start = (query.page - 1) * page_size
    rows = page_rows(table, chosen[start : start + page_size], shown, flips)
    return Page(table, query, shown, len(chosen), pages, rows, summary(table, chosen, shown), flips)
