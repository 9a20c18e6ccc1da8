"""``qwen2.5-vl``: Qwen2.5-VL (``Qwen/Qwen2.5-VL-3B-Instruct``), a chat model with native-resolution vision.

An image becomes a variable number of tokens (one per 28x28 pixels after resizing into the
``min_pixels``..``max_pixels`` budget): the budget is the main speed/accuracy knob on product photos.
"""

from __future__ import annotations

from typing import Any

from vlmbench.api import Arg, ArgError, ChatVLM


class Qwen25VL(ChatVLM):
    args = {
        "min_pixels": Arg(
            int, None, "smallest image area after resizing, in pixels (default: the processor's)"
        ),
        "max_pixels": Arg(
            int,
            None,
            "largest image area after resizing, in pixels; 28*28 per image token (default: the processor's)",
        ),
    }
    model_class = "AutoModelForImageTextToText"
    model_types = ("qwen2_5_vl", "qwen2_vl")
    answer_prefix = ""  # the assistant turn starts on a fresh line

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        low, high = self.arg_values["min_pixels"], self.arg_values["max_pixels"]
        if low is not None and high is not None and low > high:
            raise ArgError(f"model {self.name!r}: min_pixels ({low}) is larger than max_pixels ({high})")

    def image_kwargs(self) -> dict[str, Any]:
        low, high = self.arg_values["min_pixels"], self.arg_values["max_pixels"]
        if low is None and high is None:
            return {}
        size = dict(self.processor.image_processor.size)
        if low is not None:
            size["shortest_edge"] = low
        if high is not None:
            size["longest_edge"] = high
        return {"size": size}
