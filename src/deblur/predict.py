"""Deblur images, folders, globs and videos with a trained generator.

``python -m deblur.predict ckpt=<gan .ckpt> input=<file|folder|glob|video> output=<folder>``
(options in ``conf/predict.yaml``: ``tile=512``, ``device=cpu``, ``side_by_side=true`` ...).
Every input file is either processed or reported by name with the reason (not an image,
unreadable, corrupt); the final summary counts both, and the exit code is 1 when nothing could
be processed.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from torch import nn

from deblur.cli import entry_point
from deblur.data.io import IMAGE_EXTENSIONS, DataError, read_image, write_image
from deblur.inference import deblur_image, resolve_device
from deblur.inputs import (
    VIDEO_EXTENSIONS,
    OutputError,
    collect_inputs,
    distinct_outputs,
    ensure_writable_dir,
    without_outputs,
)
from deblur.models.load import load_generator

log = logging.getLogger(__name__)


@dataclass
class Summary:
    """What a predict run did: written outputs and the inputs it could not use (with reasons)."""

    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    images: int = 0
    videos: int = 0
    frames: int = 0

    @property
    def processed(self) -> int:
        return self.images + self.videos

    def report(self) -> str:
        lines = [
            f"[deblur.predict] processed {self.images} image(s) and {self.videos} video(s) "
            f"({self.frames} frames); {len(self.failed)} file(s) not processed."
        ]
        lines += [f"  not processed: {p}: {why}" for p, why in self.failed]
        return "\n".join(lines)


def output_path(src: Path, base: Path, out_dir: Path, ext: str, tag: str = "") -> Path:
    """Where the result of ``src`` goes: its path relative to ``base`` under ``out_dir``, with
    ``ext`` for its suffix and ``_<tag>`` (the source suffix) after the stem when given."""
    try:
        rel = src.relative_to(base)
    except ValueError:
        rel = Path(src.name)
    return out_dir / rel.parent / f"{rel.stem}{'_' + tag if tag else ''}{ext}"


def plan_outputs(
    images: list[Path], videos: list[Path], base: Path, out_dir: Path, cfg: DictConfig
) -> dict[Path, Path]:
    """A distinct output for every image and video (see :func:`deblur.inputs.distinct_outputs`)."""
    ext = str(cfg.ext)
    if ext.lower() not in IMAGE_EXTENSIONS:
        raise OutputError(
            f"ext={ext} is not an image suffix; use one of {' '.join(IMAGE_EXTENSIONS)} "
            "(with the dot, e.g. ext=.jpg)."
        )
    frames = bool(cfg.video_as_frames)

    def target(src: Path, tag: str) -> Path:
        if src.suffix.lower() not in VIDEO_EXTENSIONS:
            return output_path(src, base, out_dir, ext, tag)
        if frames:
            return output_path(src, base, out_dir, "", tag)  # a folder of frame_NNNNNN.png
        return output_path(src, base, out_dir, "_deblurred.mp4", tag)

    sources = images + videos
    outputs = dict(zip(sources, distinct_outputs(sources, target)))
    for src, dst in outputs.items():
        if dst != target(src, ""):
            print(f"[deblur.predict] {src} -> {dst} (another input has the same name)", flush=True)
    return outputs


def _side_by_side(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.concatenate([a, b], axis=1)


def _process_image(model: nn.Module, src: Path, dst: Path, cfg: DictConfig, dev, bf16) -> None:
    rgb = read_image(src)
    out = deblur_image(model, rgb, cfg.tile, cfg.overlap, dev, bf16, context=int(cfg.context))
    write_image(dst, _side_by_side(rgb, out) if cfg.side_by_side else out)


def _process_video(
    model: nn.Module, src: Path, dst: Path, cfg: DictConfig, dev, bf16, progress: bool
) -> int:
    """Deblur every frame of a video into an mp4 (mp4v) or numbered PNG frames; frames done."""
    import cv2
    from tqdm import tqdm

    cap = cv2.VideoCapture(str(src))
    if not cap.isOpened():
        raise DataError(f"Video '{src}' cannot be opened by OpenCV (corrupt or unsupported codec).")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    writer = None
    n = 0
    try:
        with tqdm(total=total, desc=src.name, unit="frame", disable=not progress) as bar:
            while True:
                ok, bgr = cap.read()
                if not ok:
                    break
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                out = deblur_image(model, rgb, cfg.tile, cfg.overlap, dev, bf16, int(cfg.context))
                if cfg.side_by_side:
                    out = _side_by_side(rgb, out)
                if cfg.video_as_frames:
                    write_image(dst / f"frame_{n:06d}.png", out)
                else:
                    if writer is None:
                        dst.parent.mkdir(parents=True, exist_ok=True)
                        fourcc = cv2.VideoWriter_fourcc(*"mp4v")
                        writer = cv2.VideoWriter(str(dst), fourcc, fps, out.shape[1::-1])
                        if not writer.isOpened():
                            raise DataError(f"OpenCV cannot write video '{dst}' (mp4v codec).")
                    writer.write(cv2.cvtColor(out, cv2.COLOR_RGB2BGR))
                n += 1
                bar.update(1)
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    if n == 0:
        raise DataError(f"Video '{src}' has no readable frames (corrupt or unsupported codec).")
    return n


class _NoRandomWeightsBanner(logging.Filter):
    """Drops the RANDOM WEIGHTS banner: a checkpoint's generator is rebuilt without ImageNet
    weights only to have its trained weights loaded over them right after."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "RANDOM WEIGHTS" not in record.getMessage()


