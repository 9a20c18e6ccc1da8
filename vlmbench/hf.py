"""Shared Hugging Face plumbing for model plugins.

:class:`HFModel` does, once, what every ``transformers`` model plugin needs: finding the checkpoint
(a local directory, or a Hub id looked up in the local cache first and downloaded only when allowed),
revision pinning, dtype, device placement, bitsandbytes 8-/4-bit loading, PEFT adapters, a model
fingerprint that names exactly what was loaded, and the exact parameter count. A plugin subclasses it,
names its ``transformers`` class and writes ``collate`` / ``generate`` / ``rank``.

It also offers likelihood ranking for decoder-only models (:meth:`HFModel.score_continuations`): the
image and prompt are run once, their key/value cache is shared by every candidate answer, and the
candidates are scored in batches. That lets any generative model answer ``rank`` requests.

Heavy libraries (torch, transformers, peft, bitsandbytes) are imported inside functions: importing
this module is cheap.
"""

from __future__ import annotations

import copy
import inspect
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from vlmbench.args import Arg
from vlmbench.checkpoints import check_family, first_line, load_failure
from vlmbench.errors import ArgError, AssetMissingError, VlmbenchError
from vlmbench.hashing import tree_sha256
from vlmbench.hub import download_blocker
from vlmbench.model import Model
from vlmbench.registry import ModelEntry
from vlmbench.request import Batch, Request
from vlmbench.spec import GenerationSpec

T = TypeVar("T")

HF_ARGS: dict[str, Arg] = {
    "pretrained": Arg(
        str,
        None,
        "checkpoint: a Hugging Face Hub id or a local directory (default: the model's default checkpoint)",
    ),
    "revision": Arg(str, None, "Hub branch, tag or commit to load (Hub checkpoints only)"),
    "local_files_only": Arg(
        bool,
        False,
        "never download: use the local Hugging Face cache or directory only",
        affects_output=False,
    ),
    "load_in_8bit": Arg(bool, False, "load linear layers in 8 bits with bitsandbytes"),
    "load_in_4bit": Arg(bool, False, "load linear layers in 4 bits (nf4) with bitsandbytes"),
    "adapter": Arg(str, None, "directory of a PEFT adapter (e.g. LoRA) to apply on top of the checkpoint"),
    "merge_adapter": Arg(bool, False, "merge the adapter into the base weights after loading"),
    "trust_remote_code": Arg(bool, False, "allow Python code shipped with the checkpoint to run"),
    "device_map": Arg(
        str,
        None,
        "accelerate device map, e.g. 'auto' to spread a large model over GPUs",
        affects_output=False,
    ),
}

#: Options of likelihood ranking, for plugins that answer ``rank`` requests by scoring candidates.
LIKELIHOOD_ARGS: dict[str, Arg] = {
    "rank_batch_size": Arg(int, 64, "candidate answers scored per forward pass", affects_output=False),
    "rank_normalize": Arg(
        str,
        "sum",
        "candidate score: 'sum' of token log-probabilities, or their 'mean' (favours longer answers less)",
        choices=("sum", "mean"),
    ),
    "rank_eos": Arg(
        bool, True, "score the end-of-answer token too, so a candidate must be the whole answer, not a prefix"
    ),
}

_DTYPES = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16", "half": "float16",
}  # fmt: skip
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_TRUE = {"1", "true", "yes", "on"}


def resolve_dtype(requested: str | None, device: str) -> str:
    """``auto`` -> ``bfloat16`` on a CUDA device that supports it (``float16`` on older GPUs),
    ``float32`` elsewhere; aliases such as ``bf16`` or ``fp16`` -> their full names."""
    requested = (requested or "auto").lower()
    if requested != "auto":
        if requested not in _DTYPES:
            raise ArgError(f"unknown dtype {requested!r}; use auto, float32, bfloat16 or float16")
        return _DTYPES[requested]
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "float32"


def is_hub_id(value: str) -> bool:
    """``owner/name`` that is not an existing path."""
    return bool(_HUB_ID.match(value)) and not Path(value).expanduser().exists()


