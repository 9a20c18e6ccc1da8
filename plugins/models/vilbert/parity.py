"""Numerical parity against outputs of the original ViLBERT implementation.

A parity fixture is a ``torch.save``-d dict readable with ``weights_only=True``:

- ``config``: official-style config dict;
- ``state_dict``: weights of the original model at that config (multi-task or pretraining layout);
- ``inputs``: keyword arguments of the original ``forward`` (``input_txt``, ``input_imgs``, ...);
- ``outputs``: the original eval-mode outputs by name (``vil_prediction``, ... or ``prediction_scores_t``, ...).

``check_parity`` builds the model from the fixture's config, loads the weights strictly through the
same code path as real checkpoints, runs the forward pass in eval mode and compares every output.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from vlmbench_plugins.models.parity_report import ComparedRows, render_rows

from .config import VilbertConfig
from .loading import detect_variant, load_state_dict_strict, normalize_state_dict
from .modeling import build_model

DEFAULT_TOLERANCE = 1e-5
_FIXTURE_KEYS = ("config", "state_dict", "inputs", "outputs")


@dataclass
class OutputParity:
    name: str
    shape: tuple[int, ...] | None  # ours; None when the model did not produce it
    expected_shape: tuple[int, ...] | None
    max_abs_diff: float  # inf when shapes differ or the output is missing; nan when a side has NaNs
    passed: bool


@dataclass
class ParityReport(ComparedRows):
    ROWS: ClassVar[str] = "outputs"

    fixture: str
    variant: str
    tolerance: float
    config: dict[str, Any]
    outputs: list[OutputParity] = field(default_factory=list)


def load_fixture(fixture: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(fixture, Mapping):
        data = dict(fixture)
    else:
        data = torch.load(Path(fixture), map_location="cpu", weights_only=True)
        if not isinstance(data, Mapping):
            raise ValueError(f"{fixture}: a parity fixture is a dict, got {type(data).__name__}")
    missing = [k for k in _FIXTURE_KEYS if k not in data]
    if missing:
        raise ValueError(f"parity fixture lacks {missing}; expected keys {list(_FIXTURE_KEYS)}")
    return dict(data)


def _compare(name: str, ours: Any, expected: Any, tolerance: float) -> OutputParity:
    if not isinstance(expected, Tensor):
        # the original returns a plain 0 for outputs it did not compute
        same = not isinstance(ours, Tensor) and ours == expected
        return OutputParity(name, None, None, 0.0 if same else math.inf, same)
    expected_shape = tuple(expected.shape)
    if not isinstance(ours, Tensor):
        return OutputParity(name, None, expected_shape, math.inf, False)
    shape = tuple(ours.shape)
    if shape != expected_shape:
        return OutputParity(name, shape, expected_shape, math.inf, False)
    if ours.numel() == 0:
        return OutputParity(name, shape, expected_shape, 0.0, True)
    diff = (ours.detach().double().cpu() - expected.double()).abs().max().item()
    return OutputParity(name, shape, expected_shape, diff, bool(diff <= tolerance))  # NaN fails


def check_parity(
    fixture: str | Path | Mapping[str, Any],
    tolerance: float = DEFAULT_TOLERANCE,
    device: str | torch.device = "cpu",
) -> ParityReport:
    """Run our ViLBERT on a fixture and compare every output with the original's (max abs difference)."""
    data = load_fixture(fixture)
    config = VilbertConfig.from_dict(data["config"])
    variant = detect_variant(normalize_state_dict(data["state_dict"]))
    model = build_model(config, variant)
    load_state_dict_strict(model, data["state_dict"])
    model = model.to(device).eval()
    inputs = {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in data["inputs"].items()}
    with torch.inference_mode():
        try:
            produced = model(**inputs)._asdict()
        except TypeError as exc:
            raise ValueError(
                f"fixture inputs {sorted(inputs)} do not fit the {variant} forward: {exc}"
            ) from exc
    report = ParityReport(
        fixture="<dict>" if isinstance(fixture, Mapping) else str(fixture),
        variant=variant,
        tolerance=tolerance,
        config=config.to_dict(),
    )
    for name, expected in data["outputs"].items():
        report.outputs.append(_compare(name, produced.get(name), expected, tolerance))
    return report


def render_parity_report(report: ParityReport) -> str:
    """Plain-text table: one row per output with its shape, max abs difference and verdict."""
    rows = []
    for o in report.outputs:
        shape = "x".join(map(str, o.shape)) if o.shape is not None else "-"
        if o.expected_shape is not None and o.shape != o.expected_shape:
            shape += f" (want {'x'.join(map(str, o.expected_shape))})"
        rows.append((o.name, shape, o.max_abs_diff, (), o.passed))
    heading = [
        f"ViLBERT parity: {report.fixture}",
        f"layout: {report.variant}   tolerance: {report.tolerance:.1e}",
    ]
    verdict = "PASS" if report.passed else "FAIL"
    summary = f"{verdict}: max |diff| {report.max_abs_diff:.3e} over {len(report.outputs)} outputs"
    return render_rows(heading, "output", rows, summary)
