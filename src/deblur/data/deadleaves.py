"""Training pairs made on the fly from ``(seed, epoch, index)``, blurred after the augmentations
(as a camera does) with the embedded kernels and noise: :class:`ReblurredPhotos` (the sharp
photos, ``train_blur=fresh``: fixed blurs are learnt by heart) and :class:`ProceduralPairs`,
dead-leaves images (Matheron; Lee, Mumford and Huang 2001; Achddou, Gousseau and Ladjal 2021):
random opaque shapes stacked back to front, radii of density ``r ** -alpha`` (``alpha`` near 3:
scale invariant, spectrum ~ ``1 / f ** 2`` and sparse gradients, like photographs)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np

from deblur.data.blur import CameraShake
from deblur.data.io import DataError

SHAPES: tuple[str, ...] = ("disc", "rectangle", "polygon")  # DeadLeaves.shapes: uniformly

_SHIFT = 4  # OpenCV fixed-point bits: vertices and radii at 1/16 pixel


def power_law_radii(
    rng: np.random.Generator, n: int, r_min: float, r_max: float, alpha: float
) -> np.ndarray:
    """``n`` radii of density ~ ``r ** -alpha`` on ``[r_min, r_max]`` (inverse CDF)."""
    u = rng.uniform(size=n)
    if abs(alpha - 1.0) < 1e-9:
        return r_min * (r_max / r_min) ** u
    e = 1.0 - alpha
    return (r_min**e + u * (r_max**e - r_min**e)) ** (1.0 / e)


def _mean_square_radius(r_min: float, r_max: float, alpha: float) -> float:
    """E[r^2] under the power law (for the number of shapes a coverage needs)."""

    def integral(p: float) -> float:  # int r^p dr on [r_min, r_max]
        if abs(p + 1.0) < 1e-9:
            return math.log(r_max / r_min)
        return (r_max ** (p + 1) - r_min ** (p + 1)) / (p + 1)

    return integral(2.0 - alpha) / integral(-alpha)


def lab_palette(rng: np.random.Generator, n: int = 4096) -> np.ndarray:
    """``n`` uint8 RGB colours uniform in lightness, moderate chroma (CIELAB), clipped to sRGB."""
    lab = np.empty((1, n, 3), np.float32)
    lab[0, :, 0] = rng.uniform(5.0, 95.0, n)
    chroma = rng.uniform(0.0, 1.0, n) ** 2 * 60.0  # most natural colours are unsaturated
    hue = rng.uniform(0.0, 2.0 * math.pi, n)
    lab[0, :, 1] = chroma * np.cos(hue)
    lab[0, :, 2] = chroma * np.sin(hue)
    rgb = cv2.cvtColor(lab, cv2.COLOR_Lab2RGB)[0]
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def palette_from_images(
    images: Sequence[np.ndarray], rng: np.random.Generator, n: int = 16384
) -> np.ndarray:
    """``n`` pixel colours drawn uniformly from uint8 RGB images: a natural colour distribution."""
    if not images:
        raise DataError(
            "data.embedded.procedural.colors=photos needs training photos, but the training "
            "split is empty; use procedural.colors=lab."
        )
    flat = np.concatenate([np.asarray(im, np.uint8).reshape(-1, 3) for im in images], axis=0)
    return flat[rng.integers(0, len(flat), n)].copy()


@dataclass(frozen=True)
class DeadLeaves:
    """``data.embedded.procedural``'s dead leaves (keys explained in conf/data/embedded.yaml): radii
    in pixels, ``coverage`` the mean shapes over a pixel (1/e^coverage see the background)."""

    r_min: float
    r_max: float
    alpha: float
    shapes: tuple[str, ...]
    textured: float
    smooth_sigma: float
    coverage: float
    max_shapes: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "shapes", tuple(str(s) for s in self.shapes))
        for ok, rule in _LEAF_RULES:
            if not ok(self):
                raise DataError(
                    f"data.embedded.procedural needs {rule}, got {self}: fix it in "
                    "conf/data/embedded.yaml or its data.embedded.procedural.<key>=... override."
                )

    @classmethod
    def from_config(cls, cfg: dict[str, Any] | None) -> DeadLeaves:
        """From a plain dict; unknown or missing keys are refused, naming them and the keys."""
        cfg, known = dict(cfg or {}), {f.name for f in fields(cls)}
        unknown, missing = sorted(set(cfg) - known), sorted(known - set(cfg))
        if unknown or missing:
            raise DataError(
                f"data.embedded.procedural: unknown key(s) {unknown}, missing key(s) {missing}; "
                f"the keys are {sorted(known)}, each set in conf/data/embedded.yaml."
            )
        return cls(**{**cfg, "shapes": tuple(cfg["shapes"] or ())})


_LEAF_RULES: tuple[tuple[Callable[[DeadLeaves], bool], str], ...] = (
    (lambda d: 0.0 < d.r_min < d.r_max, "0 < r_min < r_max (pixels)"),
    (lambda d: d.alpha > 0, "alpha > 0 (3 = scale invariant)"),
    (lambda d: bool(d.shapes) and set(d.shapes) <= set(SHAPES), f"shapes among {list(SHAPES)}"),
    (lambda d: 0.0 <= d.textured <= 1.0, "textured in [0, 1]"),
    (lambda d: d.smooth_sigma >= 0, "smooth_sigma >= 0"),
    (lambda d: d.coverage > 0 and d.max_shapes >= 1, "coverage > 0 and max_shapes >= 1"),
)


def _outlines(shapes: tuple[str, ...], d: SimpleNamespace) -> tuple:
    """Leaf outlines in OpenCV fixed point (polygon vertices, counts, is-disc, disc centres, radii):
    rectangles use 4 of the 7 vertex slots, polygons 3-7 sorted angles on the radius (convex)."""
    scale, radius = float(1 << _SHIFT), d.radius
    th = np.sort(d.vertex_angles, axis=1)
    vx, vy = radius[:, None] * np.cos(th), radius[:, None] * np.sin(th)
    c, s = np.cos(d.angle)[:, None], np.sin(d.angle)[:, None]
    rx = radius[:, None] * np.array([1.0, -1.0, -1.0, 1.0])
    ry = (radius * d.aspect)[:, None] * np.array([1.0, 1.0, -1.0, -1.0])
    is_rect = np.array([name == "rectangle" for name in shapes])[d.kind]
    vx[is_rect, :4] = rx[is_rect] * c[is_rect] - ry[is_rect] * s[is_rect]
    vy[is_rect, :4] = rx[is_rect] * s[is_rect] + ry[is_rect] * c[is_rect]
    counts = np.where(is_rect, 4, d.n_vertices).tolist()
    verts = np.stack([(d.cx[:, None] + vx) * scale, (d.cy[:, None] + vy) * scale], axis=2)
    is_disc = np.array([name == "disc" for name in shapes])[d.kind].tolist()
    centres = np.rint(np.stack([d.cx, d.cy], axis=1) * scale).astype(np.int64).tolist()
    radii = np.maximum(1, np.rint(radius * scale)).astype(np.int64).tolist()
    return np.rint(verts).astype(np.int32), counts, is_disc, centres, radii


def _texture(image: np.ndarray, label: np.ndarray, d: SimpleNamespace) -> None:
    """Paint the textured leaves of ``label`` into ``image`` (in place): a linear gradient
    (``texture == 1``) or a sine wave (2) from colour a to colour b, scaled by contrast."""
    lab_tex = d.texture[label]
    if not (sel := lab_tex > 0).any():
        return
    ids = label[sel]
    ys, xs = np.nonzero(sel)
    f32, angle = np.float32, d.tex_angle[ids]
    dx, dy = xs.astype(f32) - d.cx[ids].astype(f32), ys.astype(f32) - d.cy[ids].astype(f32)
    proj = dx * np.cos(angle).astype(f32) + dy * np.sin(angle).astype(f32)
    gradient = np.clip(0.5 + proj / (2.0 * d.radius[ids].astype(f32)), 0.0, 1.0)
    wave = 0.5 + 0.5 * np.sin(
        (2.0 * math.pi) * proj / d.period[ids].astype(f32) + d.phase[ids].astype(f32)
    )
    t = np.where(lab_tex[sel] == 1, gradient, wave).astype(np.float32) * d.contrast[ids]
    image[sel] = d.colour_a[ids] + (d.colour_b[ids] - d.colour_a[ids]) * t[:, None]


def dead_leaves(
    size: int | tuple[int, int],
    rng: np.random.Generator,
    params: DeadLeaves,
    palette: np.ndarray | None = None,
) -> np.ndarray:
    """One sharp dead-leaves image, uint8 ``H x W x 3`` RGB, of a side or ``(height, width)``;
    colours i.i.d. from ``palette`` (``M x 3`` uint8; None: :func:`lab_palette`); from ``rng``."""
    p = params
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    palette = np.asarray(lab_palette(rng) if palette is None else palette, np.float32)
    r_max = min(p.r_max, 2.0 * max(h, w))  # larger leaves only ever cover the whole image
    mean_area = math.pi * _mean_square_radius(p.r_min, r_max, p.alpha)
    n = int(min(p.max_shapes, math.ceil(p.coverage * h * w / mean_area)))
    m, tau = n + 1, 2.0 * math.pi
    # per-shape draws, in this order (index 0 is the background leaf behind everything)
    radius = np.concatenate([[float(max(h, w))], power_law_radii(rng, n, p.r_min, r_max, p.alpha)])
    d = SimpleNamespace(
        radius=radius,
        cx=np.concatenate([[w / 2.0], rng.uniform(0.0, w, n)]),
        cy=np.concatenate([[h / 2.0], rng.uniform(0.0, h, n)]),
        kind=rng.integers(0, len(p.shapes), m),
        angle=rng.uniform(0.0, math.pi, m),
        aspect=rng.uniform(0.25, 1.0, m),
        n_vertices=rng.integers(3, 8, m),
        colour_a=palette[rng.integers(0, len(palette), m)],
        colour_b=palette[rng.integers(0, len(palette), m)],
        contrast=rng.uniform(0.3, 1.0, m).astype(np.float32),
        texture=rng.uniform(size=m),  # -> 1 (gradient) below textured / 2, 2 (wave) below textured
        tex_angle=rng.uniform(0.0, tau, m),
        period=np.exp(rng.uniform(np.log(4.0), np.log(np.maximum(4.0, 2.0 * radius) + 1e-6))),
        phase=rng.uniform(0.0, tau, m),
        vertex_angles=rng.uniform(0.0, tau, (m, 7)),
    )
    d.texture = np.where(d.texture < p.textured / 2, 1, np.where(d.texture < p.textured, 2, 0))
    verts, counts, is_disc, centres, radii = _outlines(p.shapes, d)
    label = np.zeros((h, w), np.int32)
    for i in range(1, m):  # back to front: a later shape hides the earlier ones
        if is_disc[i]:
            cv2.circle(label, centres[i], radii[i], i, -1, cv2.LINE_8, _SHIFT)
        else:
            cv2.fillConvexPoly(label, verts[i, : counts[i]], i, cv2.LINE_8, _SHIFT)
    image = d.colour_a[label]  # H x W x 3 float32
    if p.textured > 0:
        _texture(image, label, d)
    if p.smooth_sigma > 0:
        image = cv2.GaussianBlur(image, (0, 0), p.smooth_sigma, borderType=cv2.BORDER_REFLECT_101)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _rng(tag: int, seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of sample ``index`` in ``epoch``; ``tag`` keeps each source apart."""
    return np.random.default_rng([tag, int(seed), int(epoch), int(index)])