def cached_commit(repo_id: str, revision: str | None) -> str | None:
    """The commit a Hub revision points to in the local cache, without any network access."""
    if revision and _COMMIT.match(revision):
        return revision
    try:
        from huggingface_hub import constants
    except ImportError:
        return None
    folder = Path(constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--"))
    ref = folder / "refs" / (revision or "main")
    try:
        commit = ref.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return commit if _COMMIT.match(commit) else None


# -- content hashes ----------------------------------------------------------------------------------

# -- the base class ------------------------------------------------------------------------------------


class HFModel(Model):
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

    def __init__(
        self,
        entry: ModelEntry,
        args: dict[str, Any],
        *,
        device: str = "cpu",
        dtype: str = "auto",
        seed: int = 0,
    ):
        super().__init__(entry, args, device=device, dtype=resolve_dtype(dtype, device), seed=seed)
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
            self._identity = ident
        return self._identity

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
            "parameters": count_parameters(self.model) if self.model is not None else None,
        }
        if self.model is not None:
            info["model_class"] = type(self.model).__name__
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
        kwargs[_dtype_kwarg()] = getattr(torch, self.dtype)
        kwargs["device_map"] = self.arg_values["device_map"] or {"": self.device}
        if self.quantization:
            from transformers import BitsAndBytesConfig

            if self.quantization == "8bit":
                kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
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
        :mod:`vlmbench.checkpoints`)."""
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
        try:
            return loader(self.checkpoint, local_files_only=True)
        except OSError:
            pass
        if self.arg_values["local_files_only"]:
            raise self._missing("local_files_only is set")
        blocker = download_blocker()
        if blocker or not download:
            raise self._missing(blocker or "it was not downloaded yet")
        try:
            return loader(self.checkpoint, local_files_only=False)
        except OSError as exc:
            raise self._missing(f"downloading it failed ({first_line(exc)})") from None

    def _missing(self, reason: str) -> AssetMissingError:
        rev = f" at revision {self.revision}" if self.revision else ""
        return AssetMissingError(
            f"checkpoint {self.checkpoint!r}{rev}",
            f"it is not in the local Hugging Face cache and {reason}. Download it where there is network "
            f"access (`hf download {self.checkpoint}`) and copy the cache folder (HF_HOME), or pass a local "
            "checkpoint directory with --model-args pretrained=PATH",
        )

    def _apply_adapter(self, model: Any) -> Any:
        adapter = self.arg_values.get("adapter")
        if not adapter:
            return model
        path = Path(adapter).expanduser()
        if not (path / "adapter_config.json").is_file():
            raise AssetMissingError(
                f"adapter {adapter!r}",
                "expected a PEFT adapter directory (adapter_config.json + weights); "
                "pass it with --model-args adapter=PATH",
            )
        from peft import PeftModel

        peft_model = PeftModel.from_pretrained(model, str(path), is_trainable=False)
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
        """Runs :meth:`prepare` in a DataLoader worker. Workers start before the weights are loaded and
        read local files only: when the processor is not available there yet, the batch is prepared
        again in the main process after :meth:`load`, which fetches it or reports what is missing."""
        try:
            return self.prepare(requests)
        except VlmbenchError:  # reported cleanly by the main process, which prepares the batch again
            return None

    def prepare(self, requests: list[Request]) -> Any:
        """Model inputs for a batch: processor work, on the CPU (tensors are moved in generate/rank)."""
        return None

    def batch_inputs(self, batch: Batch) -> Any:
        """The batch's prepared inputs (prepared here if the worker could not)."""
        return batch.inputs if batch.inputs is not None else self.prepare(batch.requests)

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

    def prefill(self, inputs: dict[str, Any]) -> tuple[Any, Any]:
        """Run the prompt (batch of one): the logits of the next token, shape (1, vocab), and the cache."""
        out = self.model(**inputs, use_cache=True)
        return out.logits[:, -1], cache_of(out)

    def continue_from(self, input_ids: Any, cache: Any) -> Any:
        """Run ``input_ids`` (batch, length) after a cached prompt; the logits (batch, length, vocab)."""
        return self.model(input_ids=input_ids, use_cache=True, **{cache_kwarg(self.model): cache}).logits

    def score_continuations(
        self, inputs: dict[str, Any], continuations: Sequence[Sequence[int]], *, normalize: str = "sum"
    ) -> list[float]:
        """Log-likelihood of each token sequence in ``continuations`` after the prompt ``inputs``
        (one unpadded sequence on the model's device): the prompt runs once and its cache is repeated
        for each batch of ``rank_batch_size`` continuations, padded on the right (causal attention:
        padding after a token cannot change it)."""
        import torch

        if not continuations:
            return []
        if any(len(c) == 0 for c in continuations):
            raise VlmbenchError(f"model {self.name!r}: a candidate answer has no tokens")
        chunk = max(1, int(self.arg_values.get("rank_batch_size") or 64))
        with torch.inference_mode():
            first_logits, cache = self.prefill(inputs)
            first = torch.log_softmax(first_logits.float(), dim=-1)[0]
            scores: list[float] = []
            for start in range(0, len(continuations), chunk):
                part = continuations[start : start + chunk]
                width = max(len(c) for c in part)
                ids = torch.zeros(len(part), width, dtype=torch.long)
                mask = torch.zeros(len(part), width, dtype=torch.bool)
                for i, c in enumerate(part):
                    ids[i, : len(c)] = torch.tensor(list(c), dtype=torch.long)
                    mask[i, : len(c)] = True
                ids, mask = ids.to(first.device), mask.to(first.device)
                token_lp = torch.zeros(len(part), width, device=first.device)
                token_lp[:, 0] = first[ids[:, 0]]
                if width > 1:
                    expanded = copy.deepcopy(cache)
                    expanded.batch_repeat_interleave(len(part))
                    logits = self.continue_from(ids[:, :-1], expanded)
                    lp = torch.log_softmax(logits.float(), dim=-1)
                    token_lp[:, 1:] = lp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
                total = (token_lp * mask).sum(dim=1)
                if normalize == "mean":
                    total = total / mask.sum(dim=1)
                scores.extend(total.tolist())
        return scores


