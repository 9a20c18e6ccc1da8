"""A task: its validated spec, its samples, candidate answers, prompts and identity hash."""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from dataclasses import asdict
from functools import cached_property
from pathlib import Path

from vlmbench.errors import DataError
from vlmbench.files import read_named_text, read_regular
from vlmbench.hashing import json_digest
from vlmbench.tasks.dataset import ImageSource, LoadedSplit, Sample, load_split
from vlmbench.tasks.normalize import vqa_normalize
from vlmbench.tasks.spec import CandidateSpec, TaskSpec


def question_type(question: str, words: int = 2) -> str:
    """A coarse question type: the first words, lower-cased ("What colour is..." -> "what colour")."""
    return " ".join(vqa_normalize(question).split()[:words])


class Task:
    def __init__(self, spec: TaskSpec):
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.task

    def with_spec(self, spec: TaskSpec) -> Task:
        """The same data under another spec of it (a protocol's): splits already read are shared,
        everything derived from the spec (candidates, hash) is derived again."""
        other = Task(spec)
        for key in ("_eval", "train_samples"):
            if key in self.__dict__ and spec.dataset == self.spec.dataset:
                other.__dict__[key] = self.__dict__[key]
        return other

    @cached_property
    def _eval(self) -> tuple[LoadedSplit, ImageSource]:
        return load_split(self.spec.dataset, self.spec.split)

    @property
    def samples(self) -> list[Sample]:
        """The samples to evaluate, in file order."""
        return self._eval[0].samples

    @property
    def row_problems(self):
        return self._eval[0].problems

    @property
    def image_source(self) -> ImageSource:
        return self._eval[1]

    @cached_property
    def train_samples(self) -> list[Sample] | None:
        """The training split's samples, or None when the task has no training split."""
        if not self.spec.train_split:
            return None
        loaded, _ = load_split(self.spec.dataset, self.spec.train_split)
        if not loaded.samples:
            raise DataError(f"task {self.name}: train split {self.spec.train_split!r} has no samples")
        return loaded.samples

    @cached_property
    def hash(self) -> str:
        """Identity of everything that determines the requests: spec (minus local paths) and data content."""
        spec = asdict(self.spec)
        spec.pop("source_path", None)
        spec["dataset"].pop("image_root", None)
        spec["dataset"]["path"] = Path(self.spec.dataset.path).name
        spec["data_hash"] = self._eval[0].content_hash
        if self.spec.train_split and self.spec.dataset.format == "hf":
            spec["train_data_hash"] = load_split(self.spec.dataset, self.spec.train_split)[0].content_hash
        if self.spec.candidates and self.spec.candidates.path:
            spec["candidates"]["path"] = hashlib.sha256(read_regular(self.spec.candidates.path)).hexdigest()
        # Metrics and filters are applied to stored outputs; they do not change what a model is asked.
        for key in ("metrics", "filters", "description", "bootstrap_samples", "difficulty_weights"):
            spec.pop(key, None)
        return json_digest(spec)

    def render_prompt(self, template: str, sample: Sample, candidates: tuple[str, ...] = ()) -> str:
        return template.format(question=sample.question, choices=", ".join(candidates))

    @property
    def candidate_spec(self) -> CandidateSpec:
        """Where candidate answers come from: the task's ``candidates``, else — for a model that can only
        rank, asked a ``generate`` task — the training answers (or the task's own without a train split)."""
        if self.spec.candidates is not None:
            return self.spec.candidates
        return CandidateSpec("train_answers" if self.spec.train_split else "task_answers")

    @cached_property
    def _candidate_pool(self) -> list[tuple[str, str]]:
        """(question type, answer) pairs that candidates are drawn from, or ("", answer) from a file."""
        cand = self.candidate_spec
        if cand.source == "file":
            return [("", a) for a in _read_candidate_file(Path(cand.path))]
        if cand.source == "reference_and_list":
            return [("", a) for a in cand.answers]
        pool = self.train_samples if cand.source == "train_answers" else self.samples
        return [(question_type(s.question), a) for s in pool or [] for a in s.answers]

    @cached_property
    def candidates(self) -> tuple[str, ...]:
        """The candidate answers for ``rank`` requests (most frequent first, one surface form each)."""
        return _rank_answers([a for _, a in self._candidate_pool], self.candidate_spec.top_k)

    @cached_property
    def _candidates_by_type(self) -> dict[str, tuple[str, ...]]:
        by_type: dict[str, list[str]] = defaultdict(list)
        for qtype, answer in self._candidate_pool:
            by_type[qtype].append(answer)
        top_k = self.candidate_spec.top_k
        return {qtype: _rank_answers(answers, top_k) for qtype, answers in by_type.items()}

    def candidates_for(self, sample: Sample) -> tuple[str, ...]:
        """Candidates for one sample: restricted to its question type when the task asks for it."""
        cand = self.candidate_spec
        if cand.source == "reference_and_list":
            # A short fixed list with the sample's own reference in it (how some studies ranked):
            # the reference is always a candidate, so this measures a choice among few, not recall.
            listed = {vqa_normalize(a) for a in cand.answers}
            own = [a for a in sample.answers[:1] if vqa_normalize(a) not in listed]
            return (*cand.answers, *own)
        if cand.by_question_type and cand.source != "file":
            restricted = self._candidates_by_type.get(question_type(sample.question))
            if restricted:
                return restricted
        return self.candidates

    def describe(self) -> dict:
        return {
            "name": self.name,
            "version": self.spec.version,
            "hash": self.hash,
            "split": self.spec.split,
            "request_type": self.spec.request_type,
            "source": str(self.spec.source_path) if self.spec.source_path else None,
            # where the samples' relative image paths start: `vlmbench view` serves images from here only
            "image_root": self.spec.dataset.image_root,
        }


def task_warnings(task: Task, samples: list[Sample]) -> Counter[str]:
    """Samples that are kept but deserve a note: references of several words (a single-word task's
    metrics treat them as one string), unknown difficulty, or a difficulty without a weight (left out
    of the Average Mark)."""
    counts: Counter[str] = Counter()
    weights = task.spec.difficulty_weights
    for s in samples:
        if any(len(a.split()) > 1 for a in s.answers):
            counts["multi_word_reference"] += 1
        if s.difficulty is None:
            counts["unknown_difficulty"] += 1
        elif s.difficulty not in weights:
            counts["difficulty_without_weight"] += 1
    return counts


def _rank_answers(answers: list[str], top_k: int | None) -> tuple[str, ...]:
    """Unique answers by normalised form, most frequent first, each in its most frequent spelling."""
    counts: Counter[str] = Counter()
    spellings: dict[str, Counter[str]] = defaultdict(Counter)
    for a in answers:
        key = vqa_normalize(a)
        if key:
            counts[key] += 1
            spellings[key][a] += 1
    ordered = sorted(counts, key=lambda k: (-counts[k], k))
    if top_k is not None:
        ordered = ordered[:top_k]
    return tuple(spellings[k].most_common(1)[0][0] for k in ordered)


def _read_candidate_file(path: Path) -> list[str]:
    """One answer per line (.txt) or a JSON list of strings (.json)."""
    text = read_named_text(path, "candidate file", DataError)
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise DataError(f"{path}: the candidate file is not valid JSON ({exc})") from None
        if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
            raise DataError(f"{path}: a candidate file in JSON must be a list of strings")
        answers = data
    else:
        answers = [line.strip() for line in text.splitlines()]
    answers = [a.strip() for a in answers if a.strip()]
    if not answers:
        raise DataError(f"{path}: the candidate file holds no answers")
    return answers
