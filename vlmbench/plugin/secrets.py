"""Secrets a generator knows (an API key) found and masked in what it returns, pieces of them included.

The data pipeline rejects generated items that hold one (counted as ``contains_secret``) and masks
them in everything else it stores or reports.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from vlmbench.plugin.generator import GenerationResult

MASK = "***"
#: The rejection reason of a generated item that contains a secret.
CONTAINS_SECRET = "contains_secret"


#: The shortest piece of a secret that counts as the secret: any run of this many of its characters in a
#: row (a prefix, a middle, a suffix) is found and masked. Shorter pieces occur in ordinary text by chance.
SECRET_FRAGMENT = 8


class SecretMask:
    """Finds and masks secrets in text, and any part of one: a service may echo a key in another case,
    cut to a prefix or split across words, and a key read from the environment may carry stray
    whitespace. Matching is case-insensitive, on the stripped value; every run of
    :data:`SECRET_FRAGMENT` characters of a secret (the whole secret, when shorter) counts as the secret,
    so that no substring of that length or longer can pass. A caller whose secrets are echoed in shorter
    pieces (a server's "Incorrect API key provided: sk-abc...wxyz") gives a smaller ``fragment``."""

    def __init__(self, secrets: Iterable[str], fragment: int = SECRET_FRAGMENT):
        values = {s.strip().lower() for s in secrets if s and s.strip()}
        self._size = fragment
        self._short = {v for v in values if len(v) < fragment}
        self._pieces = {
            v[i : i + fragment] for v in values - self._short for i in range(len(v) - fragment + 1)
        }
        self._active = bool(values)

    def _spans(self, text: str) -> list[tuple[int, int]]:
        """Where secrets or their pieces are in ``text``, as merged (start, end) spans."""
        lower = text.lower()
        size = self._size
        hits = [(i, i + size) for i in range(len(lower) - size + 1) if lower[i : i + size] in self._pieces]
        for short in self._short:
            start = lower.find(short)
            while start != -1:
                hits.append((start, start + len(short)))
                start = lower.find(short, start + 1)
        merged: list[tuple[int, int]] = []
        for start, end in sorted(hits):
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
            else:
                merged.append((start, end))
        return merged

    def found(self, text: str | None) -> bool:
        return bool(self._active and text and self._spans(text))

    def mask(self, text: str) -> str:
        if not (self._active and text):
            return text
        out, last = [], 0
        for start, end in self._spans(text):
            out += [text[last:start], MASK]
            last = end
        return "".join(out) + text[last:]

    def screen(self, result: GenerationResult) -> GenerationResult:
        """``result`` without the items that contain a secret (counted under ``contains_secret``), its
        error and raw reply masked."""
        if not self._active:
            return result
        fields = ("question", "answer", "source")
        kept = [i for i in result.items if not any(self.found(getattr(i, f)) for f in fields)]
        rejected = dict(result.rejected)
        if len(kept) < len(result.items):
            rejected[CONTAINS_SECRET] = rejected.get(CONTAINS_SECRET, 0) + len(result.items) - len(kept)
        return replace(
            result,
            items=kept,
            rejected=rejected,
            error=None if result.error is None else self.mask(result.error),
            raw=None if result.raw is None else self.mask(result.raw),
        )
