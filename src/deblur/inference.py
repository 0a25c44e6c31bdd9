"""Use trained networks: load them from Lightning checkpoints and deblur images of any size.

- :func:`load_generator` / :func:`load_classifier` rebuild the network from the run config stored
  in the checkpoint (``hyper_parameters["cfg"]``) and load its weights (``weights_only=True``).
- :func:`pad_to_multiple` / :func:`crop_to` make any image fit the network's stride: mirror
  (reflect) padding, repeated periodically when the image is smaller than the pad (so a 7x5 image
  works), done with index arithmetic on tensor sizes so traced / ONNX exports stay dynamic.
- :func:`deblur_image` runs a generator on one uint8 RGB image, whole or in overlapping tiles
  blended with linear cross-fades (memory bounded by the tile size), on CPU or GPU, bf16 optional.
"""

from __future__ import annotations

import copy
import logging
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from deblur.errors import UserError

log = logging.getLogger(__name__)

__all__ = [
    "CheckpointError",
    "load_checkpoint",
    "load_generator",
    "load_classifier",
    "save_generator_checkpoint",
    "save_classifier_checkpoint",
    "pad_to_multiple",
    "crop_to",
    "PadCrop",
    "resolve_device",
    "deblur_tensor",
    "deblur_image",
    "tile_starts",
    "blend_ramp",
]

STRIDE = 32  # FPN generators downsample by 32; padding to it is harmless for the others


class CheckpointError(UserError, ValueError):
    """A checkpoint file is missing, unreadable, of the wrong kind, or does not fit its network."""


# --------------------------------------------------------------------------- checkpoints


