"""Image reading and writing with checked decodes, and tensor <-> uint8 conversion: uint8
``H x W x 3`` RGB on disk and in numpy, float32 ``3 x H x W`` in [-1, 1] in tensors."""

from __future__ import annotations

import contextlib
import io
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

from deblur.errors import UserError

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
"""File suffixes (lower case) that the dataset readers treat as images."""

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_FIX = "Re-copy or re-extract the file from the original dataset, or remove the pair."


class DataError(UserError, ValueError):
    """A dataset, folder or pair is not what the data layer expects."""


class ImageReadError(DataError):
    """An image file is missing, unreadable, corrupt or truncated."""


def instantiate_node(
    node: Any, where: str, example: str, fix: str, want: tuple[type, str] | None = None, **kw: Any
) -> Any:
    """``hydra.utils.instantiate(node, _convert_="all", **kw)``; no ``_target_`` (``example``), a
    failed build or a result not of ``want`` (type, name): a DataError naming ``where``, ``fix``."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    if not isinstance(node, Mapping) or "_target_" not in node:
        raise DataError(f"{where} needs a '_target_' node such as {example}, got {node!r}.")
    try:
        built = instantiate(node, _convert_="all", **kw)
    except InstantiationException as exc:
        cause = exc.__cause__ or exc
        raise DataError(
            f"{where}: {node['_target_']} could not be built ({type(cause).__name__}: {cause}). "
            f"{fix}"
        ) from exc
    if want is not None and not isinstance(built, want[0]):
        got = type(built).__name__
        raise DataError(f"{where}: {node['_target_']} gave a {got}, not {want[1]}. {fix}")
    return built


def _png_is_complete(data: bytes) -> bool:
    """Walk the PNG chunks; a complete file reaches its IEND chunk inside the data."""
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        end = pos + 12 + length
        if end > len(data):
            return False
        if data[pos + 4 : pos + 8] == b"IEND":
            return True
        pos = end
    return False


def _read_bytes(path: Path) -> bytes:
    """The file's bytes; a missing, unreadable or empty file and a truncated PNG / JPEG stream
    are an :class:`ImageReadError` naming it."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageReadError(f"Image file '{path}' does not exist. {_FIX}") from None
    except OSError as exc:
        raise ImageReadError(f"Image file '{path}' cannot be read ({exc}). {_FIX}") from exc
    if not data:
        raise ImageReadError(f"Image file '{path}' is empty (0 bytes). {_FIX}")
    problem = None
    if data.startswith(_PNG_SIGNATURE) and not _png_is_complete(data):
        problem = "the PNG stream ends before its IEND chunk (truncated file)"
    # entropy-coded data never holds FF D9: a complete JPEG has its EOI after its last scan start
    if data.startswith(b"\xff\xd8") and not 0 <= data.rfind(b"\xff\xda") < data.rfind(b"\xff\xd9"):
        problem = "the JPEG stream has no end-of-image marker after its last scan (truncated file)"
    if problem is not None:
        raise ImageReadError(f"Image file '{path}' is corrupt: {problem}. {_FIX}")
    return data


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image as uint8 ``H x W x 3`` RGB (gray expanded); a missing, empty, undecodable or
    truncated file is an :class:`ImageReadError` (cv2 gives None or a gray-filled image)."""
    path = Path(path)
    bgr = cv2.imdecode(np.frombuffer(_read_bytes(path), np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageReadError(
            f"Image file '{path}' cannot be decoded by OpenCV (corrupt or not an image; "
            f"supported: {', '.join(IMAGE_EXTENSIONS)}). {_FIX}"
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def image_size(path: str | os.PathLike[str], check: bool = False) -> tuple[int, int]:
    """``(height, width)`` from the file header (Pillow reads no pixels); ``check=True`` reads the
    whole file and raises as :func:`read_image` would, at a fraction of its cost for PNG / JPEG."""
    path = Path(path)
    data = _read_bytes(path) if check else None
    if data is None or data.startswith((_PNG_SIGNATURE, b"\xff\xd8")):  # checked complete
        file = path if data is None else io.BytesIO(data)  # checked bytes: not read again
        with contextlib.suppress(OSError, Image.DecompressionBombError), Image.open(file) as image:
            if min(image.size) > 0:
                return image.height, image.width
    image = read_image(path)  # other formats when checked, missing, empty, an unreadable header
    return int(image.shape[0]), int(image.shape[1])


def write_image(path: str | os.PathLike[str], rgb: np.ndarray) -> Path:
    """Write a uint8 RGB (``H x W x 3``) or gray (``H x W``) image; the suffix picks the format."""
    path = Path(path)
    image = np.asarray(rgb)
    if image.dtype != np.uint8:
        raise DataError(
            f"write_image('{path}') needs a uint8 image, got {image.dtype}; "
            "convert with deblur.data.io.to_uint8 or np.clip(...).round().astype(np.uint8)."
        )
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    elif image.ndim != 2:
        raise DataError(f"write_image('{path}') needs H x W x 3 or H x W, got {image.shape}.")
    ok, buf = cv2.imencode(path.suffix or ".png", image)
    if not ok:
        raise DataError(f"OpenCV cannot encode '{path}' (suffix '{path.suffix}'); use .png.")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.tobytes())
    return path


def read_kernel(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a blur kernel saved as ``.npy`` (float) or 16-bit PNG; returns float32 summing to 1."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".npy":
            kernel = np.load(path, allow_pickle=False)
        else:
            kernel = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    except (OSError, ValueError) as exc:
        raise ImageReadError(f"Kernel file '{path}' cannot be read ({exc}).") from exc
    if kernel is None:  # cv2.imread: missing or not an image
        raise ImageReadError(f"Kernel file '{path}' cannot be decoded.")
    kernel = np.asarray(kernel, np.float32)
    total = float(kernel.sum())
    if kernel.ndim != 2 or total <= 0:
        raise DataError(f"Kernel file '{path}' is not a 2-D non-negative kernel.")
    return kernel / total


def to_tensor(image: np.ndarray, uint8: bool = False) -> torch.Tensor:
    """uint8 ``H x W x 3`` -> float32 ``3 x H x W`` in [-1, 1] (``uint8``: the uint8
    ``3 x H x W`` tensor, for :func:`from_uint8` on the device)."""
    if image.dtype != np.uint8 or image.ndim != 3:
        raise DataError(f"to_tensor needs a uint8 H x W x C image, got {image.dtype} {image.shape}")
    chw = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    return chw if uint8 else from_uint8(chw)


def from_uint8(chw: torch.Tensor) -> torch.Tensor:
    """uint8 image tensor -> float32 in [-1, 1], as :func:`to_tensor` (the same rounding)."""
    return chw.float().div_(127.5).sub_(1.0)


def to_uint8(tensor: torch.Tensor) -> np.ndarray:
    """float ``3 x H x W`` in [-1, 1] -> uint8 ``H x W x 3``, clamped and rounded (not cut)."""
    t = tensor.detach()
    if t.ndim != 3:
        raise DataError(f"to_uint8 needs a 3 x H x W tensor, got shape {tuple(t.shape)}.")
    t = ((t.float().clamp(-1.0, 1.0) + 1.0) * 127.5).round_()
    return t.to(torch.uint8).permute(1, 2, 0).cpu().numpy()
