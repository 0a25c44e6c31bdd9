"""The GAN LightningModule: DeblurGAN-v2 training with manual optimization.

One iteration = one batch: a discriminator step (none when D is frozen or ``loss=none``), and
a generator step with content + weighted adversarial loss on every ``n_critic``-th batch (so
``n_critic`` D steps see ``n_critic`` different batches). Schedules run on our own iteration
counter (Lightning's ``global_step`` counts optimizer steps, up to two per iteration).
"""

from __future__ import annotations

import copy
import logging
import math
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from deblur.checks import ConfigValueError, check_disc_switches
from deblur.eval.metrics import psnr, sharpness_ratios, ssim
from deblur.losses.content import ContentLoss
from deblur.models.critics import Discriminator, load_classifier_weights
from deblur.models.load import load_classifier
from deblur.systems.distributed import gather_per_image

log = logging.getLogger(__name__)


#: model.compile_mode values (torch.compile's modes; None = its default)
COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class NonFiniteLossError(FloatingPointError):
    """A loss term or gradient became NaN/inf: the run stops and says where."""


def _as_list(x: Tensor | list[Tensor] | tuple[Tensor, ...]) -> list[Tensor]:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _mean_scores(real_out: list[Tensor], fake_out: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Mean raw critic output on real and on fake images, averaged over the heads (for logs)."""
    d_real = torch.stack([r.detach().float().mean() for r in real_out]).mean()
    d_fake = torch.stack([f.detach().float().mean() for f in fake_out]).mean()
    return d_real, d_fake


def per_image_scores(critic_out: Tensor | list[Tensor] | tuple[Tensor, ...]) -> Tensor:
    """One realness score per image: each head's logits averaged over space, then over heads."""
    heads = _as_list(critic_out)
    return torch.stack([h.float().flatten(1).mean(dim=1) for h in heads]).mean(dim=0)


def rng_state() -> dict[str, Any]:
    """Global RNG states as plain containers (loadable with ``weights_only=True``)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved (exact resume)."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), *n[2:]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def linear_decay_factor(iteration: int, total: int, decay_start: float, min_factor: float) -> float:
    """DeblurGAN-v2 schedule: constant until ``decay_start * total``, then linear to ``min_factor``."""
    if total <= 0:
        return 1.0
    start = int(decay_start * total)
    if iteration < start:
        return 1.0
    span = max(total - start, 1)
    frac = min((iteration - start) / span, 1.0)
    return max(1.0 - frac * (1.0 - min_factor), min_factor)


class LinearDecay(torch.optim.lr_scheduler.LambdaLR):
    """The DeblurGAN-v2 lr schedule on iterations (:func:`linear_decay_factor`) for one optimizer.

    ``total()`` is the run's planned iterations (known once the Trainer is set up); the optimizer
    steps every ``iterations_per_step`` iterations (G: every n_critic-th); the factor falls to
    ``min_lr`` / the optimizer's lr.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total: Callable[[], int],
        decay_start: float,
        min_lr: float,
        iterations_per_step: int = 1,
    ) -> None:
        base = float(optimizer.defaults["lr"])
        min_factor = min(min_lr / base, 1.0) if base > 0 else 0.0

        def factor(step: int) -> float:
            return linear_decay_factor(step * iterations_per_step, total(), decay_start, min_factor)

        super().__init__(optimizer, factor)