def load_checkpoint(ckpt_path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a deblur checkpoint safely (``weights_only=True``) and check its two required keys."""
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"Checkpoint {path} does not exist. Give the path of a `.ckpt` file written by a "
            "training run, e.g. runs/<task>/<run>/checkpoints/best.ckpt."
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure gets the same clear message
        raise CheckpointError(
            f"Cannot read checkpoint {path} ({type(err).__name__}: {err}). The file is corrupt, "
            "truncated, or not a deblur/Lightning checkpoint; use a checkpoint written by "
            "`python -m deblur.train` or `python -m deblur.train_classifier`."
        ) from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(
            f"Checkpoint {path} has no `state_dict`: it is not a Lightning checkpoint of this "
            "project (a bare state dict or another project's file?). Use runs/.../best.ckpt."
        )
    cfg = (ckpt.get("hyper_parameters") or {}).get("cfg")
    if not isinstance(cfg, dict):
        raise CheckpointError(
            f"Checkpoint {path} has no run config (`hyper_parameters['cfg']`), so the network "
            "cannot be rebuilt from it. Use a checkpoint written by this project's training."
        )
    return ckpt


def _kind(state_dict: dict[str, Tensor]) -> str:
    prefixes = {k.split(".", 1)[0] for k in state_dict}
    if "generator" in prefixes:
        return "gan"
    if "net" in prefixes:
        return "classifier"
    return "unknown"


def _sub_state(state_dict: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def _without_pretrained(node: dict[str, Any]) -> dict[str, Any]:
    """Copy of a Hydra node with pretrained weights switched off (the checkpoint has the weights)."""
    node = copy.deepcopy(node)
    if "pretrained" in node or "_target_" in node:
        node["pretrained"] = False
    if "weights_path" in node:
        node["weights_path"] = None
    return node


def _load_strict(net: nn.Module, state: dict[str, Tensor], path: Path, what: str) -> None:
    result = net.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"Checkpoint {path}: the {what} weights do not fit the network rebuilt from its own "
            f"config (missing {len(result.missing_keys)} keys, e.g. {result.missing_keys[:3]}; "
            f"unexpected {len(result.unexpected_keys)}, e.g. {result.unexpected_keys[:3]}). "
            "The checkpoint was written by another version of the code or edited by hand."
        )


def load_generator(
    ckpt_path: str | Path, use_ema: bool = True, map_location: str | torch.device = "cpu"
) -> nn.Module:
    """The generator of a GAN checkpoint in eval mode (its EMA copy when present and ``use_ema``)."""
    from hydra.utils import instantiate

    path = Path(ckpt_path).expanduser()
    ckpt = load_checkpoint(path, map_location)
    sd = ckpt["state_dict"]
    kind = _kind(sd)
    if kind == "classifier":
        raise CheckpointError(
            f"Checkpoint {path} is a blur-classifier checkpoint (weights `net.*`), not a GAN one. "
            "Deblurring needs a generator from `python -m deblur.train` "
            "(runs/gan/<run>/checkpoints/best.ckpt); classifier checkpoints go to "
            "`python -m deblur.blur_score` or `disc.checkpoint=`."
        )
    if kind != "gan":
        raise CheckpointError(
            f"Checkpoint {path} has no generator weights (no `generator.*` keys); use a GAN "
            "checkpoint written by `python -m deblur.train`."
        )
    gen_cfg = ckpt["hyper_parameters"]["cfg"].get("gen")
    if not isinstance(gen_cfg, dict) or "_target_" not in gen_cfg:
        raise CheckpointError(
            f"Checkpoint {path}: its run config has no generator node `gen` with a `_target_`, "
            "so the generator cannot be rebuilt."
        )
    prefix = "generator."
    if use_ema and any(k.startswith("ema_generator.") for k in sd):
        prefix = "ema_generator."
    net: nn.Module = instantiate(_without_pretrained(gen_cfg), _convert_="all")
    _load_strict(net, _sub_state(sd, prefix), path, prefix.rstrip("."))
    log.info("Loaded %s weights from %s", prefix.rstrip("."), path)
    return net.eval().requires_grad_(False)


def load_classifier(ckpt_path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """The ``BlurClassifierNet`` of a classifier checkpoint in eval mode (outputs logits).

    Its ``crop_size`` attribute is the training crop size from the run config (or None).
    """
    from omegaconf import OmegaConf

    from deblur.models.critics import BlurClassifierNet

    path = Path(ckpt_path).expanduser()
    ckpt = load_checkpoint(path, map_location)
    sd = ckpt["state_dict"]
    kind = _kind(sd)
    if kind == "gan":
        raise CheckpointError(
            f"Checkpoint {path} is a GAN checkpoint (weights `generator.*`), not a blur-classifier "
            "one. Blur scoring needs a checkpoint from `python -m deblur.train_classifier` "
            "(runs/classifier/<run>/checkpoints/best.ckpt); GAN checkpoints go to "
            "`python -m deblur.predict`."
        )
    if kind != "classifier":
        raise CheckpointError(
            f"Checkpoint {path} has no classifier weights (no `net.*` keys); use a checkpoint "
            "written by `python -m deblur.train_classifier`."
        )
    backbone = ckpt["hyper_parameters"]["cfg"].get("backbone")
    if not isinstance(backbone, dict):
        raise CheckpointError(
            f"Checkpoint {path}: its run config has no `backbone` node, so the classifier "
            "cannot be rebuilt."
        )
    net = BlurClassifierNet(OmegaConf.create(_without_pretrained(backbone)))
    _load_strict(net, _sub_state(sd, "net."), path, "classifier")
    crop = (ckpt["hyper_parameters"]["cfg"].get("data") or {}).get("crop_size")
    net.crop_size = int(crop) if crop else None
    return net.eval().requires_grad_(False)


def save_generator_checkpoint(
    path: str | Path,
    generator: nn.Module,
    gen_cfg: dict[str, Any],
    ema_generator: nn.Module | None = None,
    cfg: dict[str, Any] | None = None,
) -> Path:
    """Write a generator in the GAN checkpoint format (e.g. to import weights trained elsewhere).

    ``gen_cfg`` is the ``conf/gen`` node (``_target_`` + kwargs) that rebuilds ``generator``.
    """
    sd = {f"generator.{k}": v for k, v in generator.state_dict().items()}
    if ema_generator is not None:
        sd.update({f"ema_generator.{k}": v for k, v in ema_generator.state_dict().items()})
    run_cfg = {**copy.deepcopy(cfg or {}), "gen": copy.deepcopy(gen_cfg)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": sd, "hyper_parameters": {"cfg": run_cfg}}, path)
    return path


def save_classifier_checkpoint(
    path: str | Path,
    net: nn.Module,
    backbone_cfg: dict[str, Any],
    crop_size: int | None = None,
) -> Path:
    """Write a ``BlurClassifierNet`` in the classifier checkpoint format (``net.*`` keys)."""
    sd = {f"net.{k}": v for k, v in net.state_dict().items()}
    run_cfg = {"backbone": copy.deepcopy(backbone_cfg), "data": {"crop_size": crop_size}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": sd, "hyper_parameters": {"cfg": run_cfg}}, path)
    return path


# --------------------------------------------------------------------------- padding


def _reflect_index(n, size, device: torch.device) -> Tensor:
    """Indices 0..size-1 of a periodic mirror extension (``reflect``, repeated) of length n.

    Sizes enter only through ``arange`` and tensor arithmetic, so traced (TorchScript) and
    exported (ONNX) graphs keep height and width dynamic.
    """
    i = torch.arange(n, device=device)
    last = torch.arange(size, device=device)[-1:]  # size - 1, as a tensor
    period = torch.clamp(2 * last, min=1)
    j = torch.remainder(i, period)
    return torch.minimum(torch.minimum(j, period - j), last)


def _at_least(n, low: int):
    """``max(n, low)`` for a Python int, a traced size (tensor) or an exported size (SymInt)."""
    if isinstance(n, Tensor):
        return torch.clamp(n, min=low)
    return torch.sym_max(n, low)


def pad_to_multiple(
    x: Tensor, multiple: int = STRIDE, min_size: int = 0
) -> tuple[Tensor, tuple[int, int]]:
    """Mirror-pad ``x`` (``... x H x W``) at the bottom/right to a multiple of ``multiple``
    (and to at least ``min_size``).

    Works for any size, also smaller than the pad (the mirror repeats, like reflect padding
    applied in steps). Returns the padded tensor and the original ``(H, W)`` for :func:`crop_to`.
    """
    h, w = x.shape[-2], x.shape[-1]
    hp = (h + multiple - 1) // multiple * multiple
    wp = (w + multiple - 1) // multiple * multiple
    if min_size > 0:
        hp, wp = _at_least(hp, min_size), _at_least(wp, min_size)
    x = torch.index_select(x, -2, _reflect_index(hp, h, x.device))
    x = torch.index_select(x, -1, _reflect_index(wp, w, x.device))
    return x, (h, w)


def model_multiple(model: nn.Module) -> int:
    """The size multiple a generator wants (its ``multiple`` attribute; 32 when it has none)."""
    return int(getattr(model, "multiple", None) or STRIDE)


def model_min_size(model: nn.Module) -> int:
    """The smallest padded side a generator accepts (``min_padded`` / ``min_size`` attributes)."""
    value = getattr(model, "min_padded", None) or getattr(model, "min_size", None)
    return int(value or model_multiple(model))


def crop_to(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Undo :func:`pad_to_multiple`: keep the top-left ``H x W``."""
    return x[..., : size[0], : size[1]]


class PadCrop(nn.Module):
    """Wraps a generator so it takes any ``H x W``: pad to the stride, run, crop (exportable)."""

    def __init__(self, net: nn.Module, multiple: int | None = None) -> None:
        super().__init__()
        self.net = net
        self.multiple = int(multiple or model_multiple(net))
        self.min_size = model_min_size(net)

    def forward(self, x: Tensor) -> Tensor:
        padded, size = pad_to_multiple(x, self.multiple, self.min_size)
        return crop_to(self.net(padded), size)


# --------------------------------------------------------------------------- running


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; a clear error when CUDA is asked but absent."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device={device} was asked for but this machine has no usable CUDA GPU "
            f"(torch {torch.__version__}). Use device=cpu or device=auto."
        )
    return dev


