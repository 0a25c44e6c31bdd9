"""Adversarial losses on raw logits of any shape, means over all elements (a list, one per head: the
mean of the per-head losses); ``y`` is the sharp image, ``ŷ = G(x)`` the generated one."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

Logits = Tensor | Sequence[Tensor]
Scale = tuple[float, float]  # (a, b) of a calibration a * r + b


def _as_heads(logits: Logits) -> list[Tensor]:
    return [logits] if isinstance(logits, Tensor) else list(logits)


def _bce(logits: Tensor, target: float) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def _ls(logits: Tensor, target: float) -> Tensor:
    return ((logits - target) ** 2).mean()


class AdversarialLoss:
    """Base: per-head dispatch, ``n_critic``, and what a loss without a D (``loss=none``) has."""

    #: whether ``g_loss`` reads the real logits (relativistic losses); others take ``None``
    uses_real_in_g: bool = False
    #: False for ``loss=none``: no discriminator is built and there is no adversarial term
    uses_discriminator: bool = True
    #: whether :meth:`calibration` needs the classifier's validation logits (not the identity)
    needs_calibration_data: bool = False

    def __init__(self, n_critic: int = 1) -> None:
        if n_critic < 1:
            raise ValueError(f"n_critic must be >= 1 (D steps per G step); got {n_critic}.")
        self.n_critic = int(n_critic)

    def _per_head(self, fn: Callable[..., Tensor], real: Logits | None, fake: Logits, head: int):
        if isinstance(fake, Tensor):
            return fn(real, fake, head)
        reals = real if real is not None else [None] * len(fake)
        losses = [fn(r, f, i) for i, (r, f) in enumerate(zip(reals, fake, strict=True))]
        return torch.stack(losses).mean()

    def d_loss(self, real_logits: Logits, fake_logits: Logits, head: int = 0) -> Tensor:
        """D's loss (the caller detaches the fake); ``head`` keys per-head state (RaGAN pools)."""
        return self._per_head(self._d, real_logits, fake_logits, head)

    def g_loss(self, real_logits: Logits | None, fake_logits: Logits, head: int = 0) -> Tensor:
        """G's loss (the fake logits carry gradients to G)."""
        return self._per_head(self._g, real_logits, fake_logits, head)

    def _d(self, real: Tensor, fake: Tensor, head: int) -> Tensor:
        raise RuntimeError("loss=none has no adversarial loss.")

    _g = _d

    def calibration(self, real: Tensor, fake: Tensor, grad_norm: Tensor | None) -> Scale:
        """(a, b) putting a loaded classifier's realness logits r (``real``: sharp, ``fake``:
        blurred validation images) on this loss's scale a * r + b; BCE losses: the identity."""
        return 1.0, 0.0

    def observe(self, real_logits: Logits, fake_logits: Logits) -> None:
        """The scores a frozen D gave in a G step (it takes no D step): see RaGAN's pool."""

    def state_dict(self) -> dict[str, list[Tensor]]:
        """Loss state that a checkpoint must carry (RaGAN pools); stateless losses: empty."""
        return {}

    def load_state_dict(self, state: dict[str, list[Tensor]]) -> None:
        """Restore :meth:`state_dict` (exact resume)."""


class NoAdversarialLoss(AdversarialLoss):
    """``loss=none`` ("NoGAN"): content loss only; no discriminator and no D optimizer."""

    uses_discriminator = False


class GANLoss(AdversarialLoss):
    """Standard GAN, non-saturating G (Goodfellow et al., 2014), BCE with logits.
    D: ½ [BCE(D(y), 1) + BCE(D(ŷ), 0)];  G: BCE(D(ŷ), 1)."""

    criterion = staticmethod(_bce)  #: c(logits, target)
    fake_target = 0.0  #: D's target for fake logits (real ones: 1)
    g_scale = 1.0

    def _d(self, real: Tensor, fake: Tensor, head: int) -> Tensor:
        return 0.5 * (self.criterion(real, 1.0) + self.criterion(fake, self.fake_target))

    def _g(self, real: Tensor | None, fake: Tensor, head: int) -> Tensor:
        return self.g_scale * self.criterion(fake, 1.0)


