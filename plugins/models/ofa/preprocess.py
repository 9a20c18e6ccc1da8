"""OFA's VQA input preparation: question normalisation and the image transform."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import torch
from PIL import Image
from torch import Tensor
from torchvision import transforms

IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)
# Resolution of the VQA fine-tuned checkpoints; base/large were pre-trained at 384.
DEFAULT_RESOLUTION = 480


def normalize_question(question: str, max_words: int | None = None) -> str:
    """Lower-case, drop leading punctuation, turn hyphens and slashes into spaces, collapse
    whitespace, optionally keep the first ``max_words`` words, and end with a question mark."""
    text = question.lower().lstrip(",.!?*#:;~").replace("-", " ").replace("/", " ")
    text = re.sub(r"\s{2,}", " ", text).rstrip("\n").strip(" ")
    if max_words is not None:
        words = text.split(" ")
        if len(words) > max_words:
            text = " ".join(words[:max_words])
    return text if text.endswith("?") else f"{text}?"


def question_text(question: str, max_words: int | None = None) -> str:
    """The string OFA tokenises for a question: normalised, with the leading space BPE needs."""
    return " " + normalize_question(question, max_words)


def build_image_transform(resolution: int = DEFAULT_RESOLUTION) -> Callable[[Image.Image], Tensor]:
    """RGB → bicubic resize to resolution² (aspect ratio not kept) → [0, 1] → mean/std 0.5."""
    return transforms.Compose(
        [
            lambda image: image.convert("RGB"),
            transforms.Resize((resolution, resolution), interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.ToTensor(),
            transforms.Normalize(mean=IMAGE_MEAN, std=IMAGE_STD),
        ]
    )


def preprocess_images(images: Sequence[Image.Image] | Tensor, resolution: int = DEFAULT_RESOLUTION) -> Tensor:
    """Stack PIL images into [B, 3, R, R]; a tensor is taken as already transformed."""
    if isinstance(images, Tensor):
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected transformed images [B, 3, H, W], got {list(images.shape)}")
        return images
    transform = build_image_transform(resolution)
    return torch.stack([transform(image) for image in images])
