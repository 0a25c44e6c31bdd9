"""TensorBoard custom-scalars layout: G and D losses, D(real)/D(fake) and validation side by side.

Pass the result to ``SummaryWriter.add_custom_scalars`` (Lightning:
``logger.experiment.add_custom_scalars(custom_scalars_layout("gan"))``) once per run.
"""

from __future__ import annotations

import re

# Lightning appends _step / _epoch when a metric is logged with both on_step and on_epoch.
_SUFFIX = r"(_step|_epoch)?"

# (category, chart title, tag names) per task; every name becomes an anchored regex.
_CHARTS: dict[str, list[tuple[str, str, tuple[str, ...]]]] = {
    "gan": [
        ("GAN: G vs D", "G total vs D loss", ("train/g_total", "train/d")),
        ("GAN: G vs D", "G loss terms", ("train/g_adv", "train/g_pixel", "train/g_perceptual")),
        ("GAN: G vs D", "D(real) vs D(fake)", ("train/d_real", "train/d_fake")),
        ("GAN: validation", "PSNR (output vs blurred input)", ("val/psnr", "val/psnr_input")),
        ("GAN: validation", "SSIM (output vs blurred input)", ("val/ssim", "val/ssim_input")),
    ],
    "classifier": [
        ("Classifier", "loss (train vs val)", ("train/loss", "val/loss")),
        ("Classifier", "accuracy % (train vs val)", ("train/acc", "val/acc")),
    ],
}


def tag_regex(tag: str) -> str:
    """Anchored regex for one logged tag (so ``train/d`` does not also match ``train/d_real``)."""
    return "^" + re.escape(tag) + _SUFFIX + "$"


def custom_scalars_layout(kind: str | None = None) -> dict[str, dict[str, list]]:
    """Layout ``{category: {chart: ["Multiline", [regex, ...]]}}`` for ``kind`` gan|classifier|None (both)."""
    kinds = list(_CHARTS) if kind is None else [kind]
    unknown = [k for k in kinds if k not in _CHARTS]
    if unknown:
        raise ValueError(
            f"custom_scalars_layout: unknown kind {unknown[0]!r}; use one of {sorted(_CHARTS)} "
            "or None for all charts."
        )
    layout: dict[str, dict[str, list]] = {}
    for k in kinds:
        for category, title, tags in _CHARTS[k]:
            layout.setdefault(category, {})[title] = ["Multiline", [tag_regex(t) for t in tags]]
    return layout