class LSGANLoss(GANLoss):
    """Least-squares GAN (Mao et al., 2017), targets a=0, b=1, c=1.
    D: ½ E[(D(y) - 1)²] + ½ E[D(ŷ)²];  G: ½ E[(D(ŷ) - 1)²]."""

    criterion = staticmethod(_ls)
    g_scale = 0.5
    needs_calibration_data = True

    def calibration(self, real: Tensor, fake: Tensor, grad_norm: Tensor | None) -> Scale:
        """The least-squares affine map sharp -> 1, blurred -> 0 (this loss's D targets), so a
        frozen D's G target ``D = 1`` is the sharp images' level."""
        x = torch.cat([real, fake]).double().reshape(-1)
        t = torch.cat([torch.ones(real.numel()), torch.zeros(fake.numel())]).double()
        var = float(x.var(unbiased=False))
        if var <= 0:
            raise ValueError("calibration: the classifier gives every validation image one score.")
        scale = float(((x - x.mean()) * (t - t.mean())).mean()) / var
        return scale, float(t.mean() - scale * x.mean())


class WGANGPLoss(AdversarialLoss):
    """WGAN-GP (Gulrajani et al., 2017). D: E[D(ŷ)] - E[D(y)] (+ :meth:`gradient_penalty`); G:
    -E[D(ŷ)]; ``n_critic`` D steps per G step, each on its own batch (DeblurGAN-v2: 1; paper: 5)."""

    needs_calibration_data = True

    def __init__(self, n_critic: int = 1, gp_weight: float = 10.0) -> None:
        super().__init__(n_critic)
        self.gp_weight = float(gp_weight)

    def _d(self, real: Tensor, fake: Tensor, head: int) -> Tensor:
        return fake.mean() - real.mean()

    def _g(self, real: Tensor | None, fake: Tensor, head: int) -> Tensor:
        return -fake.mean()

    def calibration(self, real: Tensor, fake: Tensor, grad_norm: Tensor | None) -> Scale:
        """Scale so the mean input-gradient norm is 1 (the penalty starts near 0 instead of
        rewriting the loaded critic); the shift only centres the scores at 0."""
        if grad_norm is None or not grad_norm.numel():
            raise ValueError("WGAN-GP calibration needs the classifier's input-gradient norms.")
        scale = 1.0 / max(float(grad_norm.double().mean()), 1e-12)
        return scale, -scale * float(torch.cat([real, fake]).double().mean())

    def gradient_penalty(
        self, critic: Callable, real: Tensor, fake: Tensor, alpha: Tensor | None = None
    ) -> Tensor:
        """λ E[(‖∇ D(x̃)‖₂ - 1)²], x̃ = α y + (1 - α) ŷ, α ~ U[0, 1] per sample (or ``alpha``); a
        sample's score: its logits' mean, summed over heads; fp32, autocast off."""
        real, fake, batch = real.detach().float(), fake.detach().float(), real.shape[0]
        if alpha is None:
            alpha = torch.rand(batch, 1, 1, 1, device=real.device)
        if alpha.shape != (batch, 1, 1, 1):
            raise ValueError(f"alpha must have shape ({batch}, 1, 1, 1); got {tuple(alpha.shape)}.")
        mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
        with torch.autocast(device_type=real.device.type, enabled=False):
            outs = _as_heads(critic(mixed))
            score = sum(o.float().reshape(batch, -1).mean(dim=1).sum() for o in outs)
            (grad,) = torch.autograd.grad(score, mixed, create_graph=True)
            norm = torch.sqrt(grad.reshape(batch, -1).pow(2).sum(dim=1) + 1e-12)
            return self.gp_weight * ((norm - 1) ** 2).mean()


