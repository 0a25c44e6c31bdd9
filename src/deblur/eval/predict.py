"""Deblur images, folders, globs and videos with a trained generator (``deblur.predict``): the
checks that need no model first, then each input processed or reported by name with the reason."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from omegaconf import DictConfig
from torch import nn
from tqdm import tqdm

from deblur import inputs
from deblur.data.io import IMAGE_EXTENSIONS, DataError, read_image, write_image
from deblur.eval.inference import deblur_image, resolve_device
from deblur.models.load import load_generator


@dataclass
class Summary(inputs.Tally):
    """The written outputs and the inputs that could not be used (with reasons)."""

    tool: str = "predict"
    written: list[Path] = field(default_factory=list)
    images: int = 0
    videos: int = 0
    frames: int = 0

    @property
    def processed(self) -> int:
        return self.images + self.videos

    def report(self) -> str:
        done = f"{self.images} image(s) and {self.videos} video(s) ({self.frames} frames)"
        return super().report(f"processed {done}", "processed")


def plan_outputs(
    sources: list[Path], base: Path, out_dir: Path, cfg: DictConfig
) -> dict[Path, Path]:
    """A distinct output per input: an image with ``ext``, a ``_deblurred.mp4`` or frames folder."""
    if str(cfg.ext).lower() not in IMAGE_EXTENSIONS:
        raise inputs.OutputError(
            f"ext={cfg.ext} is not an image suffix; use one of {' '.join(IMAGE_EXTENSIONS)} "
            "(with the dot, e.g. ext=.jpg)."
        )
    video_ext = "" if cfg.video_as_frames else "_deblurred.mp4"

    def target(src: Path, tag: str) -> Path:  # the path below base, then _<tag> and the suffix
        ext = video_ext if src.suffix.lower() in inputs.VIDEO_EXTENSIONS else str(cfg.ext)
        rel = src.relative_to(base) if src.is_relative_to(base) else Path(src.name)
        return out_dir / rel.parent / f"{rel.stem}{'_' + tag if tag else ''}{ext}"

    outputs = dict(zip(sources, inputs.distinct_outputs(sources, target)))
    for src, dst in outputs.items():
        if dst != target(src, ""):
            print(f"[deblur.predict] {src} -> {dst} (another input has the same name)", flush=True)
    return outputs


def _mp4(dst: Path, fps: float, shape: tuple[int, ...]) -> cv2.VideoWriter:
    dst.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), fps, shape[1::-1])
    if not writer.isOpened():
        raise DataError(f"OpenCV cannot write video '{dst}' (mp4v codec).")
    return writer


def _process_video(src: Path, dst: Path, cfg: DictConfig, deblur) -> int:
    """Deblur every frame of a video into an mp4 or numbered PNG frames; the frames done."""
    cap = cv2.VideoCapture(str(src))
    if not cap.isOpened():
        raise DataError(f"Video '{src}' cannot be opened by OpenCV (corrupt or unsupported codec).")
    fps, total = cap.get(cv2.CAP_PROP_FPS) or 25.0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    frames = (bgr for _, bgr in iter(cap.read, (False, None)))  # up to the first failed read
    writer, n = None, 0
    try:
        for bgr in tqdm(frames, total=total, desc=src.name, unit="frame", disable=not cfg.progress):
            out = deblur(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            if cfg.video_as_frames:
                write_image(dst / f"frame_{n:06d}.png", out)
            else:
                writer = writer or _mp4(dst, fps, out.shape)
                writer.write(cv2.cvtColor(out, cv2.COLOR_RGB2BGR))
            n += 1
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    if n == 0:
        raise DataError(f"Video '{src}' has no readable frames (corrupt or unsupported codec).")
    return n


def run_predict(cfg: DictConfig, model: nn.Module | None = None) -> Summary:
    """Deblur everything ``cfg.input`` names into ``cfg.output``; the model is loaded last."""
    out_dir = Path(cfg.output).expanduser()
    base, files = inputs.collect_inputs(cfg.input, bool(cfg.recursive))
    summary = Summary()
    media = {"image": IMAGE_EXTENSIONS, "video": inputs.VIDEO_EXTENSIONS}
    kinds = summary.by_kind(inputs.without_outputs(files, out_dir, base), media)
    outputs = plan_outputs(kinds["image"] + kinds["video"], base, out_dir, cfg)
    if not outputs:
        print(summary.report(), flush=True)
        return summary
    inputs.ensure_writable_dir(out_dir)
    dev = resolve_device(cfg.device)
    bf16 = dev.type == "cuda" if str(cfg.bf16) == "auto" else bool(cfg.bf16)
    if model is None:
        model = load_generator(cfg.ckpt, use_ema=cfg.use_ema)

    def deblur(rgb: np.ndarray) -> np.ndarray:
        out = deblur_image(model, rgb, cfg.tile, cfg.overlap, dev, bf16, context=int(cfg.context))
        return np.concatenate([rgb, out], axis=1) if cfg.side_by_side else out

    images = kinds["image"]
    for src in tqdm(images, desc="deblur", unit="img", disable=not cfg.progress or not images):
        if summary.attempt(src, lambda p: write_image(outputs[p], deblur(read_image(p)))):
            summary.images += 1
            summary.written.append(outputs[src])
    for src in kinds["video"]:
        if n := summary.attempt(src, lambda p: _process_video(p, outputs[p], cfg, deblur)):
            summary.videos, summary.frames = summary.videos + 1, summary.frames + n
            summary.written.append(outputs[src])
    print(summary.report(), flush=True)
    if summary.processed:
        print(f"[deblur.predict] outputs in {out_dir}", flush=True)
    return summary
