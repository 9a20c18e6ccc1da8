"""VQA inference helpers a model plugin calls: answer logits, the answer list, restricted argmax.

The VQA head is closed-vocabulary (3129 answers of VQA v2 trainval, in the row order of
``trainval_label2ans.pkl``). For single-word e-commerce answers two readings are offered: the plain
argmax over the whole list, and the argmax restricted to a task's candidate answers. The share of
reference answers the head cannot produce at all is reported by ``out_of_vocabulary_share``.
"""

from __future__ import annotations

import io
import json
import math
import pickle
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vlmbench.api import read_regular

from .features import RegionBatch, RegionFeatures, collate_regions
from .modeling import VilbertForVLTasks
from .tokenization import QuestionBatch

VQA_TASK_ID = 1  # task token of VQA in the 12-in-1 model


def _as_questions(tokens: QuestionBatch | Mapping[str, Tensor]) -> QuestionBatch:
    if isinstance(tokens, QuestionBatch):
        return tokens
    ids = tokens["input_txt"] if "input_txt" in tokens else tokens["input_ids"]
    mask = tokens.get("attention_mask", torch.ones_like(ids))
    types = tokens.get("token_type_ids", torch.zeros_like(ids))
    return QuestionBatch(ids, mask, types)


def _as_regions(features: RegionBatch | Sequence[RegionFeatures] | Mapping[str, Tensor]) -> RegionBatch:
    if isinstance(features, RegionBatch):
        return features
    if isinstance(features, Mapping):
        feats = features["input_imgs"]
        mask = features.get("image_attention_mask")
        if mask is None:
            mask = torch.ones(feats.shape[:2], dtype=torch.long)
        return RegionBatch(feats, features["image_loc"], mask)
    return collate_regions(list(features))


def answer_logits(
    model: VilbertForVLTasks,
    tokens: QuestionBatch | Mapping[str, Tensor],
    features: RegionBatch | Sequence[RegionFeatures] | Mapping[str, Tensor],
    task_id: int = VQA_TASK_ID,
) -> Tensor:
    """VQA answer logits ``[B, 3129]`` (the model's ``vil_prediction``) for questions and image regions.

    Runs only the encoder and the VQA head (not the masked-token and region heads of the full forward).
    The model must be in eval mode; inputs are moved to the model's device; logits come back as float32.
    """
    if model.training:
        raise ValueError("answer_logits needs the model in eval mode (model.eval())")
    questions, regions = _as_questions(tokens), _as_regions(features)
    if questions.input_txt.shape[0] != regions.input_imgs.shape[0]:
        raise ValueError(
            f"{questions.input_txt.shape[0]} questions but {regions.input_imgs.shape[0]} images in the batch"
        )
    weight = model.bert.embeddings.word_embeddings.weight
    device, dtype = weight.device, weight.dtype
    questions, regions = questions.to(device), regions.to(device)
    task_ids = None
    if model.config.task_specific_tokens:
        task_ids = torch.full((questions.input_txt.shape[0], 1), task_id, dtype=torch.long, device=device)
    with torch.inference_mode():
        pooled = model.fused_pooled(
            questions.input_txt,
            regions.input_imgs.to(dtype),
            regions.image_loc.to(dtype),
            token_type_ids=questions.token_type_ids,
            attention_mask=questions.attention_mask,
            image_attention_mask=regions.image_attention_mask,
            task_ids=task_ids,
        )
        return model.vil_prediction(pooled).float()


# -- answer vocabulary -----------------------------------------------------------------------------


def normalize_answer(answer: str) -> str:
    """Light normalisation for matching answers to the head's labels (lowercase, single spaces)."""
    return " ".join(str(answer).lower().split())


