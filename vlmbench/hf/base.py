"""The base class of ``transformers`` model plugins.

:class:`HFModel` does, once, what every ``transformers`` model plugin needs: finding the checkpoint
(a local directory, or a Hub id looked up in the local cache first and downloaded only when allowed),
revision pinning, dtype, device placement, bitsandbytes 8-/4-bit loading, PEFT adapters, a model
fingerprint that names exactly what was loaded, and the exact parameter count. A plugin subclasses it,
names its ``transformers`` class and writes ``prepare`` / ``generate`` / ``rank``; likelihood ranking
comes from :class:`vlmbench.hf.likelihood.LikelihoodRanking`.

Heavy libraries (torch, transformers, peft, bitsandbytes) are imported inside functions: importing
this module is cheap.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from vlmbench.devices import resolve_dtype
from vlmbench.errors import ArgError, AssetMissingError, SampleError, VlmbenchError, first_line
from vlmbench.hashing import tree_sha256
from vlmbench.hf.adapters import (
    ADAPTER_CONFIG,
    Adapter,
    check_applied,
    check_fits,
    model_layers,
    read_adapter,
)
from vlmbench.hf.checkpoints import check_family, load_failure
from vlmbench.hf.likelihood import LikelihoodRanking
from vlmbench.hf.options import HF_ARGS
from vlmbench.hf.weights import count_parameters, dtype_kwarg, keep_cpu_4bit_layout
from vlmbench.hub import cached_commit, is_hub_id, offline_first
from vlmbench.plugin.args import Arg
from vlmbench.plugin.model import Model, short_path_tag
from vlmbench.plugin.registry import ModelEntry
from vlmbench.plugin.request import Batch, Request
from vlmbench.tasks.spec import GenerationSpec

T = TypeVar("T")

# -- the base class ------------------------------------------------------------------------------------


class HFModel(LikelihoodRanking, Model):
    """Base class for model plugins built on ``transformers``.

    A subclass sets:

    - ``model_class``: the ``transformers`` class (name) to load with, e.g. ``"AutoModelForImageTextToText"``.
    - ``model_types``: accepted ``config.model_type`` values (a clear error for a checkpoint of another family).
    - ``processor_class``: default ``"AutoProcessor"``; ``padding_side``: ``"left"`` for decoder-only models.
    - ``args``: its own options; the standard ones (:data:`HF_ARGS`) are merged in automatically.

    After :meth:`load`, ``self.model`` is the ``transformers`` model (in eval mode, adapter applied) and
    ``self.processor`` its processor. :attr:`processor` can be used before :meth:`load` (in
    ``collate``, which runs in DataLoader workers) and then only reads local files.
    """

    args: ClassVar[dict[str, Arg]] = HF_ARGS
    model_class: ClassVar[str] = "AutoModel"
    model_types: ClassVar[tuple[str, ...]] = ()
    processor_class: ClassVar[str] = "AutoProcessor"
    padding_side: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Every HF plugin takes the standard options, plus those of each class in between.
        merged: dict[str, Arg] = {}
        for base in reversed(cls.__mro__):
            merged.update(base.__dict__.get("args", {}))
        cls.args = merged

    def __init__(self, entry: ModelEntry, args: dict[str, Any], **options: Any) -> None:
        # device, dtype and seed are Model's, with its defaults; "auto" and aliases become a dtype name.
        super().__init__(entry, args, **options)
        self.dtype = resolve_dtype(self.dtype, self.device)
        checkpoint = args.get("pretrained") or entry.default_checkpoint
        if not checkpoint:
            raise ArgError(
                f"model {entry.name!r} has no default checkpoint: give one with --model-args pretrained=PATH"
            )
        self.checkpoint: str = checkpoint
        self.revision: str | None = args.get("revision")
        if args.get("load_in_8bit") and args.get("load_in_4bit"):
            raise ArgError(f"model {entry.name!r}: load_in_8bit and load_in_4bit exclude each other")
        if args.get("merge_adapter") and not args.get("adapter"):
            raise ArgError(f"model {entry.name!r}: merge_adapter needs adapter=PATH")
        path = Path(checkpoint).expanduser()
        self.local_dir: Path | None = path.resolve() if path.is_dir() else None
        if self.local_dir is not None and self.revision:
            raise ArgError(
                f"model {entry.name!r}: revision applies to Hub checkpoints, not to the directory {checkpoint}"
            )
        self.quantization: str | None = (
            "8bit" if args.get("load_in_8bit") else "4bit" if args.get("load_in_4bit") else None
        )
        self.model: Any = None
        self._processor: Any = None
        self._identity: dict[str, Any] | None = None
        self._check_adapter(args.get("adapter"))

    def _check_adapter(self, adapter: str | None) -> None:
        """An adapter is checked before any model work: its files now, and against the checkpoint's
        layers (a model built on the meta device, no weights read) when the checkpoint is a local
        folder. A missing adapter is reported by :meth:`load`, as a skipped model."""
        if not adapter or not (Path(adapter).expanduser() / ADAPTER_CONFIG).exists():
            return
        checked = read_adapter(adapter)
        layers = self._meta_layers() if self.local_dir is not None else None
        if layers is not None:
            check_fits(checked, layers, str(self.local_dir))

    def _meta_layers(self) -> dict[str, tuple[int, ...]] | None:
        """The layers of this model's class for the local checkpoint's config, built on the ``meta``
        device (shapes only, nothing allocated); None when it cannot be built that way, in which case
        the loaded model is checked instead."""
        try:
            import transformers

            config = transformers.AutoConfig.from_pretrained(
                str(self.local_dir),
                local_files_only=True,
                trust_remote_code=bool(self.arg_values.get("trust_remote_code")),
            )
            model = self._meta_model(config)
        except Exception:  # a broken checkpoint is reported when it is loaded, with its own message
            return None
        return model_layers(model)

    def _meta_model(self, config: Any) -> Any:
        """This model's class built from ``config`` on the ``meta`` device: its layers and their shapes,
        with no weights read and nothing allocated."""
        import torch

        cls, trust = self.resolve_model_class(), bool(self.arg_values.get("trust_remote_code"))
        with torch.device("meta"):
            return cls.from_config(config, trust_remote_code=trust) if hasattr(cls, "from_config") else (
                cls._from_config(config)  # a model class; ``from_config`` is the Auto classes'
            )  # fmt: skip

    # -- identity ---------------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        if self._identity is None:
            ident = super().identity()
            for key in ("pretrained", "adapter", "revision"):
                ident["args"].pop(key, None)  # recorded below in resolved form
            if self.local_dir is not None:
                # The content, not the path: the same files elsewhere share cached predictions,
                # and retrained weights at the same path do not.
                ident["checkpoint"] = self.local_dir.name
                ident["checkpoint_sha256"] = tree_sha256(self.local_dir)
            else:
                ident["checkpoint"] = self.checkpoint
                ident["revision"] = self.revision
                ident["commit"] = (
                    cached_commit(self.checkpoint, self.revision) if is_hub_id(self.checkpoint) else None
                )
            adapter = self.arg_values.get("adapter")
            if adapter:
                adapter_path = Path(adapter).expanduser()
                ident["adapter"] = adapter_path.name
                ident["adapter_sha256"] = tree_sha256(adapter_path) if adapter_path.exists() else None
            ident["quantization"] = self.quantization
            scope = self._int8_scope()
            if scope:
                ident["int8_scope"] = scope
            self._identity = ident
        return self._identity

    checkpoint_args: ClassVar[tuple[str, ...]] = ("pretrained", "revision", "adapter")

    def checkpoint_tag(self) -> str | None:
        parts = []
        if self.arg_values.get("pretrained") and self.checkpoint != self.entry.default_checkpoint:
            parts.append(short_path_tag(self.checkpoint))
        if self.revision:
            parts.append(f"@{self.revision[:12]}")
        if self.arg_values.get("adapter"):
            parts.append(f"+{short_path_tag(self.arg_values['adapter'])}")
        return "".join(parts) or None

    def describe(self) -> dict[str, Any]:
        ident = self.identity()
        info = {
            **super().describe(),
            "checkpoint": str(self.local_dir) if self.local_dir else self.checkpoint,
            "revision": self.revision,
            "commit": ident.get("commit"),
            "checkpoint_sha256": ident.get("checkpoint_sha256"),
            "adapter": self.arg_values.get("adapter"),
            "adapter_sha256": ident.get("adapter_sha256"),
            "quantization": self.quantization,
            "int8_scope": self._int8_scope() or None,
            "parameters": count_parameters(self.model) if self.model is not None else None,
        }
        if self.model is not None:
            info["model_class"] = type(self.model).__name__
            # Bytes of weights and buffers as loaded (8-bit layers count one byte per weight): what
            # quantisation saves.
            footprint = getattr(self.model, "get_memory_footprint", None)
            info["memory_footprint_mb"] = round(footprint() / 2**20, 3) if callable(footprint) else None
            commit = getattr(getattr(self.model, "config", None), "_commit_hash", None)
            if commit and not info["commit"]:
                info["commit"] = commit
        return info

    # -- loading ---------------------------------------------------------------------------------
    @property
    def processor(self) -> Any:
        """The processor (tokenizer + image processor), loaded on first use from local files only."""
        if self._processor is None:
            self._processor = self._load_processor(download=False)
        return self._processor

    def load(self) -> None:
        if self.model is not None:
            return
        import torch
        from transformers.utils import logging as hf_logging

        if self._processor is None:
            self._processor = self._load_processor(download=True)
        kwargs: dict[str, Any] = {"trust_remote_code": self.arg_values["trust_remote_code"]}
        if self.revision:
            kwargs["revision"] = self.revision
        kwargs[dtype_kwarg()] = getattr(torch, self.dtype)
        kwargs["device_map"] = self.arg_values["device_map"] or {"": self.device}
        if self.quantization:
            from transformers import BitsAndBytesConfig

            if self.quantization == "8bit":
                kwargs["quantization_config"] = BitsAndBytesConfig(
                    load_in_8bit=True,
                    llm_int8_threshold=self.arg_values["int8_threshold"],
                    llm_int8_skip_modules=self._int8_skip_modules(),
                )
            else:
                kwargs["quantization_config"] = BitsAndBytesConfig(
                    load_in_4bit=True,
                    bnb_4bit_quant_type="nf4",
                    bnb_4bit_compute_dtype=getattr(torch, self.dtype),
                )
        cls = self.resolve_model_class()
        progress = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # the run has its own progress bar
        try:
            model = self.fetch(lambda source, **kw: cls.from_pretrained(source, **kwargs, **kw), "weights")
        finally:
            if progress:
                hf_logging.enable_progress_bar()
        model_type = getattr(model.config, "model_type", None)
        if self.model_types and model_type not in self.model_types:
            raise VlmbenchError(
                f"model {self.name!r} expects a checkpoint of type {' or '.join(self.model_types)}, "
                f"but {self.checkpoint} is {model_type!r}"
            )
        if self.quantization == "4bit":
            keep_cpu_4bit_layout(model)
        model = self._apply_adapter(model)
        model.eval()
        self.model = model
        self.after_load()

    def after_load(self) -> None:
        """Hook for subclasses: runs once the model and processor are loaded."""

    def _int8_scope(self) -> dict[str, Any]:
        """The 8-bit settings that differ from bitsandbytes' defaults through transformers (empty: none)."""
        if self.quantization != "8bit":
            return {}
        scope = {}
        if self.arg_values["int8_threshold"] != HF_ARGS["int8_threshold"].default:
            scope["threshold"] = self.arg_values["int8_threshold"]
        if self.arg_values["int8_min_out_features"]:
            scope["linear_out_features_above"] = self.arg_values["int8_min_out_features"]
        return scope

    def _int8_skip_modules(self) -> list[str] | None:
        """With ``int8_min_out_features=N``: the Linear layers with at most N output features, which stay
        in full precision (found on a weightless copy of the model built from its config); every other
        Linear layer is quantised, output heads included. None: transformers' default choice."""
        limit = self.arg_values["int8_min_out_features"]
        if not limit:
            return None
        import re

        import torch
        import transformers

        config = self.fetch(
            lambda source, **kw: transformers.AutoConfig.from_pretrained(
                source, trust_remote_code=self.arg_values["trust_remote_code"], **kw
            ),
            "config",
        )
        return [
            re.escape(name)
            for name, module in self._meta_model(config).named_modules()
            if isinstance(module, torch.nn.Linear) and module.out_features <= limit
        ]

    def resolve_model_class(self) -> Any:
        import transformers

        return getattr(transformers, self.model_class)

    def _load_processor(self, download: bool) -> Any:
        import transformers

        cls = getattr(transformers, self.processor_class)
        kwargs: dict[str, Any] = {"trust_remote_code": self.arg_values["trust_remote_code"]}
        if self.revision:
            kwargs["revision"] = self.revision
        processor = self.fetch(
            lambda source, **kw: cls.from_pretrained(source, **kwargs, **kw), "processor", download
        )
        if self.padding_side:
            tokenizer = getattr(processor, "tokenizer", processor)
            tokenizer.padding_side = self.padding_side
        self.configure_processor(processor)
        return processor

    def configure_processor(self, processor: Any) -> None:
        """Hook for subclasses: apply image settings from the arguments to a freshly loaded processor."""

    def fetch(self, loader: Callable[..., T], what: str, download: bool = True) -> T:
        """Call ``loader(source, local_files_only=...)``: the local directory, else the local Hub cache,
        else (when allowed) the Hub. Anything missing becomes an :class:`AssetMissingError`; a local
        folder of another model family, or with a pickle that would run code, is refused (see
        :mod:`vlmbench.hf.checkpoints`)."""
        if self.local_dir is not None:
            check_family(self.local_dir, self.name, self.model_types)  # before anything is loaded
            try:
                return loader(str(self.local_dir), local_files_only=True)
            except OSError as exc:
                raise AssetMissingError(
                    f"the {what} of checkpoint directory {self.local_dir}",
                    f"{first_line(exc)}. Pass a complete checkpoint directory with --model-args pretrained=PATH",
                ) from None
            except Exception as exc:  # a broken or hostile file in the folder, whichever loader read it
                raise load_failure(exc, what, self.local_dir) from None
        if not is_hub_id(self.checkpoint):
            raise AssetMissingError(
                f"checkpoint {self.checkpoint!r}",
                "no such directory, and it is not a Hugging Face Hub id (owner/name). "
                "Pass a checkpoint directory with --model-args pretrained=PATH",
            )
        rev = f" at revision {self.revision}" if self.revision else ""
        return offline_first(
            lambda local_only: loader(self.checkpoint, local_files_only=local_only),
            asset=f"checkpoint {self.checkpoint!r}{rev}",
            how=f"Download it where there is network access (`hf download {self.checkpoint}`) and copy the "
            "cache folder (HF_HOME), or pass a local checkpoint directory with --model-args pretrained=PATH",
            local_files_only=self.arg_values["local_files_only"],
            download=download,
        )

    def _apply_adapter(self, model: Any) -> Any:
        adapter = self.arg_values.get("adapter")
        if not adapter:
            return model
        path = Path(adapter).expanduser()
        # Read and checked again: the files may have changed since the plan, and this is what PEFT reads.
        checked: Adapter = read_adapter(path)
        check_fits(checked, model_layers(model), self.checkpoint)  # before PEFT allocates anything
        from peft import PeftModel

        try:
            peft_model = PeftModel.from_pretrained(model, str(path), is_trainable=False)
        except Exception as exc:
            raise VlmbenchError(
                f"adapter {path} cannot be applied to {self.checkpoint} ({type(exc).__name__}: {first_line(exc)})"
            ) from None
        check_applied(checked, peft_model)
        if self.arg_values["merge_adapter"]:
            return peft_model.merge_and_unload()
        # The adapter layers are injected into the base model's modules: the base model's own
        # forward/generate now run through them, without PEFT's wrappers in between.
        return peft_model.get_base_model()

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers started with "spawn" receive a pickled copy: never ship the weights.
        state = self.__dict__.copy()
        state["model"] = None
        return state

    # -- inference helpers ---------------------------------------------------------------------------
    def collate(self, requests: list[Request]) -> Any:
        """Runs :meth:`prepare` in a DataLoader worker. When the processor is not available there, the
        batch is prepared again in the main process, which fetches it or reports what is missing."""
        try:
            inputs = self.prepare(requests)
        except (AssetMissingError, SampleError):
            return None
        self.check_prompt_lengths(inputs, requests)
        return inputs

    def prepare(self, requests: list[Request]) -> Any:
        """Model inputs for a batch: processor work, on the CPU (tensors are moved in generate/rank)."""
        return None

    def batch_inputs(self, batch: Batch) -> Any:
        """The batch's prepared inputs (prepared here if the worker could not)."""
        if batch.inputs is not None:
            return batch.inputs
        inputs = self.prepare(batch.requests)
        self.check_prompt_lengths(inputs, batch.requests)
        return inputs

    def max_input_tokens(self) -> int | None:
        """The longest token sequence the loaded language model takes (its position table), if known."""
        config = getattr(self.model, "config", None)
        text = getattr(config, "text_config", None) or config
        value = getattr(text, "max_position_embeddings", None)
        return value if isinstance(value, int) and value > 0 else None

    def check_prompt_lengths(self, inputs: Any, requests: list[Request]) -> None:
        """A prompt longer than the model takes is that sample's problem (``prompt_too_long``), not a
        crash of its batch: the run skips and counts it."""
        limit = self.max_input_tokens()
        mask = inputs.get("attention_mask") if isinstance(inputs, Mapping) else None
        if limit is None or mask is None or mask.shape[-1] <= limit:
            return
        lengths = mask.reshape(mask.shape[0], -1).sum(dim=1).tolist()
        longest = max(lengths)
        if longest > limit:
            which = requests[lengths.index(longest)].sample_id if len(requests) > 1 else requests[0].sample_id
            raise SampleError(
                "prompt_too_long",
                f"the prompt of sample {which} has {int(longest)} tokens; model {self.name!r} takes at most {limit}",
            )

    @property
    def input_device(self) -> Any:
        return getattr(self.model, "device", None) or next(self.model.parameters()).device

    def to_device(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Move a processor's output to the model: tensors to its device, floating-point ones to its dtype."""
        import torch

        dtype = getattr(torch, self.dtype)
        out = {}
        for key, value in inputs.items():
            if isinstance(value, torch.Tensor):
                value = value.to(self.input_device)
                if value.is_floating_point():
                    value = value.to(dtype)
            out[key] = value
        return out

    def generation_config(self, spec: GenerationSpec) -> Any:
        """The model's generation config (special token ids) with the task's settings, and nothing else:
        sampling settings a checkpoint ships (temperature, repetition penalty...) are reset, so the
        task alone decides how answers are decoded (greedy unless it says otherwise)."""
        from transformers import GenerationConfig

        base = getattr(self.model, "generation_config", None)
        config = copy.deepcopy(base) if base is not None else GenerationConfig()
        config.max_new_tokens = spec.max_new_tokens
        config.max_length = None
        config.min_new_tokens = None
        config.num_beams = spec.num_beams
        config.num_return_sequences = 1
        config.do_sample = spec.do_sample
        config.temperature = spec.temperature if spec.do_sample else None
        config.top_p = spec.top_p if spec.do_sample else None
        config.top_k = None
        config.repetition_penalty = spec.repetition_penalty
        config.no_repeat_ngram_size = None
        config.length_penalty = None
        return config

    # -- likelihood ranking ------------------------------------------------------------------------------
    def end_of_answer_id(self) -> int | None:
        """The token that ends an answer: the first end-of-sequence token of the checkpoint's saved
        generation config, else the tokenizer's. Read from files (once per process), so DataLoader
        workers, which never load the weights, agree with the main process."""
        if not hasattr(self, "_end_id"):
            from transformers import GenerationConfig

            eos = None
            try:
                config = self.fetch(
                    lambda source, **kw: GenerationConfig.from_pretrained(source, **kw),
                    "generation config",
                    download=False,
                )
                eos = config.eos_token_id
            except (AssetMissingError, OSError, ValueError):
                pass  # no generation_config.json: fall back to the tokenizer
            if eos is None:
                eos = getattr(getattr(self.processor, "tokenizer", self.processor), "eos_token_id", None)
            self._end_id = eos[0] if isinstance(eos, (list, tuple)) and eos else eos
        return self._end_id