class GANSystem(pl.LightningModule):
    """Generator + discriminator + losses for one cell of the study.

    Built by Hydra from the run config's ``system`` node (:func:`deblur.systems.fit.build_system`): networks,
    losses, the ``_partial_`` optimizers and the lr schedule come in as constructor arguments.
    ``cfg`` is the whole resolved run config, saved as ``hyper_parameters["cfg"]`` so every tool
    rebuilds the networks from a checkpoint alone.
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: Discriminator | None,
        adv_loss: Any,
        content_loss: ContentLoss,
        optimizer_g: Callable[..., torch.optim.Optimizer],
        optimizer_d: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler],
        adv_weight: float,
        disc_checkpoint: str | None,
        disc_frozen: bool,
        disc_calibrate: bool,
        ema_decay: float,
        warmup_epochs: int,
        grad_clip: float,
        fused: bool,
        channels_last: bool,
        compile: bool,
        health_check_every: int,
        val_image_strips: int,
        grad_share_every: int = 0,
        judge_checkpoint: str | None = None,
        compile_mode: str | None = None,
        cfg: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters({"cfg": cfg}, logger=False)
        self.automatic_optimization = False
        self.generator = generator
        self.adv_loss = adv_loss
        self.content_loss = content_loss
        self.optimizer_g, self.optimizer_d, self.scheduler = optimizer_g, optimizer_d, scheduler
        self.adversarial = bool(adv_loss.uses_discriminator)
        self.adv_weight = float(adv_weight) if self.adversarial else 0.0
        self._set_discriminator(
            discriminator, adv_loss, disc_checkpoint, disc_frozen, disc_calibrate
        )
        self.n_critic = int(adv_loss.n_critic)
        self.ema_decay = float(ema_decay)
        self.ema_generator: nn.Module | None = None
        if self.ema_decay > 0:
            self.ema_generator = copy.deepcopy(self.generator).requires_grad_(False).eval()
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))
        self._host_iteration = 0  # = int(self.iteration), kept on the host (on_train_start)
        if compile:
            self._compile_in_place(compile_mode)
        self.warmup_epochs = int(warmup_epochs)
        self.grad_clip = float(grad_clip)
        self.fused = bool(fused)
        self.channels_last = bool(channels_last)
        if self.channels_last:  # weights with the inputs: every conv then runs NHWC
            self.to(memory_format=torch.channels_last)
        self._set_watches(health_check_every, val_image_strips, grad_share_every, judge_checkpoint)
        self._val: dict[str, list[Tensor]] = {}
        self._encoder_frozen: bool | None = None  # warm-up state last applied to G
        self._total: int | None = None  # iterations of the whole run (the schedule's length)

    def _set_watches(
        self,
        health_check_every: int,
        val_image_strips: int,
        grad_share_every: int,
        judge_checkpoint: str | None,
    ) -> None:
        """What is measured beside the losses: the NaN watch, validation strips, the
        adversarial gradient share and the held-out judge classifier."""
        self.check_every = int(health_check_every)
        # first iteration at which each checked term was non-finite (-1: never), kept on the
        # device so the check needs no host sync per step (read every check_every iterations)
        self._finite_terms = ["d", "g_adv", "g_pixel", "g_perceptual"]
        self.register_buffer(
            "_first_nonfinite", torch.full((4,), -1, dtype=torch.long), persistent=False
        )
        self._strips = int(val_image_strips)
        # every N-th G step: ||grad_G w L_adv|| / ||grad_G L_content|| (two extra backward
        # passes on that step); the mean since the last validation is logged as val/adv_grad_share
        self.grad_share_every = int(grad_share_every)
        self._grad_shares: list[Tensor] = []
        # a held-out blur classifier (never a discriminator here) judging G's validation outputs;
        # kept in a list so it is no submodule: not in the checkpoint, not trained, not in DDP
        self.judge_checkpoint = judge_checkpoint
        self._judge: list[nn.Module] = []
        if judge_checkpoint:
            self._judge = [load_classifier(judge_checkpoint, key="model.judge_checkpoint")]

    def _set_discriminator(
        self,
        discriminator: Discriminator | None,
        adv_loss: Any,
        checkpoint: str | None,
        frozen: bool,
        calibrate: bool,
    ) -> None:
        """D (none under ``loss=none``), loaded from a classifier checkpoint and calibrated for
        ``adv_loss`` when one is given, frozen when asked."""
        self.frozen_d = bool(frozen)
        self.disc_checkpoint = checkpoint
        self.load_report: dict[str, Any] | None = None
        self.discriminator = discriminator if self.adversarial else None
        if self.adversarial and self.discriminator is None:
            raise ValueError(f"{type(adv_loss).__name__} needs a discriminator; none was given.")
        check_disc_switches(
            adversarial=self.adversarial,
            checkpoint=self.disc_checkpoint,
            frozen=self.frozen_d,
            heads=getattr(self.discriminator, "head_names", []),
            kind=getattr(self.discriminator, "kind", "?"),
        )
        if self.discriminator is not None and self.disc_checkpoint:
            self.load_report = load_classifier_weights(
                self.discriminator,
                str(self.disc_checkpoint),
                calibrate=adv_loss if calibrate else None,
            )
        if self.frozen_d and self.discriminator is not None:
            self.discriminator.requires_grad_(False)
            self.discriminator.eval()

    def _compile_in_place(self, mode: str | None) -> None:
        """torch.compile the submodules in place (not the LightningModule: that breaks
        toggle_optimizer) with ``model.compile_mode`` (e.g. ``reduce-overhead``: CUDA graphs,
        fewer launches at batch 1; null: torch's default); state_dict keys stay the same."""
        if mode not in COMPILE_MODES:
            raise ConfigValueError(
                f"model.compile_mode={mode} is not a torch.compile mode. Fix: one of "
                f"{', '.join(str(m).lower() for m in COMPILE_MODES)}."
            )
        kw = {"mode": mode} if mode else {}
        self.generator.compile(**kw)
        if self.discriminator is not None:
            self.discriminator.compile(**kw)
        if getattr(self.content_loss, "perceptual", None) is not None:
            self.content_loss.perceptual.compile(**kw)

    # ------------------------------------------------------------------ checkpoints
    _FIXED_PREFIX = "content_loss."  # frozen VGG19: rebuilt from its weights, not stored per run

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        sd = checkpoint["state_dict"]
        self.raise_if_nonfinite()  # never save NaN weights
        for k in [k for k in sd if k.startswith(self._FIXED_PREFIX)]:
            del sd[k]
        checkpoint["deblur_rng"] = rng_state()
        checkpoint["deblur_adv_loss"] = self.adv_loss.state_dict()  # RaGAN pools

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "deblur_rng" in checkpoint:
            set_rng_state(checkpoint["deblur_rng"])
        self.adv_loss.load_state_dict(checkpoint.get("deblur_adv_loss") or {})

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Strict loading, except for the fixed VGG19 weights that checkpoints leave out."""
        state_dict = dict(state_dict)
        for k, v in super().state_dict().items():
            if k.startswith(self._FIXED_PREFIX) and k not in state_dict:
                state_dict[k] = v
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # ------------------------------------------------------------------ modes
    def train(self, mode: bool = True) -> GANSystem:
        super().train(mode)
        if self.frozen_d and self.discriminator is not None:
            self.discriminator.eval()  # a frozen D keeps its BatchNorm statistics
        if self.ema_generator is not None:
            self.ema_generator.eval()
        return self

    def eval_by_design(self) -> dict[str, str]:
        """Submodules that stay in eval mode during training on purpose, with the reason."""
        out = {"content_loss": "the fixed VGG19 of the perceptual loss"}
        if self.frozen_d:
            out["discriminator"] = "the frozen discriminator"
        if self.ema_generator is not None:
            out["ema_generator"] = "the EMA copy of the generator"
        return out

    # ------------------------------------------------------------------ optimizers
    def configure_optimizers(self):
        # fused kernels on CUDA only (as the optim.fused comment says); None: torch's choice
        fused = (
            {"fused": True, "foreach": False} if self.fused and torch.cuda.is_available() else {}
        )
        opts = [self.optimizer_g(self.generator.parameters(), **fused)]
        if self.trains_d:
            opts.append(self.optimizer_d(self.discriminator.parameters(), **fused))
        # each scheduler steps with its optimizer; G steps every n_critic-th iteration, so its
        # k-th step is at iteration k * n_critic (the schedule runs on iterations)
        per_step = [self.n_critic if self.trains_d else 1, 1]
        scheds = [
            {
                "scheduler": self.scheduler(
                    opt, total=self.planned_iterations, iterations_per_step=k
                ),
                "interval": "step",
            }
            for opt, k in zip(opts, per_step)
        ]
        return opts, scheds

    @property
    def trains_d(self) -> bool:
        """Whether the discriminator has an optimizer (not frozen, not ``loss=none``)."""
        return self.discriminator is not None and not self.frozen_d

    def optimizer_steps_per_iteration(self) -> float:
        """Optimizer steps (Lightning's ``global_step`` ticks) per iteration (= per batch):
        one D step and 1 / n_critic G steps; 1 without a trained D."""
        return 1.0 + 1.0 / self.n_critic if self.trains_d else 1.0

    def planned_iterations(self) -> int:
        """Iterations the run will do: its batches, or ``trainer.max_steps`` in iterations.

        Under manual optimization ``global_step`` (what ``max_steps`` limits) counts every
        optimizer step, so one iteration is ``1 + 1/n_critic`` of them (1 without a trained D).
        """
        if self._total is not None:
            return self._total
        t = self.trainer
        try:
            total = float(t.estimated_stepping_batches)  # batches, capped by max_steps as steps
            max_steps = int(t.max_steps)
            if max_steps > 0:
                epochs = int(t.max_epochs) if t.max_epochs is not None else -1
                by_epochs = float(t.num_training_batches) * epochs if epochs > 0 else math.inf
                by_steps = self._iterations_for_steps(max_steps)
                total = min(by_epochs, float(by_steps))
        except Exception:  # noqa: BLE001 - outside a trainer
            return 0
        self._total = int(total) if math.isfinite(total) else 0
        return self._total

    def _iterations_for_steps(self, steps: int) -> int:
        """Iterations after which ``global_step`` reaches ``steps`` (G every n_critic-th batch)."""
        if not self.trains_d:
            return steps
        n = self.n_critic
        full, rest = divmod(steps, n + 1)  # n + 1 optimizer steps per n batches
        return full * n + rest

    # ------------------------------------------------------------------ training
    def on_train_epoch_start(self) -> None:
        frozen = self.current_epoch < self.warmup_epochs
        # apply (and log) only on a change: at the first epoch of a (resumed) run, at unfreezing
        if frozen != self._encoder_frozen and hasattr(self.generator, "set_encoder_frozen"):
            self.generator.set_encoder_frozen(frozen)
        self._encoder_frozen = frozen

    def _d_loss(self, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        real_out = _as_list(self.discriminator(real))
        fake_out = _as_list(self.discriminator(fake))
        loss = self.adv_loss.d_loss(real_out, fake_out)  # lists: mean over the heads
        if hasattr(self.adv_loss, "gradient_penalty"):
            gps = [
                self.adv_loss.gradient_penalty(critic, real, fake)
                for critic in self.discriminator.critics.values()
            ]
            loss = loss + torch.stack(gps).mean()
        return (loss, *_mean_scores(real_out, fake_out))

    def _g_adv(self, real: Tensor, fake: Tensor, need_real: bool) -> tuple[Tensor, list, list]:
        """G's adversarial loss and the critic outputs it used (real ones only when needed)."""
        real_out: list[Tensor] | None = None
        if need_real:
            with torch.no_grad():
                real_out = [r.detach() for r in _as_list(self.discriminator(real))]
        fake_out = _as_list(self.discriminator(fake))
        if self.frozen_d:  # no D step fills the RaGAN pool: the G step's scores do
            self.adv_loss.observe(real_out, fake_out)
        g_adv = self.adv_loss.g_loss(real_out, fake_out)  # lists: mean over the heads
        return g_adv, real_out or [], fake_out

    def _note_finite(self, terms: dict[str, Tensor]) -> None:
        """Record, on the device, the first iteration at which each term is non-finite."""
        if self.check_every <= 0:
            return
        # the terms are a run of _finite_terms: a slice is a view (a Python-list index would be
        # copied to the device, a blocking host-to-device copy, twice per call)
        start = self._finite_terms.index(next(iter(terms)))
        assert list(terms) == self._finite_terms[start : start + len(terms)], list(terms)
        bad = ~torch.isfinite(torch.stack([t.detach().float().reshape(()) for t in terms.values()]))
        cur = self._first_nonfinite[start : start + len(terms)]
        cur.copy_(torch.where(bad & (cur < 0), self.iteration, cur))

    def raise_if_nonfinite(self) -> None:
        """Raise :class:`NonFiniteLossError` if any term was ever non-finite (one host sync)."""
        if self.check_every <= 0:
            return
        first = self._first_nonfinite.tolist()
        bad = [(it, name) for it, name in zip(first, self._finite_terms) if it >= 0]
        if not bad:
            return
        it = min(i for i, _ in bad)
        names = ", ".join(n for i, n in bad if i == it)
        raise NonFiniteLossError(
            f"Non-finite loss at iteration {it} (found at iteration {int(self.iteration)}, epoch "
            f"{self.current_epoch}): term(s) {names}. The run stops here so no NaN weights are "
            "saved. Lower the learning rates (optim.lr_g / optim.lr_d), enable gradient clipping "
            "(optim.grad_clip=1.0), or train in bf16/fp32 instead of 16-mixed."
        )

    def on_train_start(self) -> None:
        # a host copy of the (checkpointed) device counter, read once after a resume: the step
        # then needs no device sync to decide the G step or the health check
        self._host_iteration = int(self.iteration)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.check_every > 0 and self._host_iteration % self.check_every == 0:
            self.raise_if_nonfinite()

    def on_train_end(self) -> None:
        self.raise_if_nonfinite()

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        blur, sharp = batch["blur"], batch["sharp"]
        if self.channels_last:
            blur = blur.contiguous(memory_format=torch.channels_last)
            sharp = sharp.contiguous(memory_format=torch.channels_last)
        opts = self.optimizers()
        opts = opts if isinstance(opts, list) else [opts]
        scheds = self.lr_schedulers()
        scheds = scheds if isinstance(scheds, list) else [scheds]
        opt_g, opt_d = opts[0], (opts[1] if len(opts) > 1 else None)
        # with n_critic > 1 the G step comes every n_critic-th batch, so n_critic D steps see
        # n_critic different batches (not n_critic repeats on one pair)
        g_step = opt_d is None or (self._host_iteration + 1) % self.n_critic == 0

        if g_step:
            fake = self.generator(blur)
        else:
            with torch.no_grad():
                fake = self.generator(blur)
        logs: dict[str, Tensor] = {}
        if opt_d is not None:
            logs.update(self._d_step(opt_d, scheds[1], sharp, fake.detach()))
        if g_step:
            logs.update(self._g_step(opt_g, scheds[0], sharp, fake, d_trains=opt_d is not None))
        self.iteration += 1
        self._host_iteration += 1
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=blur.shape[0])
        self._log_lr(opt_g.param_groups[0]["lr"])

    def _d_step(self, opt_d, sched_d, sharp: Tensor, fake: Tensor) -> dict[str, Tensor]:
        """One discriminator step on (sharp, detached fake); its loss terms for the logs."""
        self.toggle_optimizer(opt_d)
        d_loss, d_real, d_fake = self._d_loss(sharp, fake)
        self._note_finite({"d": d_loss})
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        opt_d.step()
        self.untoggle_optimizer(opt_d)
        sched_d.step()
        return {"train/d": d_loss.detach(), "train/d_real": d_real, "train/d_fake": d_fake}

    def _g_step(
        self, opt_g, sched_g, sharp: Tensor, fake: Tensor, d_trains: bool
    ) -> dict[str, Tensor]:
        """One generator step (content + weighted adversarial loss); its terms for the logs."""
        logs: dict[str, Tensor] = {}
        self.toggle_optimizer(opt_g)
        content = self.content_loss(fake, sharp)
        if self.discriminator is not None:
            # a frozen D has no D step: its D(real) / D(fake) for the logs come from here
            g_adv, real_out, fake_out = self._g_adv(
                sharp, fake, need_real=not d_trains or self.adv_loss.uses_real_in_g
            )
            if not d_trains:
                d_real, d_fake = _mean_scores(real_out, fake_out)
                logs.update({"train/d_real": d_real, "train/d_fake": d_fake})
            g_total = content["total"] + self.adv_weight * g_adv
            if self.grad_share_every and self._host_iteration % self.grad_share_every == 0:
                share = self._adv_grad_share(content["total"], g_adv)
                self._grad_shares.append(share)
                logs["train/adv_grad_share"] = share
        else:  # loss=none: content only
            g_adv = content["total"].new_zeros(())
            g_total = content["total"]
        self._note_finite(
            {"g_adv": g_adv, "g_pixel": content["pixel"], "g_perceptual": content["perceptual"]}
        )
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_total)
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        sched_g.step()
        if self.ema_generator is not None:
            self._update_ema()
        logs.update(
            {
                "train/g_total": g_total.detach(),
                "train/g_adv": g_adv.detach(),
                "train/g_pixel": content["pixel"].detach(),
                "train/g_perceptual": content["perceptual"].detach(),
            }
        )
        return logs

    def _adv_grad_share(self, content: Tensor, g_adv: Tensor) -> Tensor:
        """||grad_G (w L_adv)|| / ||grad_G L_content|| over G's trainable parameters."""
        params = [p for p in self.generator.parameters() if p.requires_grad]

        def norm(loss: Tensor) -> Tensor:
            grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
            norms = [torch.linalg.vector_norm(g.float()) for g in grads if g is not None]
            return torch.linalg.vector_norm(torch.stack(norms)) if norms else content.new_zeros(())

        return (norm(self.adv_weight * g_adv) / norm(content).clamp_min(1e-30)).detach()

    def _log_lr(self, lr: float) -> None:
        """The learning rate, a host float, straight to the loggers on logging steps: through
        ``self.log`` it would become a device tensor (a blocking host-to-device copy) every step."""
        every = max(1, int(self.trainer.log_every_n_steps))
        if self._host_iteration % every == 0 and self.trainer.is_global_zero:
            for logger in self.trainer.loggers:
                logger.log_metrics({"train/lr_g": float(lr)}, step=self._host_iteration)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Clip here: Lightning calls this after unscaling under 16-mixed, also in manual mode."""
        if self.grad_clip > 0:
            self.clip_gradients(
                optimizer, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm"
            )

    @torch.no_grad()
    def _update_ema(self) -> None:
        assert self.ema_generator is not None
        ema_p = list(self.ema_generator.parameters())
        cur_p = list(self.generator.parameters())
        torch._foreach_lerp_(ema_p, cur_p, 1.0 - self.ema_decay)
        ema_b = list(self.ema_generator.buffers())
        if ema_b:  # BatchNorm statistics: copied, in one op
            torch._foreach_copy_(ema_b, list(self.generator.buffers()))

    # ------------------------------------------------------------------ validation
    def eval_generator(self) -> nn.Module:
        return self.ema_generator if self.ema_generator is not None else self.generator

    def on_validation_epoch_start(self) -> None:
        self._val = {}
        for judge in self._judge:
            judge.to(self.device)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        blur, sharp = batch["blur"].float(), batch["sharp"].float()
        out = self.eval_generator()(batch["blur"]).float()
        per_image = {
            "psnr": psnr(out, sharp),
            "ssim": ssim(out, sharp),
            "psnr_input": psnr(blur, sharp),
            "ssim_input": ssim(blur, sharp),
        }
        per_image.update(sharpness_ratios(out, sharp))
        per_image.update({f"{k}_input": v for k, v in sharpness_ratios(blur, sharp).items()})
        if self.discriminator is not None:  # is the game alive: does D still rank sharp first?
            real, fake = self.discriminator(batch["sharp"]), self.discriminator(out)
            rank = per_image_scores(real) > per_image_scores(fake)
            per_image["d_rank_acc"] = rank.double()
        for judge in self._judge:
            per_image["judge_blur"] = torch.sigmoid(per_image_scores(judge(out))).double()
            per_image["judge_blur_input"] = torch.sigmoid(per_image_scores(judge(blur))).double()
        for k, v in per_image.items():
            self._val.setdefault(k, []).append(v)
        if batch_idx < self._strips and self.logger is not None:
            strip = torch.cat([blur[0], out[0], sharp[0]], dim=-1)
            strip = ((strip.clamp(-1, 1) + 1) / 2).cpu()
            exp = getattr(self.logger, "experiment", None)
            if exp is not None and hasattr(exp, "add_image"):
                exp.add_image(f"val/strip_{batch_idx}", strip, self.current_epoch)

    def on_validation_epoch_end(self) -> None:
        # every DDP rank's per-image values, each validation image once (one process: as is)
        per_image = gather_per_image(self, self._val)
        if not len(per_image.get("psnr", ())):
            return
        vals = {k: v.mean() for k, v in per_image.items()}
        logs = {f"val/{k}": v for k, v in vals.items()}
        logs |= {"hp/psnr": vals["psnr"], "hp/ssim": vals["ssim"]}
        logs["val/psnr_sd"] = per_image["psnr"].std() if len(per_image["psnr"]) > 1 else 0.0
        if self._grad_shares:  # the adversarial share of G's gradient since the last validation
            logs["val/adv_grad_share"] = torch.stack(self._grad_shares).mean()
            self._grad_shares = []
        self.log_dict(
            logs,
            on_epoch=True,
            sync_dist=True,  # the ranks hold the same values: max keeps them exact
            reduce_fx="max",
        )
