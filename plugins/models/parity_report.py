"""What the numerical parity reports of the ported models share: rows of compared outputs, a verdict
that needs every row (and at least one) to pass, and the largest absolute difference among them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, ClassVar


class ComparedRows:
    """For a parity report dataclass whose field named ``ROWS`` lists compared outputs, each with a
    ``passed`` verdict and a ``max_abs_diff`` (inf where the output is missing or has another shape)."""

    ROWS: ClassVar[str]

    @property
    def passed(self) -> bool:
        rows = getattr(self, self.ROWS)
        return bool(rows) and all(row.passed for row in rows)

    @property
    def max_abs_diff(self) -> float:
        return max((row.max_abs_diff for row in getattr(self, self.ROWS)), default=math.inf)

    def to_dict(self) -> dict[str, Any]:
        """The report's fields, its verdict and its largest difference (what ``--json`` prints)."""
        return {**asdict(self), "passed": self.passed, "max_abs_diff": self.max_abs_diff}


def render_rows(
    heading: Sequence[str],
    label: str,
    rows: Sequence[tuple[str, str, float, Sequence[str], bool]],
    summary: str,
    extra_columns: Sequence[str] = (),
) -> str:
    """A plain-text report: ``heading``, then a table with a row per compared output (its name under
    ``label``, its shape, its largest absolute difference, a cell per ``extra_columns`` and its
    verdict) and ``summary`` as the last line."""
    width = max([len(name) for name, *_ in rows] + [6])
    extra = "".join(f"  {column:>9}" for column in extra_columns)
    lines = [*heading, f"{label:<{width}}  {'shape':<16}  {'max |diff|':>11}{extra}  result"]
    for name, shape, diff, cells, passed in rows:
        more = "".join(f"  {cell:>9}" for cell in cells)
        lines.append(f"{name:<{width}}  {shape:<16}  {diff:>11.3e}{more}  {'ok' if passed else 'FAIL'}")
    lines.append(summary)
    return "\n".join(lines)