class _StringsUnpickler(pickle.Unpickler):
    """Admits only what pickle builds without importing anything: lists, dicts, strings, numbers."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name} from an answer file: only lists or dicts of strings are allowed"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refusing persistent ids in an answer file")


def read_answer_pickle(data: bytes) -> Any:
    """Unpickle an answer list without running code: any reference to a class or function is refused."""
    return _StringsUnpickler(io.BytesIO(data), encoding="utf-8").load()


def read_answer_file(path: str | Path) -> list[str]:
    """The head's answers in row order from ``trainval_label2ans.pkl`` (a pickled list, read with
    ``read_answer_pickle``), a JSON list or ``{answer: index}`` map, or a text file with one answer per
    line. Anything else than strings (and integer indices in a map) is an error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"answer list not found: {path} (the VQA trainval_label2ans.pkl)")
    data = read_regular(path)  # a FIFO swapped in after the check above is refused, not waited on
    if path.suffix == ".pkl":
        answers: Any = read_answer_pickle(data)
    elif path.suffix == ".json":
        answers = json.loads(data.decode("utf-8"))
    else:
        answers = data.decode("utf-8").splitlines()
    if isinstance(answers, Mapping):  # ans2label: answer -> row
        if not all(isinstance(a, str) and type(i) is int for a, i in answers.items()):
            raise ValueError(f"{path}: expected a map of answer strings to integer rows")
        order = sorted(answers.items(), key=lambda item: item[1])
        if [i for _, i in order] != list(range(len(order))):
            raise ValueError(f"{path}: answer indices are not 0..{len(order) - 1}")
        answers = [a for a, _ in order]
    if not isinstance(answers, list | tuple) or not all(isinstance(a, str) for a in answers):
        raise ValueError(f"{path}: expected a list of answer strings")
    if not answers:
        raise ValueError(f"{path}: the answer list is empty")
    return list(answers)


class AnswerVocabulary:
    """The head's answer list: row i of ``vil_prediction`` is ``answers[i]``.

    ``normalize`` maps answers and queries to the key they are matched on (default: lower case, single
    spaces); the first answer of a key wins.
    """

    def __init__(self, answers: Sequence[str], normalize: Callable[[str], str] | None = None) -> None:
        self.answers = [str(a) for a in answers]
        self.normalize = normalize or normalize_answer
        self._index: dict[str, int] = {}
        for i, answer in enumerate(self.answers):
            self._index.setdefault(self.normalize(answer), i)

    @classmethod
    def from_file(cls, path: str | Path, normalize: Callable[[str], str] | None = None) -> AnswerVocabulary:
        """Read an answer file (see ``read_answer_file``)."""
        return cls(read_answer_file(path), normalize)

    def __len__(self) -> int:
        return len(self.answers)

    def __contains__(self, answer: object) -> bool:
        return self.normalize(str(answer)) in self._index

    def index(self, answer: str) -> int | None:
        return self._index.get(self.normalize(answer))

    def check_head(self, logits: Tensor) -> None:
        if logits.shape[-1] != len(self):
            raise ValueError(f"{logits.shape[-1]} answer logits but {len(self)} answers in the list")


def predict_answers(logits: Tensor, vocab: AnswerVocabulary) -> list[str]:
    """Plain argmax over the whole answer list."""
    vocab.check_head(logits)
    return [vocab.answers[i] for i in logits.argmax(dim=-1).tolist()]


def candidate_scores(
    logits: Tensor, vocab: AnswerVocabulary, candidates: Sequence[Sequence[str]]
) -> list[list[float]]:
    """Per sample, the logit of each candidate answer; ``-inf`` for candidates the head cannot produce."""
    vocab.check_head(logits)
    if len(candidates) != logits.shape[0]:
        raise ValueError(f"{len(candidates)} candidate lists for {logits.shape[0]} samples")
    rows = logits.detach().float().cpu()
    out: list[list[float]] = []
    for row, options in zip(rows, candidates, strict=True):
        idx = [vocab.index(option) for option in options]
        out.append([float(row[i]) if i is not None else -math.inf for i in idx])
    return out


def restricted_answers(
    logits: Tensor, vocab: AnswerVocabulary, candidates: Sequence[Sequence[str]]
) -> list[str | None]:
    """Argmax restricted to each sample's candidates; None when no candidate is in the answer list."""
    answers: list[str | None] = []
    for options, scores in zip(candidates, candidate_scores(logits, vocab, candidates), strict=True):
        best = max(range(len(options)), key=scores.__getitem__, default=None)
        answers.append(options[best] if best is not None and scores[best] > -math.inf else None)
    return answers


def out_of_vocabulary_share(references: Iterable[str], vocab: AnswerVocabulary) -> float:
    """Share of reference answers that are not in the head's answer list (cannot be predicted)."""
    refs = list(references)
    if not refs:
        return 0.0
    return sum(ref not in vocab for ref in refs) / len(refs)
