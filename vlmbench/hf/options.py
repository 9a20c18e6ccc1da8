"""The options every ``transformers`` model plugin takes (``--model-args``), merged into each plugin's own
by :class:`vlmbench.hf.base.HFModel`: which checkpoint, quantisation, adapters, remote code, placement."""

from __future__ import annotations

from vlmbench.plugin.args import Arg

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
    # Recorded in identity() when they differ from these defaults, so that plain 8-bit runs keep their key.
    "int8_threshold": Arg(
        float,
        6.0,
        "load_in_8bit: LLM.int8() outlier threshold (bitsandbytes llm_int8_threshold)",
        min=0.0,
        affects_output=False,
    ),
    "int8_min_out_features": Arg(
        int,
        0,
        "load_in_8bit: quantise every Linear layer with more output features than this, and only those "
        "(0: the layers transformers converts by default, which keeps output heads in full precision)",
        min=0,
        affects_output=False,
    ),
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
