"""The ``data.augment`` list on tensors, on the batch's device (``data.augment_on=gpu``, the flow
in docs/DESIGN.md, Data): the CPU path's entries (built by albumentations first), distributions,
geometry and reflect-101 borders, but the warps of a sample compose into one grid sampled on the
final crop: one resampling where albumentations has one per warp (slightly sharper output)."""

from __future__ import annotations

import functools
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import albumentations as A
import cv2
import torch
import torch.nn.functional as F
from torch import Tensor

from deblur.data.io import DataError, from_uint8
from deblur.data.transforms import PATCH_BORDER, AugmentList, build_augmentations

AUGMENT_ON = ("cpu", "gpu")  # the values of data.augment_on


def _unsupported(key: str, what: str) -> DataError:
    return DataError(
        f"data.augment.{key}: {what} is not supported with data.augment_on=gpu (the tensor path "
        "has HorizontalFlip, VerticalFlip, Transpose, Affine, OpticalDistortion, ElasticTransform "
        "with linear interpolation and reflect_101 borders). Use data.augment_on=cpu for this "
        "list, or change that entry."
    )


@dataclass(frozen=True)
class _Op:
    kind: str  # hflip | vflip | transpose | affine | optical | elastic
    p: float
    params: dict[str, Any]


def _op_from(key: str, aug: A.BasicTransform) -> _Op:
    """The tensor op of one built albumentations transform (attributes as albumentations parsed
    them), or a DataError naming the entry."""
    p, name = float(aug.p), type(aug).__name__
    flips = {"HorizontalFlip": "hflip", "VerticalFlip": "vflip", "Transpose": "transpose"}
    if name in flips:
        return _Op(flips[name], p, {})
    if name not in ("Affine", "OpticalDistortion", "ElasticTransform"):
        raise _unsupported(key, name)
    for attr, value in (("interpolation", cv2.INTER_LINEAR), ("border_mode", PATCH_BORDER)):
        if getattr(aug, attr, value) != value:
            raise _unsupported(key, f"{attr}={getattr(aug, attr)}")
    if name == "Affine":  # albumentations gives every range as a (low, high) tuple
        if aug.translate_percent is None:  # then translate_px, (0, 0) unless the entry sets it
            if any(v != (0, 0) for v in aug.translate_px.values()):
                raise _unsupported(key, "Affine translate_px")
        tp = aug.translate_percent or {"x": (0.0, 0.0), "y": (0.0, 0.0)}
        if any(v != (0, 0) for v in aug.shear.values()):
            raise _unsupported(key, "Affine shear")
        if aug.fit_output or aug.balanced_scale:
            raise _unsupported(key, "Affine fit_output / balanced_scale")
        q = dict(zip(("tx", "ty", "sx", "sy"), (tp["x"], tp["y"], aug.scale["x"], aug.scale["y"])))
        return _Op("affine", p, {**q, "rotate": aug.rotate, "keep_ratio": aug.keep_ratio})
    if name == "OpticalDistortion":
        if aug.mode != "camera":
            raise _unsupported(key, f"OpticalDistortion mode={aug.mode}")
        return _Op("optical", p, {"k": aug.distort_limit})
    q = {"alpha": float(aug.alpha), "sigma": float(aug.sigma), "same_dxdy": bool(aug.same_dxdy)}
    q.update(ksize=17 if aug.approximate else None, noise=str(aug.noise_distribution))
    return _Op("elastic", p, q)


def gaussian_kernel1d(sigma: float, ksize: int | None = None) -> Tensor:
    """OpenCV's ``getGaussianKernel`` for float images: ``ksize`` taps (None: OpenCV's automatic
    size for float32, ``round(8 sigma + 1) | 1``), normalised to sum 1."""
    ksize = ksize or int(round(sigma * 8 + 1)) | 1
    return torch.from_numpy(cv2.getGaussianKernel(ksize, sigma, cv2.CV_32F)).ravel()


def affine_matrix(
    tx: Tensor, ty: Tensor, sx: Tensor, sy: Tensor, angle_deg: Tensor, size: int
) -> Tensor:
    """albumentations' ``create_affine_transformation_matrix`` (no shear) for a batch: the
    forward 3x3 map from input to output pixel coordinates, about the centre ``size/2 - 0.5``."""
    c = size / 2 - 0.5
    rad = torch.deg2rad(angle_deg.double() % 360)
    cos, sin = torch.cos(rad), torch.sin(rad)
    # shift_center @ translate @ rotate @ scale @ shift_topleft
    a, b, d, e = cos * sx, sin * sy, -sin * sx, cos * sy
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    rows = [[a, b, -(a * c + b * c) + tx + c], [d, e, -(d * c + e * c) + ty + c], [zero, zero, one]]
    return torch.stack([torch.stack(row, -1) for row in rows], -2)


