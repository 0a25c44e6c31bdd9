"""TensorBoard custom-scalars layout (G vs D losses, D(real) / D(fake), validation), for
``logger.experiment.add_custom_scalars(custom_scalars_layout("gan"))`` once per run."""

from __future__ import annotations

import re

# (task, category, chart title, the tags it shows); each tag becomes an anchored regex
CHARTS = (
    ("gan", "GAN: G vs D", "G total vs D loss", ("train/g_total", "train/d")),
    ("gan", "GAN: G vs D", "G loss terms", ("train/g_adv", "train/g_pixel", "train/g_perceptual")),
    ("gan", "GAN: G vs D", "D(real) vs D(fake)", ("train/d_real", "train/d_fake")),
    ("gan", "GAN: validation", "PSNR (output vs blurred input)", ("val/psnr", "val/psnr_input")),
    ("gan", "GAN: validation", "SSIM (output vs blurred input)", ("val/ssim", "val/ssim_input")),
    ("classifier", "Classifier", "loss (train vs val)", ("train/loss", "val/loss")),
    ("classifier", "Classifier", "accuracy % (train vs val)", ("train/acc", "val/acc")),  # both %
)


def tag_regex(tag: str) -> str:
    """Anchored regex for one logged tag (so ``train/d`` does not also match ``train/d_real``);
    Lightning appends _step / _epoch to a metric logged both on_step and on_epoch."""
    return "^" + re.escape(tag) + "(_step|_epoch)?$"


def custom_scalars_layout(kind: str | None = None) -> dict[str, dict[str, list]]:
    """Layout ``{category: {chart: ["Multiline", [regex, ...]]}}`` for ``kind`` gan|classifier|None (both)."""
    tasks = sorted({task for task, *_ in CHARTS})
    if kind not in (None, *tasks):
        raise ValueError(
            f"custom_scalars_layout: unknown kind {kind!r}; use one of {tasks} or None for all charts."
        )
    layout: dict[str, dict[str, list]] = {}
    for task, category, title, tags in CHARTS:
        if kind in (None, task):
            layout.setdefault(category, {})[title] = ["Multiline", [tag_regex(t) for t in tags]]
    return layout
