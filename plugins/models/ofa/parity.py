"""Numerical parity against a fixture produced by the official implementation.

A fixture is a ``torch.save``d dict with ``config`` (port config keys), ``state_dict`` (without
the index tables), ``buffer_slices`` (``"name[:a,:b]"`` → the reference tables' slice),
``inputs`` (``input_ids``, ``patch_images``, ``decoder_input_ids``) and ``outputs`` (``logits``,
``encoder_last_hidden_state``). :func:`check_parity` rebuilds the model from it, loads the
weights through the strict loader and compares, in eval mode and float32.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from .config import OFAConfig
from .loading import load_weights
from .modeling import OFAModel

DEFAULT_TOLERANCE = 1e-5
FIXTURE_KEYS = {
    "config": None,
    "state_dict": None,
    "inputs": ("input_ids", "patch_images", "decoder_input_ids"),
    "outputs": ("logits", "encoder_last_hidden_state"),
}
_BUFFER_NAME = re.compile(r"^(?:(encoder|decoder)\.)?(\w+)(?:\[([0-9:, -]*)\])?$")


class FixtureError(ValueError):
    """A parity fixture that cannot be read or lacks a part; the message names it."""


@dataclass
class BufferCheck:
    name: str
    fixture_shape: tuple[int, ...]
    equal: bool
    mismatches: int = 0
    note: str = ""


@dataclass
class OutputCheck:
    name: str  # an output of the model's forward: logits, encoder_last_hidden_state
    shape: tuple[int, ...]  # the fixture's
    max_abs_diff: float  # inf when our shape differs
    passed: bool


@dataclass
class ParityReport:
    fixture: str
    config: dict
    tolerance: float
    outputs: list[OutputCheck]
    buffers: list[BufferCheck] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.outputs) and all(check.equal for check in self.buffers)

    def output(self, name: str) -> OutputCheck:
        return next(check for check in self.outputs if check.name == name)


def _parse_index(text: str | None) -> tuple[slice | int, ...]:
    """Parse ``":64,:64"`` style index text (integers and slices only; nothing is evaluated)."""
    if not text:
        return ()
    parts: list[slice | int] = []
    for part in text.split(","):
        part = part.strip()
        if ":" in part:
            bounds = [int(b) if b.strip() else None for b in part.split(":")]
            parts.append(slice(*bounds))
        else:
            parts.append(int(part))
    return tuple(parts)


def _check_buffer(model: OFAModel, name: str, expected: Tensor) -> BufferCheck:
    match = _BUFFER_NAME.match(name)
    shape = tuple(expected.shape)
    if match is None:
        return BufferCheck(name, shape, False, note="unrecognised buffer name")
    side, buffer_name, index_text = match.groups()
    owners = [getattr(model, side)] if side else [model.encoder, model.decoder]
    owner = next((o for o in owners if hasattr(o, buffer_name)), None)
    if owner is None:
        return BufferCheck(name, shape, False, note="no such buffer")
    try:
        actual = getattr(owner, buffer_name)[_parse_index(index_text)]
    except (IndexError, ValueError) as error:
        return BufferCheck(name, shape, False, note=f"cannot index: {error}")
    if tuple(actual.shape) != shape:
        return BufferCheck(name, shape, False, note=f"shape {list(actual.shape)} here")
    mismatches = int((actual.cpu() != expected).sum())
    return BufferCheck(name, shape, mismatches == 0, mismatches)


def _max_abs_diff(actual: Tensor, expected: Tensor) -> float:
    """Largest absolute difference; infinite when the shapes differ (reported as a failure)."""
    if tuple(actual.shape) != tuple(expected.shape):
        return float("inf")
    return (actual.float().cpu() - expected).abs().max().item()


def load_fixture(path: str | Path) -> dict:
    """Read a fixture (weights-only) and check that it has every part :func:`check_parity` uses."""
    try:
        fixture = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise FixtureError(f"{path}: cannot be read as a parity fixture ({error})") from error
    if not isinstance(fixture, dict):
        raise FixtureError(f"{path}: expected a dict, found {type(fixture).__name__}")
    missing = []
    for key, parts in FIXTURE_KEYS.items():
        if key not in fixture:
            missing.append(key)
        elif parts:
            missing += [f"{key}.{part}" for part in parts if part not in fixture[key]]
    if missing:
        raise FixtureError(f"{path}: not an OFA parity fixture: missing {', '.join(missing)}")
    return fixture


def check_parity(
    fixture_path: str | Path, tolerance: float = DEFAULT_TOLERANCE, device: str = "cpu"
) -> ParityReport:
    """Rebuild the fixture's model, run its inputs and compare with its recorded outputs."""
    fixture = load_fixture(fixture_path)
    config = OFAConfig.from_dict(fixture["config"])
    model = OFAModel(config)
    load_weights(model, fixture["state_dict"])
    model = model.to(device).eval()
    inputs = fixture["inputs"]
    with torch.no_grad():
        out = model(
            inputs["input_ids"].to(device),
            inputs["patch_images"].to(device, torch.float32),
            inputs["decoder_input_ids"].to(device),
        )
    outputs = []
    for name in FIXTURE_KEYS["outputs"]:
        expected = fixture["outputs"][name].float()
        diff = _max_abs_diff(getattr(out, name), expected)
        outputs.append(OutputCheck(name, tuple(expected.shape), diff, diff <= tolerance))
    buffers = [_check_buffer(model, name, value) for name, value in fixture.get("buffer_slices", {}).items()]
    return ParityReport(str(fixture_path), dict(fixture["config"]), tolerance, outputs, buffers)


def render_parity_report(report: ParityReport) -> str:
    def verdict(ok: bool) -> str:
        return "ok" if ok else "FAIL"

    lines = [
        f"OFA parity: {report.fixture}",
        "config: " + ", ".join(f"{key}={value}" for key, value in report.config.items()),
    ]
    for output in report.outputs:
        lines.append(
            f"{output.name} {list(output.shape)}: max |diff| = {output.max_abs_diff:.3e} "
            f"(tolerance {report.tolerance:.0e}) {verdict(output.passed)}"
        )
    for check in report.buffers:
        detail = f"{check.mismatches} entries differ" if check.mismatches else check.note
        lines.append(
            f"index buffer {check.name} {list(check.fixture_shape)}: {verdict(check.equal)}"
            + (f" ({detail})" if detail else "")
        )
    lines.append("PASSED" if report.passed else "FAILED")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m vlmbench_plugins.models.ofa.parity FIXTURE.pt [--tolerance T] [--device D]``:
    print the report; exit status 0 when it passes, 1 when it does not, 2 for an unusable fixture."""
    parser = argparse.ArgumentParser(prog="python -m vlmbench_plugins.models.ofa.parity")
    parser.add_argument("fixture")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    try:
        report = check_parity(args.fixture, tolerance=args.tolerance, device=args.device)
    except (FixtureError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(render_parity_report(report))
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
