"""Facts about loaded weights that do not depend on the model family."""

from __future__ import annotations

from typing import Any


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


def dtype_kwarg() -> str:
    """``from_pretrained`` takes ``dtype`` since transformers 4.56 (``torch_dtype`` before)."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
