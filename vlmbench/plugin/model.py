"""The model plugin contract.

A model plugin is a subclass of :class:`Model` registered with ``register_models``. The runner
creates it with validated arguments, calls :meth:`Model.load` (and :meth:`Model.setup`) only when
there is work to do, then calls :meth:`Model.generate` or :meth:`Model.rank` batch by batch. See
docs/plugins.md.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from vlmbench.errors import VlmbenchError
from vlmbench.hashing import json_digest
from vlmbench.plugin.args import Arg, output_affecting, redact, validate
from vlmbench.plugin.registry import ModelEntry
from vlmbench.plugin.request import Batch, Request
from vlmbench.tasks.dataset import Sample
from vlmbench.tasks.spec import GenerationSpec


class Model:
    """Base class for model plugins.

    Class attributes a plugin sets:

    - ``args``: the schema of ``--model-args`` (unknown names are errors).
    - ``default_prompt``: prompt template used when the task has none for this model's family.
    - ``version``: bump when a code change alters outputs; it is part of the cache key.
    - ``needs_training_data``: if true, :meth:`fit` receives the task's training samples first.
    - ``wants_image_bytes``: if true, requests carry the image file's own bytes (``Request.image_bytes``)
      instead of the decoded image — for a model that sends images elsewhere as they are.
    """

    args: ClassVar[dict[str, Arg]] = {}
    default_prompt: ClassVar[str | None] = None
    version: ClassVar[str] = "1"
    needs_training_data: ClassVar[bool] = False
    wants_image_bytes: ClassVar[bool] = False

    def __init__(
        self,
        entry: ModelEntry,
        args: dict[str, Any],
        *,
        device: str = "cpu",
        dtype: str = "auto",
        seed: int = 0,
    ):
        self.entry = entry
        self.name = entry.name
        self.arg_values = args
        self.device = device
        self.dtype = dtype
        self.seed = seed

    @classmethod
    def create(
        cls,
        entry: ModelEntry,
        given: dict[str, Any] | None = None,
        *,
        device: str = "cpu",
        dtype: str = "auto",
        seed: int = 0,
    ) -> Model:
        """Validate ``given`` against :attr:`args` and construct the model (no weights loaded yet)."""
        values = validate(cls.args, given or {}, owner=f"model {entry.name!r}")
        return cls(entry, values, device=device, dtype=dtype, seed=seed)

    # -- planning (no weights, no images) -------------------------------------------------------
    def prompt_family(self) -> str:
        """Whose prompt template of the task this model uses: its registered family by default."""
        return self.entry.family or self.name

    def check_request_type(self, kind: str) -> None:
        """Called while the run is planned, before any model work: raise
        :class:`vlmbench.errors.UnsupportedTask` when this instance cannot answer ``kind`` requests
        although its plugin can (a server without what ranking needs). Default: nothing."""

    def preferred_batch_size(self) -> int | None:
        """The batch size to use when the run does not set one (``None``: the run's default)."""
        return None

    # -- lifecycle -----------------------------------------------------------------------------
    def load(self) -> None:
        """Load weights. Raise :class:`vlmbench.errors.AssetMissingError` when they cannot be found."""

    def fit(self, examples: Sequence[Sample]) -> None:
        """Receive training examples (only called when ``needs_training_data`` is true)."""

    def setup(self, requests: Sequence[Request]) -> None:
        """Last step of loading, with the requests about to be answered (no images yet): build what
        :meth:`collate` would otherwise build on first use — token tables of candidate answers, special
        token ids. It runs in the main process before DataLoader workers start, so each worker inherits
        the result instead of building it again. Default: nothing."""

    def computes_on_cpu(self) -> bool:
        """Whether answering keeps this machine's CPU cores busy, as a torch model on the CPU does (one
        thread per core). The runner then starts DataLoader workers only on cores torch's threads leave
        free. Called after :meth:`load`. Default: the plugin holds a torch module whose weights are on
        the CPU, as an attribute or an attribute's attribute."""
        torch = sys.modules.get("torch")
        if torch is None:
            return False
        held = list(vars(self).values())
        held += [
            v for h in held if not isinstance(h, torch.nn.Module) for v in getattr(h, "__dict__", {}).values()
        ]
        for value in held:
            if isinstance(value, torch.nn.Module):
                first = next(itertools.chain(value.parameters(), value.buffers()), None)
                if first is not None and first.device.type == "cpu":
                    return True
        return False

    # -- inference ----------------------------------------------------------------------------------
    def collate(self, requests: list[Request]) -> Any:
        """Prepare model inputs for a batch. Runs in DataLoader worker processes, so it must not touch
        the GPU; whatever it returns arrives as ``batch.inputs``. Default: nothing."""
        return None

    def generate(self, batch: Batch, generation: GenerationSpec) -> list[str | VlmbenchError]:
        """Free-form answers, one raw string per request, in order. A request that could not be
        answered while the others were may get a :class:`vlmbench.errors.SampleError` in its place: that
        sample is skipped and counted under the error's reason, the answers are stored. A
        :class:`vlmbench.errors.ModelFailed` in its place stops the model once the answers are stored
        (the model can answer nothing more: its server went away)."""
        raise VlmbenchError(f"model {self.name!r} does not support generate requests")

    def rank(self, batch: Batch) -> list[list[float] | VlmbenchError]:
        """One score per candidate for each request (higher is better), in order; an error in place of
        a request's scores skips it or stops the model, as for :meth:`generate`."""
        raise VlmbenchError(f"model {self.name!r} does not support rank requests")

    def notes(self) -> list[str]:
        """What a results table should say beside this model's scores about how it answered, known
        before any weights load (for example that its inputs approximate the original model's).
        Recorded in results.json ``notes``, so the leaderboard shows them as footnotes. Default: none."""
        return []

    def timings(self) -> dict[str, Any]:
        """Timings the model measured itself while answering (a server's latency percentiles), added to
        results.json's ``timing`` block. Called once the run has answered. Default: none."""
        return {}

    def answer_vocabulary(self) -> Sequence[str] | None:
        """Closed-vocabulary models (a classifier head over fixed answers) return their answers; the
        runner then reports which share of the reference answers the model cannot produce at all."""
        return None

    # -- identity ---------------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        """What determines this model's outputs (besides the request). Subclasses add checkpoint
        revision, adapter hash, quantisation...; the default is the plugin, version, dtype and the
        output-affecting arguments."""
        return {
            "model": self.name,
            "plugin_version": self.version,
            "dtype": self.dtype,
            "args": output_affecting(self.args, self.arg_values),
        }

    def fingerprint(self) -> str:
        return json_digest(self.identity())

    def describe(self) -> dict[str, Any]:
        """Provenance for results.json: what was loaded and how. Subclasses add ``parameters`` etc."""
        return {
            "name": self.name,
            "plugin": self.entry.plugin,
            "plugin_version": self.version,
            "default_checkpoint": self.entry.default_checkpoint,
            "args": redact(self.args, self.arg_values),
            "device": self.device,
            "dtype": self.dtype,
        }

    #: Arguments that say which weights are loaded; :meth:`checkpoint_tag` stands for them in labels.
    checkpoint_args: ClassVar[tuple[str, ...]] = ("pretrained",)

    def checkpoint_tag(self) -> str | None:
        """A short name for non-default weights (a folder's name, a Hub repository's name), or None."""
        value = self.arg_values.get("pretrained")
        spec = self.args.get("pretrained")
        if value and value != self.entry.default_checkpoint and (spec is None or value != spec.default):
            return short_path_tag(str(value))
        return None

    def label(self) -> str:
        """Short display name: the model name, a short tag of non-default weights and the other
        output-affecting arguments that differ from their defaults — ``mymodel[my-finetune]``,
        ``mymodel[k=3]`` — never a full path."""
        parts = [self.checkpoint_tag()] if self.checkpoint_tag() else []
        changed = {
            k: v
            for k, v in redact(self.args, self.arg_values).items()
            if k not in self.checkpoint_args and v != self.args[k].default and self.args[k].affects_output
        }
        parts += [f"{k}={v}" for k, v in sorted(changed.items())]
        return f"{self.name}[{','.join(parts)}]" if parts else self.name


# Folder names that say nothing on their own; their parent's name is kept with them in tags.
_GENERIC_FOLDERS = ("best", "final", "last", "latest", "model", "adapter", "weights", "snapshot")


def short_path_tag(value: str) -> str:
    """``/data/ckpts/blip-ft3`` -> ``blip-ft3``; ``runs/ft1/best`` -> ``ft1/best``; ``owner/name`` ->
    ``name`` for a Hub id."""
    path = Path(value.rstrip("/\\"))
    name = path.name or value
    if (name.lower() in _GENERIC_FOLDERS or name.lower().startswith("checkpoint")) and path.parent.name:
        return f"{path.parent.name}/{name}"
    return name
