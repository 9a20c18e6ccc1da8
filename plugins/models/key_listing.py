"""How the OFA and ViLBERT loaders list the weights that a checkpoint and a model disagree on."""

from __future__ import annotations

from collections.abc import Sequence


def listed_section(title: str, items: Sequence[str], limit: int, more: str = "") -> list[str]:
    """``title (n):`` and the first ``limit`` items indented, then how many were left out (followed by
    ``more``); nothing for no items. A checkpoint of the wrong model mismatches hundreds of keys: the
    first few tell what went wrong, all of them would bury it."""
    if not items:
        return []
    lines = [f"{title} ({len(items)}):", *(f"  {item}" for item in items[:limit])]
    if len(items) > limit:
        lines.append(f"  ... and {len(items) - limit} more{more}")
    return lines