class CandidateTokens:
    """Token ids of candidate answers, computed once per candidate set (per process)."""

    def __init__(self, max_sets: int = 64):
        self._cache: OrderedDict[tuple, list[list[int]]] = OrderedDict()
        self.max_sets = max_sets

    def get(
        self, tokenizer: Any, candidates: tuple[str, ...], prefix: str, end_id: int | None
    ) -> list[list[int]]:
        key = (candidates, prefix, end_id)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        encoded = tokenizer([prefix + c for c in candidates], add_special_tokens=False)["input_ids"]
        ids = [list(e) + ([end_id] if end_id is not None else []) for e in encoded]
        self._cache[key] = ids
        if len(self._cache) > self.max_sets:
            self._cache.popitem(last=False)
        return ids


def keep_cpu_4bit_layout(model: Any) -> int:
    """Keep every 4-bit layer in bitsandbytes' standard layout on the CPU.

    On CPUs with AVX512-BF16, bitsandbytes (0.50) repacks a 4-bit weight into a CPU kernel layout the
    first time the layer runs in inference mode. The repacked layer computes with bfloat16 block scales,
    so its answers differ from those of the same checkpoint on any other machine (and a cached
    prediction must not depend on the CPU it was made on); the repacking fails outright for layers
    whose ``in_features`` is not a multiple of the block size; and a repacked layer can no longer be
    trained. The standard layout is what every device computes with. Returns the number of layers.
    """
    changed = 0
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
            changed += 1
    return changed


def count_parameters(model: Any) -> int:
    """Exact number of weights (4-bit packed tensors counted by their unpacked shape)."""
    import math

    total = 0
    for param in model.parameters():
        state = getattr(param, "quant_state", None)
        shape = getattr(state, "shape", None)
        total += math.prod(shape) if shape is not None else param.numel()
    return total


def _dtype_kwarg() -> str:
    """``from_pretrained`` takes ``dtype`` since transformers 4.56 (``torch_dtype`` before)."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def cache_kwarg(model: Any) -> str:
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def cache_of(output: Any) -> Any:
    cache = getattr(output, "cache", None)
    if cache is None:
        cache = getattr(output, "past_key_values", None)
    if cache is None:
        raise VlmbenchError("the model returned no key/value cache; likelihood ranking needs one")
    return cache
