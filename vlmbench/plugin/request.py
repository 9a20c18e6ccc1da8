"""What a model is asked: typed requests and the batches they travel in.

A request carries everything a model needs — rendered prompt, decoded image, candidate answers — so
models never reach back into tasks or datasets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from PIL import Image

from vlmbench.tasks.images import ImageProblem

RequestType = Literal["generate", "rank"]


@dataclass
class Request:
    """One question for a model.

    ``kind == "generate"``: answer freely. ``kind == "rank"``: score every entry of ``candidates``.
    ``image`` is filled in by the data loader (RGB) — or, for a model that sends images on as they are
    (:attr:`vlmbench.plugin.model.Model.wants_image_bytes`), ``image_bytes``, the file's own bytes;
    ``problem`` is set instead when the image could not be read, and such requests never reach a model.
    """

    sample_id: str
    kind: RequestType
    prompt: str
    question: str
    image_ref: str
    image_id: str
    candidates: tuple[str, ...] = ()
    image: Image.Image | None = None
    image_sha256: str | None = None
    image_bytes: bytes | None = None
    problem: ImageProblem | None = None


@dataclass
class Batch:
    """Requests with readable images, plus whatever the model's ``collate`` prepared from them
    (tensors, processor outputs) in a DataLoader worker."""

    requests: list[Request]
    inputs: Any = None
    failed: list[Request] = field(default_factory=list)
    error: str | None = None  # set when ``collate`` failed; the requests are then retried one by one

    def __len__(self) -> int:
        return len(self.requests)
