"""Reading images safely: paths confined to the image root, decoded to RGB, hashed.

Every failure is an :class:`ImageProblem` with a short reason code, so a run can skip the sample and
count it (or stop, if asked) instead of crashing half-way.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from vlmbench.errors import SampleError
from vlmbench.files import NotRegularFile, open_regular

# Pillow's own bomb check warns at 89M pixels and errors at twice that; vlmbench errors at the limit.
MAX_PIXELS = 89_478_485
# A product photo is a few MB at most; a file far larger is not an image worth reading into memory.
MAX_FILE_BYTES = 256 * 2**20


class ImageProblem(SampleError):
    """An image that cannot be used; ``reason`` (missing_image, empty_image, corrupt_image,
    image_too_large, image_outside_root, bad_image_path, not_a_file) is what it is counted under."""


def confined_path(root: Path, relative: str) -> Path:
    """``root / relative``, refusing absolute paths, ``..`` and symlinks that lead outside ``root``."""
    if "\x00" in relative:
        raise ImageProblem("bad_image_path", f"image path {relative!r} contains a NUL byte")
    rel = Path(relative)
    if rel.is_absolute() or relative.startswith(("/", "\\")):
        raise ImageProblem("image_outside_root", f"absolute image path {relative!r} is not allowed")
    if ".." in rel.parts:
        raise ImageProblem("image_outside_root", f"image path {relative!r} leaves the image root")
    try:
        root = _resolved(root)
        path = (root / rel).resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop is a RuntimeError before Python 3.13
        raise ImageProblem("bad_image_path", f"image path {relative!r} cannot be resolved: {exc}") from None
    if not path.is_relative_to(root):
        raise ImageProblem("image_outside_root", f"image path {relative!r} resolves outside the image root")
    return path


@functools.lru_cache(maxsize=64)
def _resolved(root: Path) -> Path:
    # The image root is the same for every image of a task: resolve its links once.
    return root.resolve()


def read_image_file(root: Path, relative: str, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file under ``root``. Anything else — a FIFO or device (which would block
    or never end), a directory, a file larger than ``max_bytes`` — is refused before it is read."""
    path = confined_path(root, relative)
    try:
        with open_regular(path) as fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                raise ImageProblem("empty_image", f"{path} is empty (0 bytes)")
            if size > max_bytes:
                raise ImageProblem(
                    "image_too_large",
                    f"{path} has {size} bytes, more than the limit of {max_bytes} for an image file",
                )
            data = fh.read(max_bytes + 1)
    except FileNotFoundError:
        raise ImageProblem("missing_image", f"{path} does not exist") from None
    except IsADirectoryError:
        raise ImageProblem("missing_image", f"{path} is a directory") from None
    except NotRegularFile as exc:
        raise ImageProblem("not_a_file", str(exc)) from None
    except (OSError, ValueError) as exc:
        raise ImageProblem("missing_image", f"{path}: {exc}") from None
    if not data:
        raise ImageProblem("empty_image", f"{path} is empty (0 bytes)")
    if len(data) > max_bytes:  # the file grew after it was checked
        raise ImageProblem("image_too_large", f"{path} has more than {max_bytes} bytes")
    return data


def decode_image(data: bytes, name: str = "image", max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode image bytes to an RGB image; transparency is flattened onto white like a catalog page."""
    if not data:
        raise ImageProblem("empty_image", f"{name} is empty (0 bytes)")
    try:
        img = Image.open(io.BytesIO(data))
        width, height = img.size
        if width * height > max_pixels:
            raise ImageProblem(
                "image_too_large", f"{name} has {width}x{height} pixels, more than the limit of {max_pixels}"
            )
        # load() decodes fully, so a truncated file fails here (Pillow's LOAD_TRUNCATED_IMAGES is off
        # by default) rather than yielding half an image.
        img.load()
    except ImageProblem:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageProblem("image_too_large", f"{name}: {exc}") from None
    except Exception as exc:
        raise ImageProblem(
            "corrupt_image", f"{name} cannot be decoded: {type(exc).__name__}: {exc}"
        ) from None
    return to_rgb(img)


def to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16/32-bit greyscale: Pillow's convert() clips at 255; scale the range down instead.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