def device_name(device: str | torch.device) -> str:
    """What a figure was measured on: the GPU's name, or the CPU model (``/proc/cpuinfo``)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _autocast(device: torch.device, bf16: bool):
    if bf16 and device.type in ("cuda", "cpu"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return torch.autocast(device_type=device.type, enabled=False)


@torch.inference_mode()
def _run(model: nn.Module, x: Tensor, device: torch.device, bf16: bool) -> Tensor:
    """Generator on one padded-then-cropped ``1 x 3 x h x w`` [-1, 1] tensor, returned on CPU."""
    x = x.to(device, non_blocking=True)
    padded, size = pad_to_multiple(x, model_multiple(model), model_min_size(model))
    with _autocast(device, bf16):
        out = model(padded)
    return crop_to(out, size).float().clamp(-1, 1).cpu()


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``length`` with at least ``overlap``."""
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile + 1, step))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


def blend_ramp(n: int, overlap: int, ramp_start: bool, ramp_end: bool) -> Tensor:
    """1-D tile weights: 1 inside, a linear cross-fade over ``overlap`` pixels at inner edges.

    The first ``overlap // 4`` pixels at an inner edge get weight 0 (they see the padding, not the
    neighbouring image), the next ``overlap - 2 * (overlap // 4)`` pixels ramp up; two neighbours
    overlapping by exactly ``overlap`` sum to 1. Image borders (no neighbour) keep weight 1.
    """
    w = torch.ones(n, dtype=torch.float32)
    if overlap <= 0:
        return w
    margin = overlap // 4
    span = max(overlap - 2 * margin, 1)
    d = torch.arange(n, dtype=torch.float32)
    up = ((d - margin + 0.5) / span).clamp(0, 1)
    if ramp_start:
        w = torch.minimum(w, up)
    if ramp_end:
        w = torch.minimum(w, up.flip(0))
    return w


