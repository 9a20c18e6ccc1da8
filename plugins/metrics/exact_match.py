"""Exact Match: 1.0 when prediction and reference are identical after VQA normalisation (by default),
after lower-casing (``normalize=false, lowercase=true``: the seed study's whole-answer match), or as
written (``normalize=false``)."""

from __future__ import annotations

from collections.abc import Sequence

from vlmbench.api import Arg, SampleMetric, vqa_normalize


class ExactMatch(SampleMetric):
    # 2: normalisation deletes at most 32 periods, as the official VQA evaluation does.
    version = "2"
    args = {
        "normalize": Arg(
            bool, True, "apply VQA normalisation to both sides first (else: exact string equality)"
        ),
        "lowercase": Arg(
            bool, False, "with normalize=false: compare the stripped, lower-cased strings (whole answers)"
        ),
    }

    def _norm(self, text: str) -> str:
        if self.options["normalize"]:
            return vqa_normalize(text)
        return text.strip().lower() if self.options["lowercase"] else text

    def score(self, predictions: Sequence[str], references: Sequence[str]) -> dict[str, list[float]]:
        norm = self._norm
        return {self.name: [float(norm(p) == norm(r)) for p, r in zip(predictions, references, strict=True)]}

    def describe(self) -> dict:
        definition = (
            "VQA-normalised string equality (VQA v2 evaluation rules, its quirks included: at most 32 "
            "periods are deleted)"
            if self.options["normalize"]
            else "equality of the stripped, lower-cased strings"
            if self.options["lowercase"]
            else "exact string equality"
        )
        return {**super().describe(), "definition": definition}