@dataclass
class ProceduralPairs:
    """Dead-leaves pairs from ``(seed, epoch, index)``: the sharp image is drawn at ``size`` plus
    the blur's margin a side (no border effects in the crop); ``palette`` None: CIELAB colours."""

    size: int
    blur: CameraShake
    seed: int
    params: DeadLeaves
    palette: np.ndarray | None = None

    def __post_init__(self) -> None:
        if int(self.size) < 1:
            raise DataError(f"Procedural pairs need a positive size, got {self.size}.")
        self.size = int(self.size)

    def pair(self, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(blurred, sharp, kernel)``: uint8 ``size x size x 3`` twice and the float32 PSF."""
        rng = _rng(0xDEAD1EAF, self.seed, epoch, index)
        big = dead_leaves(self.size + 2 * self.blur.margin, rng, self.params, self.palette)
        return self.blur.blur_centre(big, self.size, rng)

    def name(self, epoch: int, index: int) -> str:
        """The sample's name in logs and batches."""
        return f"deadleaves/e{epoch}/{index:06d}"


@dataclass
class ReblurredPhotos:
    """Pairs from sharp photos blurred per ``(epoch, index)``: ``sharp`` / ``names`` per training
    item; ``read``: path -> uint8 RGB; ``transform``: A.Compose to ``size + 2 * blur.margin``."""

    sharp: Sequence[Path]
    read: Callable[[Path], np.ndarray]
    transform: Any
    size: int
    blur: CameraShake
    seed: int
    names: Sequence[str]

    def __post_init__(self) -> None:
        if not self.sharp:
            raise DataError(
                "data.embedded.train_blur=fresh needs training photos, but the training split is "
                "empty. Use train_blur=fixed, or train_source=procedural alone."
            )
        self.size = int(self.size)

    def pair(self, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(blurred, sharp, kernel)``: uint8 ``size x size x 3`` twice and the float32 PSF."""
        rng = _rng(0x5EB1, self.seed, epoch, index)
        photo = self.read(Path(self.sharp[index % len(self.sharp)]))
        self.transform.set_random_seed(int(rng.integers(2**31 - 1)))
        return self.blur.blur_centre(self.transform(image=photo)["image"], self.size, rng)

    def name(self, epoch: int, index: int) -> str:
        """``<photo item name>/fresh_e<epoch>``: the sample's name in logs and batches."""
        return f"{self.names[index % len(self.names)]}/fresh_e{epoch}"