@functools.lru_cache(maxsize=16)
def _kernel_on(sigma: float, ksize: int | None, device: torch.device) -> Tensor:
    """The elastic field's Gaussian taps on ``device``, copied there once."""
    return gaussian_kernel1d(sigma, ksize).to(device)


def _reflect101(x: Tensor, size: int) -> Tensor:
    """Reflect continuous pixel coordinates into [0, size - 1] about the edge pixel centres
    (OpenCV's BORDER_REFLECT_101 for interpolated reads)."""
    if size <= 1:
        return torch.zeros_like(x)
    period = 2 * (size - 1)
    x = torch.remainder(x, period)
    return torch.where(x > size - 1, period - x, x)


class TensorAugment:
    """The ``data.augment`` list on batched tensors ``B x C x S x S`` (S = the square patch the
    workers cut), then the centre ``crop_size`` crop; see the module docstring."""

    def __init__(self, augment: AugmentList, crop_size: int | None, seed: int = 0) -> None:
        # built, parsed and validated by albumentations as on the CPU path
        self.ops = [_op_from(key, aug) for key, aug in build_augmentations(augment)]
        self.crop_size, self.seed = int(crop_size) if crop_size else None, int(seed)

    def sample(self, batch: int, size: int, gen: torch.Generator) -> dict[str, Tensor]:
        """Per-sample parameters (CPU tensors) of every op, from ``gen``; an op that is not
        applied to a sample gets its identity parameters (affine: the matrix and its inverse)."""

        def uni(lo_hi: tuple[float, float]) -> Tensor:
            lo, hi = lo_hi
            return lo + (hi - lo) * torch.rand(batch, generator=gen, dtype=torch.float64)

        out: dict[str, Tensor] = {}
        for i, op in enumerate(self.ops):
            out[f"{i}.on"] = on = uni((0.0, 1.0)) < op.p
            if op.kind == "affine":
                q = op.params
                # albumentations: int(percent * size), truncated toward zero
                tx, ty = (torch.trunc(uni(q[key]) * size) for key in ("tx", "ty"))
                sx = uni(q["sx"])
                sy = sx.clone() if q["keep_ratio"] else uni(q["sy"])
                angle = uni(q["rotate"])
                drawn = zip((tx, ty, sx, sy, angle), (0.0, 0.0, 1.0, 1.0, 0.0))
                kept = [torch.where(on, v, torch.full_like(v, off)) for v, off in drawn]
                out[f"{i}.matrix"] = affine_matrix(*kept, size)
                out[f"{i}.angle"] = angle
                out[f"{i}.inverse"] = torch.linalg.inv(out[f"{i}.matrix"])  # on the host, float64
            elif op.kind == "optical":
                out[f"{i}.k"] = torch.where(on, uni(op.params["k"]), torch.zeros(batch).double())
        return out

    def grid(self, batch: int, size: int, device: torch.device, gen: torch.Generator) -> Tensor:
        """The composed sampling grid ``B x C x C x 2`` (grid_sample's normalised x, y)."""
        params = self.sample(batch, size, gen)
        crop = min(self.crop_size or size, size)
        off = (size - crop) // 2  # albumentations CenterCrop
        r = torch.arange(off, off + crop, device=device, dtype=torch.float32)
        y, x = torch.meshgrid(r, r, indexing="ij")
        x, y = [t.expand(batch, crop, crop).clone() for t in (x, y)]
        dev_seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        dev_gen = torch.Generator(device=device).manual_seed(dev_seed)
        dev = self._to_device(params, batch, device)

        # backward map: output pixel -> source pixel; the last transform applied comes first
        for i, op in reversed(list(enumerate(self.ops))):
            on = dev[f"{i}.on"].view(-1, 1, 1) > 0.5
            if op.kind == "hflip":
                x = torch.where(on, (size - 1) - x, x)
            elif op.kind == "vflip":
                y = torch.where(on, (size - 1) - y, y)
            elif op.kind == "transpose":
                x, y = torch.where(on, y, x), torch.where(on, x, y)
            elif op.kind == "affine":
                a = dev[f"{i}.inverse"].view(batch, 3, 3, 1, 1)
                x, y = [
                    _reflect101(a[:, r, 0] * x + a[:, r, 1] * y + a[:, r, 2], size) for r in (0, 1)
                ]
            elif op.kind == "optical":
                # cv2.initUndistortRectifyMap with camera matrix [[S, 0, S/2], [0, S, S/2]],
                # distortion (k, k, 0, 0, 0) and OpenCV's default new camera matrix (principal
                # point at the centre pixel, (S - 1) / 2)
                k = dev[f"{i}.k"].view(-1, 1, 1)
                c0, c1 = (size - 1) / 2, size / 2
                xn, yn = (x - c0) / size, (y - c0) / size
                f = 1 + k * (xn * xn + yn * yn) + k * (xn * xn + yn * yn) ** 2
                # (a sample without the op keeps x, y: the map with k = 0 is a half-pixel shift)
                x = torch.where(on, _reflect101(xn * f * size + c1, size), x)
                y = torch.where(on, _reflect101(yn * f * size + c1, size), y)
            elif op.kind == "elastic":
                field = self._elastic_field(batch, size, device, dev_gen, op.params)
                field = field * on.unsqueeze(1)
                if i == len(self.ops) - 1:  # last op: read at the integer output pixels
                    d = field[:, :, off : off + crop, off : off + crop]
                else:  # interpolate the field at the (continuous) coordinates
                    g = torch.stack([x, y], -1) / (size - 1) * 2 - 1
                    d = F.grid_sample(field, g, mode="bilinear", align_corners=True)
                x, y = _reflect101(x + d[:, 0], size), _reflect101(y + d[:, 1], size)
        return torch.stack([x, y], dim=-1) / (size - 1) * 2 - 1

    def _to_device(self, params: dict[str, Tensor], batch: int, device: torch.device) -> dict:
        """The parameters the warp reads (``{i}.on``, ``{i}.k``, ``{i}.inverse``) moved to
        ``device`` in one host-to-device copy (one packed float32 tensor, pinned on CUDA)."""
        host = {k: v for k, v in params.items() if k.endswith((".on", ".k", ".inverse"))}
        flat = [t.reshape(batch, -1).to(torch.float32) for t in host.values()]
        if not flat:  # no op: nothing to copy
            return {}
        packed, cuda = torch.cat(flat, dim=1), device.type == "cuda"
        packed = (packed.pin_memory() if cuda else packed).to(device, non_blocking=cuda)
        return dict(zip(host, packed.split([f.shape[1] for f in flat], dim=1)))

    @staticmethod
    def _elastic_field(
        batch: int, size: int, device: torch.device, gen: torch.Generator, q: dict[str, Any]
    ) -> Tensor:
        """albumentations' ``generate_displacement_fields``: noise normalised by its largest
        magnitude, Gaussian-blurred (replicate border), times alpha; ``B x 2 x S x S``."""
        ch = 1 if q["same_dxdy"] else 2
        shape = (batch, ch, size, size)
        if q["noise"] == "gaussian":
            f = torch.randn(shape, generator=gen, device=device)
            peak = f.abs().amax(dim=(1, 2, 3), keepdim=True)
            f = torch.where(peak > 1e-6, f / peak.clamp_min(1e-6), f)
        else:
            f = torch.rand(shape, generator=gen, device=device) * 2 - 1
        k = _kernel_on(float(q["sigma"]), q["ksize"], device)
        pad = k.numel() // 2
        f = f.reshape(batch * ch, 1, size, size)
        f = F.conv2d(F.pad(f, (pad, pad, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
        f = F.conv2d(F.pad(f, (0, 0, pad, pad), mode="replicate"), k.view(1, 1, -1, 1))
        f = f.reshape(batch, ch, size, size) * q["alpha"]
        return f.expand(batch, 2, size, size) if ch == 1 else f

    def apply(self, images: Sequence[Tensor], gen: torch.Generator) -> list[Tensor]:
        """The crops of the float tensors ``images`` (each ``B x C x S x S``, one size: the datasets
        check the pairs), warped with the same per-sample geometry."""
        first = images[0]
        if first.dim() != 4 or first.shape[-1] != first.shape[-2]:
            raise DataError(
                f"data.augment_on=gpu needs square training patches (B x C x S x S); got "
                f"{tuple(first.shape)}. Set data.pre_crop_scale (e.g. 1.6, the default) so the "
                "workers cut square patches, or use data.augment_on=cpu."
            )
        grid = self.grid(first.shape[0], first.shape[-1], first.device, gen)
        kw = {"mode": "bilinear", "padding_mode": "reflection", "align_corners": True}
        return [F.grid_sample(t, grid.to(t.dtype), **kw) for t in images]

    @staticmethod
    def to_float(batch: dict[str, Any]) -> dict[str, Any]:
        """The uint8 image tensors of a batch (the workers' patches) in [-1, 1], on their device."""
        return {
            k: from_uint8(v) if isinstance(v, Tensor) and v.dtype == torch.uint8 else v
            for k, v in batch.items()
        }

    def __call__(self, batch: dict[str, Any], epoch: int = 0) -> dict[str, Any]:
        """Augment the image tensors of a collated batch (``blur`` + ``sharp``, or ``image``)."""
        batch = self.to_float(batch)
        keys = [k for k in ("blur", "sharp", "image") if k in batch]
        key = f"{self.seed}|{epoch}|" + "|".join(batch["name"])  # the same in every process
        gen = torch.Generator().manual_seed(zlib.crc32(key.encode()))
        return {**batch, **dict(zip(keys, self.apply([batch[k] for k in keys], gen)))}