class RaGANLoss(GANLoss):
    """Relativistic average GAN (Jolicoeur-Martineau, 2018), BCE with logits.
    D: ½ [BCE(D(y) - E D(ŷ), 1) + BCE(D(ŷ) - E D(y), 0)]; G: the same with targets swapped.
    E[D(·)] per head and side: ``pool_size=0`` the batch mean, with gradient (the paper);
    ``pool_size=N`` (DeblurGAN-v2: 50) the detached mean of the last N per-image mean logits, a
    pool (the reference's ImagePool) filled in the D step (a frozen D: :meth:`observe`) first."""

    uses_real_in_g = True

    def __init__(self, n_critic: int = 1, pool_size: int = 0) -> None:
        super().__init__(n_critic)
        if pool_size < 0:
            raise ValueError(f"pool_size must be >= 0 (0 = batch mean); got {pool_size}.")
        self.pool_size = int(pool_size)
        self._pools: dict[tuple[str, int], deque[Tensor]] = {}

    def _mean(self, logits: Tensor, which: str, head: int) -> Tensor:
        """The reference for ``logits`` (B x ...) of side ``which`` ('real' / 'fake')."""
        if not self.pool_size:
            return logits.mean()
        pool = self._pools.get((which, head))
        if not pool:  # a G step before any D step (a frozen D): the current batch, detached
            return logits.detach().mean()
        return torch.stack(list(pool)).to(logits).mean()

    def _push(self, real: Tensor, fake: Tensor, head: int) -> None:
        """Add a batch's per-image mean logits to the pools (no-op without a pool)."""
        for which, logits in (("real", real), ("fake", fake)):
            if self.pool_size:
                pool = self._pools.setdefault((which, head), deque(maxlen=self.pool_size))
                pool.extend(logits.detach().float().reshape(logits.shape[0], -1).mean(1).unbind())

    def _relative(self, real: Tensor | None, fake: Tensor, head: int) -> tuple[Tensor, Tensor]:
        if real is None:
            raise ValueError(f"{type(self).__name__}.g_loss needs the real logits D(y) too.")
        return real - self._mean(fake, "fake", head), fake - self._mean(real, "real", head)

    def _d(self, real: Tensor, fake: Tensor, head: int) -> Tensor:
        self._push(real, fake, head)
        return super()._d(*self._relative(real, fake, head), head)

    def _g(self, real: Tensor | None, fake: Tensor, head: int) -> Tensor:
        real_rel, fake_rel = self._relative(real, fake, head)
        return GANLoss._d(self, fake_rel, real_rel, head)  # targets swapped

    def observe(self, real_logits: Logits, fake_logits: Logits) -> None:
        """A frozen D's G-step scores fill the pool (it takes no D step), so frozen and trained
        cells use the same reference."""
        pairs = zip(_as_heads(real_logits), _as_heads(fake_logits), strict=True)
        for head, (real, fake) in enumerate(pairs):
            self._push(real, fake, head)

    def state_dict(self) -> dict[str, list[Tensor]]:
        """The pools as ``{"real/0": [tensors]}`` (checkpointed: exact resume)."""
        return {f"{w}/{h}": [t.cpu() for t in q] for (w, h), q in self._pools.items()}

    def load_state_dict(self, state: dict[str, list[Tensor]]) -> None:
        self._pools = {}
        for key, values in state.items():
            which, head = key.rsplit("/", 1)
            self._pools[(which, int(head))] = deque(values, maxlen=self.pool_size or None)


class RaGANLSLoss(RaGANLoss):
    """Least-squares relativistic average GAN (Jolicoeur-Martineau, 2018; DeblurGAN-v2 default).
    D: ½ [E((D(y) - E D(ŷ) - 1)²) + E((D(ŷ) - E D(y) + 1)²)]; G: the same with targets swapped."""

    criterion = staticmethod(_ls)
    fake_target = -1.0
    needs_calibration_data = True

    def calibration(self, real: Tensor, fake: Tensor, grad_norm: Tensor | None) -> Scale:
        """Scale so the mean gap E D(sharp) - E D(blurred) is 1, D's optimal margin; scores
        centred at 0 (the loss is shift-invariant)."""
        gap = float(real.double().mean() - fake.double().mean())
        if gap <= 0:
            raise ValueError(f"calibration: the classifier scores blurred above sharp (gap {gap}).")
        return 1.0 / gap, -float(torch.cat([real, fake]).double().mean()) / gap
