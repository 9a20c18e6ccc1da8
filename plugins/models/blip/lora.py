"""``lora-blip``: BLIP VQA with a LoRA adapter, e.g. one trained by ``vlmbench finetune``.

The ``blip`` plugin with ``adapter=DIR`` required. The base checkpoint is the one the adapter was
trained on (``base_model_name_or_path`` in its ``adapter_config.json``) unless ``pretrained=`` says
otherwise. The adapter's content hash is part of the model fingerprint (see
:meth:`vlmbench.api.HFModel.identity`), so runs of different fine-tunes never share cached answers.
``adapter`` may also name a ``vlmbench finetune`` output folder, which stands for its ``best/`` adapter.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from vlmbench.api import ArgError, AssetMissingError, ModelEntry, read_adapter, read_json_object
from vlmbench_plugins.models.blip.vqa import BlipVQA

ADAPTER_CONFIG = "adapter_config.json"
FINETUNE_INFO = "vlmbench_finetune.json"  # written next to the adapter by `vlmbench finetune`


def resolve_adapter(path: str) -> Path:
    """An adapter directory, or a fine-tuning output folder's ``best`` adapter."""
    folder = Path(path).expanduser()
    if not (folder / ADAPTER_CONFIG).is_file() and (folder / "best" / ADAPTER_CONFIG).is_file():
        return folder / "best"
    return folder


class LoraBlip(BlipVQA):
    def __init__(self, entry: ModelEntry, args: dict[str, Any], **kwargs: Any):
        if not args.get("adapter"):
            raise ArgError(
                f"model {entry.name!r} needs an adapter: --model-args adapter=DIR "
                "(a PEFT adapter folder, or the output folder of `vlmbench finetune`)"
            )
        adapter = resolve_adapter(args["adapter"])
        args = {**args, "adapter": str(adapter)}
        # The adapter is checked whole (config, weights, layers) here, before any model work; a missing
        # one is reported by load(), as a skipped run, like missing weights.
        base = read_adapter(adapter).base if (adapter / ADAPTER_CONFIG).exists() else None
        if base:
            entry = dataclasses.replace(entry, default_checkpoint=base)
        elif (adapter / ADAPTER_CONFIG).is_file() and not args.get("pretrained"):
            raise ArgError(
                f"model {entry.name!r}: adapter {adapter} does not name its base model "
                "(base_model_name_or_path); give it with --model-args pretrained=PATH_OR_HUB_ID"
            )
        self.finetune_info = read_json_object(adapter / FINETUNE_INFO)
        super().__init__(entry, args, **kwargs)

    def load(self) -> None:
        adapter = Path(self.arg_values["adapter"])
        if not (adapter / ADAPTER_CONFIG).is_file():
            # Before the base weights: the adapter is what this model is about.
            raise AssetMissingError(
                f"adapter {str(adapter)!r}",
                "expected a PEFT adapter directory (adapter_config.json + weights) or the output "
                "folder of `vlmbench finetune`; pass it with --model-args adapter=PATH",
            )
        super().load()

    def label(self) -> str:
        adapter = Path(self.arg_values["adapter"])
        name = self.finetune_info.get("label") or adapter.name
        others = {
            k: v
            for k, v in self.arg_values.items()
            if k not in ("adapter", "pretrained")
            and v != self.args[k].default
            and self.args[k].affects_output
        }
        parts = [name, *(f"{k}={v}" for k, v in sorted(others.items()))]
        return f"{self.name}[{','.join(parts)}]"

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        if self.finetune_info:
            info["finetune"] = self.finetune_info
        return info
