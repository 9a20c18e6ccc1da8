"""Numerical parity against a fixture produced by the official implementation.

A fixture is a ``torch.save``d dict with ``config`` (port config keys), ``state_dict`` (without
the index tables), ``buffer_slices`` (``"name[:a,:b]"`` → the reference tables' slice),
``inputs`` (``input_ids``, ``patch_images``, ``decoder_input_ids``) and ``outputs`` (``logits``,
``encoder_last_hidden_state``). :func:`check_parity` rebuilds the model from it, loads the
weights through the strict loader and compares, in eval mode and float32.
"""

from __future__ import annotations

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
_BUFFER_NAME = re.compile(r"^(?:(encoder|decoder)\.)?(\w+)(?:\[([0-9:, -]*)\])?$")


@dataclass
class BufferCheck:
    name: str
    fixture_shape: tuple[int, ...]
    equal: bool
    mismatches: int = 0
    note: str = ""


@dataclass
class ParityReport:
    fixture: str
    config: dict
    tolerance: float
    logits_max_abs_diff: float
    encoder_max_abs_diff: float
    logits_shape: tuple[int, ...]
    encoder_shape: tuple[int, ...]
    buffers: list[BufferCheck] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return (
            self.logits_max_abs_diff <= self.tolerance
            and self.encoder_max_abs_diff <= self.tolerance
            and all(check.equal for check in self.buffers)
        )


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


def check_parity(
    fixture_path: str | Path, tolerance: float = DEFAULT_TOLERANCE, device: str = "cpu"
) -> ParityReport:
    """Rebuild the fixture's model, run its inputs and compare with its recorded outputs."""
    fixture = torch.load(fixture_path, map_location="cpu", weights_only=True)
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
    expected_logits = fixture["outputs"]["logits"].float()
    expected_encoder = fixture["outputs"]["encoder_last_hidden_state"].float()
    logits_diff = (out.logits.float().cpu() - expected_logits).abs().max().item()
    encoder_diff = (out.encoder_last_hidden_state.float().cpu() - expected_encoder).abs().max().item()
    buffers = [_check_buffer(model, name, value) for name, value in fixture.get("buffer_slices", {}).items()]
    return ParityReport(
        fixture=str(fixture_path),
        config=dict(fixture["config"]),
        tolerance=tolerance,
        logits_max_abs_diff=logits_diff,
        encoder_max_abs_diff=encoder_diff,
        logits_shape=tuple(expected_logits.shape),
        encoder_shape=tuple(expected_encoder.shape),
        buffers=buffers,
    )


def render_parity_report(report: ParityReport) -> str:
    def verdict(ok: bool) -> str:
        return "ok" if ok else "FAIL"

    lines = [
        f"OFA parity: {report.fixture}",
        "config: " + ", ".join(f"{key}={value}" for key, value in report.config.items()),
        f"logits {list(report.logits_shape)}: max |diff| = {report.logits_max_abs_diff:.3e} "
        f"(tolerance {report.tolerance:.0e}) {verdict(report.logits_max_abs_diff <= report.tolerance)}",
        f"encoder_last_hidden_state {list(report.encoder_shape)}: max |diff| = {report.encoder_max_abs_diff:.3e} "
        f"(tolerance {report.tolerance:.0e}) {verdict(report.encoder_max_abs_diff <= report.tolerance)}",
    ]
    for check in report.buffers:
        detail = f"{check.mismatches} entries differ" if check.mismatches else check.note
        lines.append(
            f"index buffer {check.name} {list(check.fixture_shape)}: {verdict(check.equal)}"
            + (f" ({detail})" if detail else "")
        )
    lines.append("PASSED" if report.passed else "FAILED")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m vlmbench_plugins.models.ofa.parity FIXTURE.pt``: print the report; exit 1 on failure."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m vlmbench_plugins.models.ofa.parity FIXTURE.pt", file=sys.stderr)
        return 2
    report = check_parity(args[0])
    print(render_parity_report(report))
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
