"""Checked image decoding and tensor conversion (deblur.data.io)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from deblur.data.io import (
    DataError,
    ImageReadError,
    read_image,
    read_kernel,
    to_tensor,
    to_uint8,
    write_image,
)


def _rgb(h: int = 12, w: int = 16) -> np.ndarray:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img[0, 0] = (255, 0, 0)  # pure red in RGB
    return img


def test_write_read_roundtrip_is_rgb(tmp_path):
    img = _rgb()
    path = write_image(tmp_path / "a.png", img)
    back = read_image(path)
    assert back.dtype == np.uint8 and back.shape == img.shape
    np.testing.assert_array_equal(back, img)
    raw = cv2.imread(str(path))  # OpenCV's own order is BGR
    assert tuple(raw[0, 0]) == (0, 0, 255)


def test_gray_image_becomes_three_channels(tmp_path):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    img = read_image(tmp_path / "g.png")
    assert img.shape == (8, 8, 3)
    np.testing.assert_array_equal(img[..., 0], gray)
    np.testing.assert_array_equal(img[..., 2], gray)


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(ImageReadError, match="nope.png.*does not exist"):
        read_image(tmp_path / "nope.png")


def test_empty_and_garbage_files(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "junk.png").write_bytes(b"this is not an image at all")
    with pytest.raises(ImageReadError, match="empty.png.*empty"):
        read_image(tmp_path / "empty.png")
    with pytest.raises(ImageReadError, match="junk.png.*cannot be decoded"):
        read_image(tmp_path / "junk.png")
    assert issubclass(ImageReadError, DataError) and issubclass(DataError, ValueError)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_files_are_detected(tmp_path, suffix):
    img = cv2.resize(_rgb(), (64, 48))
    path = write_image(tmp_path / f"full{suffix}", img)
    assert read_image(path).shape == (48, 64, 3)
    data = path.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ImageReadError, match=f"cut\\{suffix}.*truncated"):
        read_image(cut)


def test_jpeg_with_trailing_bytes_still_reads(tmp_path):
    path = write_image(tmp_path / "a.jpg", cv2.resize(_rgb(), (32, 32)))
    path.write_bytes(path.read_bytes() + b"\x00" * 10 + b"trailer")
    assert read_image(path).shape == (32, 32, 3)


def test_to_tensor_range_and_roundtrip():
    img = _rgb()
    t = to_tensor(img)
    assert t.shape == (3, 12, 16) and t.dtype == torch.float32
    assert t.min() >= -1.0 and t.max() <= 1.0
    assert float(t[0, 0, 0]) == 1.0 and float(t[1, 0, 0]) == -1.0
    np.testing.assert_array_equal(to_uint8(t), img)


def test_to_uint8_rounds_and_clamps():
    t = torch.empty(3, 1, 3)
    t[:, 0, 0] = 127.6 / 127.5 - 1.0  # 127.6 -> 128 (truncation would give 127)
    t[:, 0, 1] = 3.0
    t[:, 0, 2] = -7.0
    out = to_uint8(t)
    assert out.shape == (1, 3, 3)
    assert out[0, 0, 0] == 128 and out[0, 1, 0] == 255 and out[0, 2, 0] == 0


def test_read_kernel_normalises(tmp_path):
    np.save(tmp_path / "k.npy", np.ones((3, 3)) * 2)
    k = read_kernel(tmp_path / "k.npy")
    assert k.dtype == np.float32 and abs(k.sum() - 1) < 1e-6


def test_an_unreadable_kernel_is_named_once(tmp_path):
    """One sentence naming the file: not the decode error wrapped in a 'cannot be read' one."""
    (tmp_path / "k.png").write_bytes(b"not a png")
    with pytest.raises(ImageReadError) as err:
        read_kernel(tmp_path / "k.png")
    assert str(err.value) == f"Kernel file '{tmp_path / 'k.png'}' cannot be decoded."
    (tmp_path / "k.npy").write_bytes(b"not a npy")
    with pytest.raises(ImageReadError, match=r"k\.npy' cannot be read \("):
        read_kernel(tmp_path / "k.npy")