def _load_quietly(ckpt, use_ema: bool) -> nn.Module:
    """:func:`load_generator` without the RANDOM WEIGHTS banner its network builder logs before
    the checkpoint's weights are loaded (they are never random here)."""
    quiet = _NoRandomWeightsBanner()
    weights_log = logging.getLogger("deblur.models.weights")
    weights_log.addFilter(quiet)
    try:
        return load_generator(ckpt, use_ema=use_ema)
    finally:
        weights_log.removeFilter(quiet)


def run_predict(cfg: DictConfig, model: nn.Module | None = None) -> Summary:
    """Deblur everything ``cfg.input`` names into ``cfg.output``; returns the :class:`Summary`.

    Every check that needs no model runs first: the inputs exist, each gets a distinct output,
    the output folder is writable. Only then is the checkpoint loaded.
    """
    from tqdm import tqdm

    out_dir = Path(cfg.output).expanduser()
    base, files = collect_inputs(cfg.input, bool(cfg.recursive))
    files = without_outputs(
        files, out_dir, base
    )  # input=photos/ output=photos/sharp recursive=true
    summary = Summary()
    images, videos = [], []
    for src in files:
        suffix = src.suffix.lower()
        if suffix in VIDEO_EXTENSIONS:
            videos.append(src)
        elif suffix in IMAGE_EXTENSIONS:
            images.append(src)
        else:
            reason = (
                f"not an image or video (suffix '{src.suffix}'; images: "
                f"{' '.join(IMAGE_EXTENSIONS)}; videos: {' '.join(VIDEO_EXTENSIONS)})"
            )
            summary.failed.append((src, reason))
            log.warning("[deblur.predict] skipped %s: %s", src, reason)
    outputs = plan_outputs(images, videos, base, out_dir, cfg)
    if outputs:
        ensure_writable_dir(out_dir)
    dev = resolve_device(cfg.device)
    bf16_opt = cfg.bf16
    bf16 = dev.type == "cuda" if str(bf16_opt) == "auto" else bool(bf16_opt)
    if model is None and outputs:
        model = _load_quietly(cfg.ckpt, use_ema=bool(cfg.use_ema))
    progress = bool(cfg.progress)
    if model is not None:
        model = model.to(dev).eval()
    for src in tqdm(images, desc="deblur", unit="img", disable=not progress or not images):
        dst = outputs[src]
        try:
            _process_image(model, src, dst, cfg, dev, bf16)
        except (DataError, ValueError) as err:
            summary.failed.append((src, str(err)))
            log.warning("[deblur.predict] failed %s: %s", src, err)
            continue
        summary.images += 1
        summary.written.append(dst)
    for src in videos:
        dst = outputs[src]
        try:
            summary.frames += _process_video(model, src, dst, cfg, dev, bf16, progress)
        except (DataError, ValueError) as err:
            summary.failed.append((src, str(err)))
            log.warning("[deblur.predict] failed %s: %s", src, err)
            continue
        summary.videos += 1
        summary.written.append(dst)
    print(summary.report(), flush=True)
    if summary.processed:
        print(f"[deblur.predict] outputs in {out_dir}", flush=True)
    return summary


@entry_point("predict")
def main(cfg: DictConfig) -> None:
    summary = run_predict(cfg)
    if summary.processed == 0:
        print("[deblur.predict] nothing could be processed.", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
