"""``smolvlm``: SmolVLM (``HuggingFaceTB/SmolVLM-500M-Instruct``, the Idefics3 architecture), a small chat VLM.

Large images are split into tiles (plus a downscaled global view), each becoming a fixed number of
tokens: ``do_image_splitting`` and ``image_longest_edge`` trade detail for speed.
"""

from __future__ import annotations

from typing import Any

from vlmbench.api import Arg, ChatVLM, Request


class SmolVLM(ChatVLM):
    args = {
        "do_image_splitting": Arg(
            bool, None, "split large images into tiles plus a global view (default: the processor's, on)"
        ),
        "image_longest_edge": Arg(
            int,
            None,
            "resize images so the longest edge is this many pixels before tiling (default: the processor's)",
        ),
    }
    model_class = "AutoModelForImageTextToText"
    model_types = ("idefics3", "smolvlm")
    answer_prefix = " "  # the template ends the prompt with "Assistant:"

    def processor_images(self, requests: list[Request]) -> list[Any]:
        return [[r.image] for r in requests]  # one list of images per prompt

    def image_kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.arg_values["do_image_splitting"] is not None:
            out["do_image_splitting"] = self.arg_values["do_image_splitting"]
        if self.arg_values["image_longest_edge"] is not None:
            out["size"] = {"longest_edge": self.arg_values["image_longest_edge"]}
        return out
