"""The detector's files (``detectron_model.pth``, ``detectron_config.yaml``) and how its weights load.

The original loader (``maskrcnn_benchmark/utils/model_serialization.py``) strips a ``module.`` prefix
when every key has one, matches each model key to the longest checkpoint key that ends it, ignores
checkpoint keys that match nothing (an attribute head, for example) and keeps the constructor's values
for model keys the checkpoint lacks. Here the same matching applies, with two differences that keep a
wrong file from passing silently: a missing key is an error unless it is one of the RPN's cell anchors
(deterministic, so regenerated exactly), and a shape mismatch is an error. What was stripped, ignored
or regenerated is said in a warning.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from ..loading import CheckpointError, CheckpointMismatchError, StateDictDiff
from .config import DetectorConfig, DetectorConfigError
from .model import RegionDetector

WEIGHT_NAMES = ("detectron_model.pth", "model_final.pth")
CONFIG_NAMES = ("detectron_config.yaml", "e2e_faster_rcnn_X-152-32x8d-FPN_1x_MLP_2048_FPN_512_train.yaml")
REGENERATED_PREFIX = "rpn.anchor_generator.cell_anchors."
_PREFIX = "module."


@dataclass(frozen=True)
class DetectorFiles:
    """Where the detector's weights and config are; ``missing`` says how to provide what is not."""

    weights: Path | None
    config: Path | None  # None: the released X-152 config
    missing: tuple[str, ...] = ()


def find_detector_files(detector: str | None, config: str | None = None) -> DetectorFiles:
    """``detector`` is a folder holding ``detectron_model.pth`` (and ``detectron_config.yaml``) or the
    weights file itself (the config is then looked up next to it); ``config`` names the yaml."""
    missing: list[str] = []
    weights = folder = None
    given = Path(detector).expanduser() if detector else None
    if given is None:
        missing.append(
            "the region detector (detectron_model.pth and detectron_config.yaml of vilbert-multi-task): "
            "--model-args detector=DIR; or features=grid for the approximation"
        )
    elif given.is_file():
        weights, folder = given, given.parent
    elif given.is_dir():
        folder = given
        weights = next((folder / n for n in WEIGHT_NAMES if (folder / n).is_file()), None)
        if weights is None:
            missing.append(f"{WEIGHT_NAMES[0]} in {folder} (the region detector's weights)")
    else:
        missing.append(
            f"detector={given} does not exist (a folder with {WEIGHT_NAMES[0]} and {CONFIG_NAMES[0]})"
        )
    found = next((folder / n for n in CONFIG_NAMES if (folder / n).is_file()), None) if folder else None
    if config:
        found = Path(config).expanduser()
        if not found.is_file():
            missing.append(f"detector_config={found} does not exist (the detector's yacs yaml)")
            found = None
    return DetectorFiles(weights, found, tuple(missing))


def read_config(path: Path | None) -> DetectorConfig:
    """The config of a yaml file, or the released X-152 config without one."""
    if path is None:
        return DetectorConfig.release()
    try:
        return DetectorConfig.from_yaml(path)
    except DetectorConfigError as exc:
        raise CheckpointError(f"detector config {path}: {exc}") from None


def read_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """The state dict of ``detectron_model.pth`` (a dict with the weights under ``"model"``, or a plain
    state dict), read with ``weights_only=True``."""
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"cannot read the detector checkpoint {path}: {first}") from None
    if isinstance(data, Mapping) and isinstance(data.get("model"), Mapping):
        data = data["model"]
    if not isinstance(data, Mapping) or not all(isinstance(v, Tensor) for v in data.values()):
        raise CheckpointError(f"{path} holds no detector state dict (a 'model' entry of tensors)")
    return dict(data)


@dataclass
class LoadReport:
    """What loading did besides copying matching tensors."""

    stripped_prefix: bool = False
    suffix_matched: list[tuple[str, str]] = field(default_factory=list)  # (model key, checkpoint key)
    ignored: list[str] = field(default_factory=list)  # checkpoint keys no model key takes
    regenerated: list[str] = field(default_factory=list)  # cell anchors the checkpoint lacks

    def messages(self) -> list[str]:
        out = []
        if self.stripped_prefix:
            out.append(f"every key had the prefix {_PREFIX!r}; it was stripped")
        if self.suffix_matched:
            out.append(
                f"{len(self.suffix_matched)} keys matched by suffix, e.g. {self.suffix_matched[0][1]!r}"
            )
        if self.ignored:
            shown = ", ".join(self.ignored[:4]) + (
                f" and {len(self.ignored) - 4} more" if len(self.ignored) > 4 else ""
            )
            out.append(
                f"{len(self.ignored)} checkpoint keys that the detector does not use were ignored ({shown})"
            )
        if self.regenerated:
            out.append(f"the checkpoint lacks {', '.join(self.regenerated)}: regenerated from the config")
        return out


def _match(model_keys: list[str], loaded: Mapping[str, Tensor]) -> dict[str, str]:
    """Model key -> the longest checkpoint key it ends with (the original's rule)."""
    matched = {}
    others = sorted(loaded, key=len, reverse=True)
    for key in model_keys:
        if key in loaded:
            matched[key] = key
            continue
        found = next((k for k in others if key.endswith(k)), None)
        if found is not None:
            matched[key] = found
    return matched


def load_detector_state(model: nn.Module, state: Mapping[str, Tensor], *, warn: bool = True) -> LoadReport:
    """Load ``state`` into ``model`` as described above; raise ``CheckpointMismatchError`` for keys the
    checkpoint lacks (cell anchors aside) or holds with another shape."""
    report = LoadReport()
    if state and all(k.startswith(_PREFIX) for k in state):
        state = {k[len(_PREFIX) :]: v for k, v in state.items()}
        report.stripped_prefix = True
    own = model.state_dict()
    matched = _match(list(own), state)
    diff = StateDictDiff()
    merged = dict(own)
    for key, value in own.items():
        source = matched.get(key)
        if source is None:
            if key.startswith(REGENERATED_PREFIX):
                report.regenerated.append(key)
            else:
                diff.missing.append((key, tuple(value.shape)))
            continue
        if tuple(state[source].shape) != tuple(value.shape):
            diff.shape_mismatch.append((key, tuple(state[source].shape), tuple(value.shape)))
            continue
        merged[key] = state[source]
        if source != key:
            report.suffix_matched.append((key, source))
    if not diff.ok:
        raise CheckpointMismatchError(diff, "the region detector at its config")
    used = set(matched.values())
    report.ignored = sorted(k for k in state if k not in used)
    model.load_state_dict(merged, strict=True)
    if warn:
        for message in report.messages():
            warnings.warn(f"region detector checkpoint: {message}", stacklevel=2)
    return report


def load_detector(files: DetectorFiles, device: str | torch.device = "cpu") -> RegionDetector:
    """Build the detector from its config and load its weights (float32, eval mode)."""
    if files.weights is None:
        raise CheckpointError("no detector weights: " + "; ".join(files.missing))
    model = RegionDetector(read_config(files.config))
    load_detector_state(model, read_checkpoint(files.weights))
    return model.to(device).eval()
