"""``prior``: a blind baseline that never looks at the image.

For each question it finds the ``k`` most similar training questions (TF-IDF cosine over lower-cased
word tokens) and answers with the most frequent of their answers. Ties go to the answer whose voters
are more similar in total, then to the more frequent answer overall. Training questions about the same
image are ignored (leave-one-image-out), so on a task without a training split the evaluated questions
serve as training data without any answer leaking into its own prediction. A question with no word in
common with any training question gets the most frequent training answer.

What it scores is how much of a task can be answered from the question text and the answer
distribution alone.
"""

from __future__ import annotations

import math
import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING

from vlmbench.api import Arg, Batch, GenerationSpec, Model, Request, Sample, VlmbenchError, vqa_normalize

if TYPE_CHECKING:
    import torch

_TOKEN = re.compile(r"[a-z0-9]+")


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


class PriorModel(Model):
    args = {
        "k": Arg(int, 10, "how many of the most similar training questions vote", min=1),
        "exclude_same_image": Arg(
            bool, True, "ignore training questions about the same image (leave-one-image-out)"
        ),
    }
    needs_training_data = True

    def fit(self, examples: Sequence[Sample]) -> None:
        import torch  # here, not at the top: option errors and cached reruns never need it

        examples = [e for e in examples if e.answers]
        if not examples:
            raise VlmbenchError("prior: no training examples with an answer")
        docs = [_tokens(e.question) for e in examples]
        df: Counter[str] = Counter(t for d in docs for t in set(d))
        self.vocab = {t: i for i, t in enumerate(sorted(df))}
        n = len(docs)
        self.idf = torch.tensor(
            [math.log((1 + n) / (1 + df[t])) + 1.0 for t in sorted(df)], dtype=torch.float32
        )
        self.train = self._vectors(docs)  # sparse CSR, rows L2-normalised

        spellings: dict[str, Counter[str]] = defaultdict(Counter)
        keys = []
        for e in examples:
            key = vqa_normalize(e.answers[0])
            spellings[key][e.answers[0]] += 1
            keys.append(key)
        self.answer_keys = sorted(spellings)
        code = {k: i for i, k in enumerate(self.answer_keys)}
        self.surface = [spellings[k].most_common(1)[0][0] for k in self.answer_keys]
        self.answer_code = torch.tensor([code[k] for k in keys], dtype=torch.long)
        self.frequency = torch.bincount(self.answer_code, minlength=len(self.answer_keys)).float()
        image_codes: dict[str, int] = {}
        self.image_code = torch.tensor(
            [image_codes.setdefault(e.image_id, len(image_codes)) for e in examples]
        )
        self.image_codes = image_codes

    def _vectors(self, docs: list[list[str]]) -> torch.Tensor:
        import torch

        crow, cols, vals = [0], [], []
        for doc in docs:
            counts = Counter(self.vocab[t] for t in doc if t in self.vocab)
            idx = sorted(counts)
            weights = [counts[i] * float(self.idf[i]) for i in idx]
            norm = math.sqrt(sum(w * w for w in weights)) or 1.0
            cols.extend(idx)
            vals.extend(w / norm for w in weights)
            crow.append(len(cols))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return torch.sparse_csr_tensor(
                torch.tensor(crow, dtype=torch.int64),
                torch.tensor(cols, dtype=torch.int64),
                torch.tensor(vals, dtype=torch.float32),
                size=(len(docs), len(self.vocab)),
                check_invariants=False,  # built right here, sorted and in range
            )

    def _votes(self, requests: list[Request]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per request and answer: the number of votes among the k nearest training questions, and
        the summed similarity of those voters."""
        import torch

        queries = self._vectors([_tokens(r.question) for r in requests]).to_dense()  # (B, V)
        sims = torch.sparse.mm(self.train, queries.T).T  # (B, N)
        if self.arg_values["exclude_same_image"]:
            own = torch.tensor([self.image_codes.get(r.image_id, -1) for r in requests])
            sims[self.image_code.unsqueeze(0) == own.unsqueeze(1)] = -1.0
        k = min(self.arg_values["k"], sims.shape[1])
        top_sims, top_idx = sims.topk(k, dim=1)
        useful = (top_sims > 0).float()
        codes = self.answer_code[top_idx]
        n_answers = len(self.answer_keys)
        votes = torch.zeros(len(requests), n_answers).scatter_add_(1, codes, useful)
        closeness = torch.zeros(len(requests), n_answers).scatter_add_(
            1, codes, top_sims.clamp(min=0) * useful
        )
        return votes, closeness

    def generate(self, batch: Batch, generation: GenerationSpec) -> list[str]:
        votes, closeness = self._votes(batch.requests)
        # Lexicographic choice: most votes, then most similar voters, then most frequent overall.
        top = votes == votes.max(dim=1, keepdim=True).values
        close = closeness.masked_fill(~top, -1.0)
        top &= close >= close.max(dim=1, keepdim=True).values - 1e-6
        best = self.frequency.expand_as(votes).masked_fill(~top, -1.0).argmax(dim=1)
        return [self.surface[i] for i in best.tolist()]

    def rank(self, batch: Batch) -> list[list[float]]:
        votes, closeness = self._votes(batch.requests)
        # Votes first; closeness (< 1 after scaling) and frequency (tiny) only order ties.
        k = float(self.arg_values["k"])
        pref = votes + 0.5 * closeness / (k + 1.0) + 1e-6 * self.frequency / self.frequency.sum()
        code = {k: i for i, k in enumerate(self.answer_keys)}
        out = []
        for row, request in zip(pref, batch.requests, strict=True):
            idx = [code.get(vqa_normalize(c), -1) for c in request.candidates]
            out.append([float(row[i]) if i >= 0 else 0.0 for i in idx])
        return out

    def describe(self) -> dict:
        return {**super().describe(), "parameters": 0, "checkpoint": None}
