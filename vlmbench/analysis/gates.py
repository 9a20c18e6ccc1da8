"""Regression gates: ``--fail-on-regression METRIC:TOL`` applied to a comparison report."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from vlmbench.errors import VlmbenchError, unknown_message


@dataclass(frozen=True)
class Gate:
    metric: str
    tolerance: float


def parse_gate(text: str) -> Gate:
    """``METRIC:TOL`` (e.g. ``exact_match:0.01``); the tolerance is an absolute change in the metric."""
    name, sep, tol = text.rpartition(":")
    if not sep or not name:
        raise VlmbenchError(
            f"--fail-on-regression {text!r}: expected METRIC:TOLERANCE, e.g. exact_match:0.01"
        )
    try:
        tolerance = float(tol)
    except ValueError:
        raise VlmbenchError(f"--fail-on-regression {text!r}: tolerance {tol!r} is not a number") from None
    if not math.isfinite(tolerance) or tolerance < 0:
        raise VlmbenchError(f"--fail-on-regression {text!r}: tolerance must be a non-negative number")
    return Gate(name, tolerance)


def regressions(report: dict, gates: Sequence[Gate]) -> list[str]:
    """One message per (run, gate) whose delta goes the wrong way by more than the tolerance."""
    failures = []
    for gate in gates:
        for comp in report["comparisons"]:
            m = comp["metrics"].get(gate.metric)
            if m is None:
                raise VlmbenchError(unknown_message("metric to gate on", gate.metric, list(comp["metrics"])))
            delta = m.get("delta")
            if delta is None:
                raise VlmbenchError(f"cannot gate on {gate.metric}: no value for {comp['run']['label']}")
            worse = -delta if m.get("higher_is_better", True) else delta
            if worse > gate.tolerance:
                direction = "fell" if m.get("higher_is_better", True) else "rose"
                failures.append(
                    f"regression: {gate.metric} {direction} by {abs(delta):.4f} "
                    f"({m['a']:.4f} -> {m['b']:.4f}, delta {delta:+.4f}) for {comp['run']['label']} "
                    f"vs baseline {comp['baseline']['label']}, beyond the tolerance {gate.tolerance:g}"
                )
    return failures