def _tiles(h: int, w: int, tile: int, overlap: int) -> Iterator[tuple[int, int, int, int, Tensor]]:
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    for y in ys:
        th = min(tile, h)
        wy = blend_ramp(th, overlap, y > 0, y + th < h)
        for x in xs:
            tw = min(tile, w)
            wx = blend_ramp(tw, overlap, x > 0, x + tw < w)
            yield y, x, th, tw, wy[:, None] * wx[None, :]


def deblur_tensor(
    model: nn.Module,
    x: Tensor,
    tile: int | None = None,
    overlap: int = 32,
    device: str | torch.device | None = "auto",
    bf16: bool = False,
) -> Tensor:
    """Deblur a ``1 x 3 x H x W`` (or ``3 x H x W``) [-1, 1] tensor; output on CPU, same shape.

    Tiling is exact for local networks; generators with instance norm normalise each tile with
    its own statistics, so tiled output differs slightly from whole-image output (use big tiles).
    """
    squeeze = x.ndim == 3
    if squeeze:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"deblur_tensor expects one image 1x3xHxW, got {tuple(x.shape)}.")
    dev = resolve_device(device)
    model = model.to(dev).eval()
    _, _, h, w = x.shape
    if tile is None or tile <= 0 or (h <= tile and w <= tile):
        out = _run(model, x, dev, bf16)
        return out[0] if squeeze else out
    if tile < 2 * overlap:
        raise ValueError(
            f"tile={tile} is too small for overlap={overlap}: a tile must be at least twice the "
            "overlap so its cross-fades do not meet. Raise tile= or lower overlap=."
        )
    acc = torch.zeros(1, 3, h, w, dtype=torch.float32)
    weight = torch.zeros(1, 1, h, w, dtype=torch.float32)
    for y, x0, th, tw, wt in _tiles(h, w, tile, overlap):
        part = _run(model, x[:, :, y : y + th, x0 : x0 + tw], dev, bf16)
        acc[:, :, y : y + th, x0 : x0 + tw] += part * wt
        weight[:, :, y : y + th, x0 : x0 + tw] += wt
    out = acc / weight.clamp_min(1e-8)
    return out[0] if squeeze else out


def deblur_image(
    model: nn.Module,
    rgb_uint8: np.ndarray,
    tile: int | None = None,
    overlap: int = 32,
    device: str | torch.device | None = "auto",
    bf16: bool = False,
) -> np.ndarray:
    """Deblur one ``H x W x 3`` uint8 RGB image (any size); returns the same shape and dtype."""
    from deblur.data.io import to_tensor, to_uint8

    if rgb_uint8.ndim != 3 or rgb_uint8.shape[2] != 3:
        raise ValueError(f"deblur_image expects an H x W x 3 RGB image, got {rgb_uint8.shape}.")
    x = to_tensor(rgb_uint8)
    out = deblur_tensor(model, x, tile, overlap, device, bf16)
    return to_uint8(out)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (for reports)."""
    return int(sum(p.numel() for p in model.parameters()))
