"""The GAN LightningModule (manual optimization): one iteration = one batch, a D step (unless D is
frozen or ``loss=none``) and every ``n_critic``-th batch a G step; schedules count iterations."""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from deblur.config.checks import ConfigValueError, check_disc_switches
from deblur.eval.metrics import psnr, sharpness_ratios, ssim
from deblur.losses.content import ContentLoss
from deblur.models.critics import Discriminator, load_classifier_weights
from deblur.models.load import load_classifier
from deblur.systems.distributed import gather_per_image

#: model.compile_mode values (torch.compile's modes; None = its default)
COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
#: the loss terms the NaN watch checks, in the order of its device buffer
WATCHED_TERMS = ("d", "g_adv", "g_pixel", "g_perceptual")


class NonFiniteLossError(FloatingPointError):
    """A loss term or gradient became NaN/inf: the run stops and says where."""


def _as_list(x: Any) -> list:
    return list(x) if isinstance(x, list | tuple) else [x]


def _mean_scores(*sides: list[Tensor]) -> tuple[Tensor, ...]:
    """Mean raw critic output per side (real, fake), averaged over the heads (for the logs)."""
    return tuple(torch.stack([h.detach().float().mean() for h in out]).mean() for out in sides)


def per_image_scores(critic_out: Tensor | list[Tensor]) -> Tensor:
    """One realness score per image: each head's logits averaged over space, then over heads."""
    return torch.stack([h.float().flatten(1).mean(dim=1) for h in _as_list(critic_out)]).mean(0)


def rng_state() -> dict[str, Any]:
    """Global RNG states as plain containers (loadable with ``weights_only=True``)."""
    kind, keys, *rest = np.random.get_state()
    version, inner, gauss = random.getstate()
    state = {"torch": torch.get_rng_state(), "numpy": [kind, keys.tolist(), *rest]}
    state["python"] = [version, list(inner), gauss]
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved (exact resume)."""
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    version, inner, gauss = state["python"]
    random.setstate((version, tuple(inner), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def linear_decay_factor(iteration: int, total: int, decay_start: float, min_factor: float) -> float:
    """DeblurGAN-v2's lr factor: 1 until ``decay_start * total``, then linear to ``min_factor``."""
    start = int(decay_start * total)
    if total <= 0 or iteration < start:
        return 1.0
    frac = min((iteration - start) / max(total - start, 1), 1.0)
    return max(1.0 - frac * (1.0 - min_factor), min_factor)


class LinearDecay(torch.optim.lr_scheduler.LambdaLR):
    """:func:`linear_decay_factor` to ``min_lr`` over ``total()`` (the run's planned iterations,
    known once the Trainer is set up) for an optimizer stepping every ``iterations_per_step``."""

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
    """Generator + discriminator + losses of one cell of the study, built from the ``system``
    node; ``cfg`` (the resolved run config, ``hyper_parameters["cfg"]``) rebuilds the networks."""

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
        self.generator, self.adv_loss, self.content_loss = generator, adv_loss, content_loss
        self.optimizer_g, self.optimizer_d, self.scheduler = optimizer_g, optimizer_d, scheduler
        self.adversarial = bool(adv_loss.uses_discriminator)
        self.adv_weight = float(adv_weight) if self.adversarial else 0.0
        self._set_discriminator(discriminator, disc_checkpoint, disc_frozen, disc_calibrate)
        self.n_critic, self.ema_decay = int(adv_loss.n_critic), float(ema_decay)
        ema = copy.deepcopy(generator).requires_grad_(False).eval() if ema_decay > 0 else None
        self.ema_generator: nn.Module | None = ema
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))
        self._host_iteration = 0  # = int(self.iteration), kept on the host (on_train_start)
        if compile:
            self._compile_in_place(compile_mode)
        self.warmup_epochs, self.grad_clip = int(warmup_epochs), float(grad_clip)
        self.fused, self.channels_last = bool(fused), bool(channels_last)
        if self.channels_last:  # weights with the inputs: every conv then runs NHWC
            self.to(memory_format=torch.channels_last)
        self._set_watches(health_check_every, val_image_strips, grad_share_every, judge_checkpoint)
        self._encoder_frozen: bool | None = None  # warm-up state last applied to G
        self._total: int | None = None  # iterations of the whole run (the schedule's length)

    def _set_watches(self, check_every: int, strips: int, share_every: int, judge: str | None):
        """What is measured beside the losses: NaNs, strips, the gradient share, the judge."""
        # the NaN watch: per WATCHED_TERMS the first non-finite iteration (-1: never), on device
        self.check_every, self._strips = int(check_every), int(strips)
        self.register_buffer("_first_nonfinite", torch.full((4,), -1), persistent=False)
        # every N-th G step: ||grad_G w L_adv|| / ||grad_G L_content|| (two extra backward passes)
        self.grad_share_every = int(share_every)
        self._grad_shares: list[Tensor] = []
        # a held-out blur classifier judging G's validation outputs; in a list: no submodule
        self._judge = [load_classifier(judge, key="model.judge_checkpoint")] if judge else []

    def _set_discriminator(
        self, disc: Discriminator | None, checkpoint: str | None, frozen: bool, calibrate: bool
    ) -> None:
        """D (none under ``loss=none``), loaded from a classifier, calibrated, frozen if asked."""
        self.frozen_d = bool(frozen)
        self.load_report: dict[str, Any] | None = None
        self.discriminator = disc if self.adversarial else None
        if self.adversarial and disc is None:
            raise ValueError(f"{type(self.adv_loss).__name__} needs a discriminator; none given.")
        check_disc_switches(
            adversarial=self.adversarial,
            checkpoint=checkpoint,
            frozen=self.frozen_d,
            heads=getattr(self.discriminator, "head_names", []),
            kind=getattr(self.discriminator, "kind", "?"),
        )
        if checkpoint:  # with frozen: refused by check_disc_switches unless there is a D
            self.load_report = load_classifier_weights(
                self.discriminator, str(checkpoint), calibrate=self.adv_loss if calibrate else None
            )
        if self.frozen_d:
            self.discriminator.requires_grad_(False).eval()

    def _compile_in_place(self, mode: str | None) -> None:
        """torch.compile the networks in place (compiling the LightningModule would break
        toggle_optimizer); state_dict keys stay the same."""
        if mode not in COMPILE_MODES:
            raise ConfigValueError(
                f"model.compile_mode={mode} is not a torch.compile mode. Fix: one of "
                f"{', '.join(str(m).lower() for m in COMPILE_MODES)}."
            )
        for net in (self.generator, self.discriminator, self.content_loss.perceptual):
            if net is not None:
                net.compile(mode=mode)

    # ------------------------------------------------------------------ checkpoints
    _FIXED_PREFIX = "content_loss."  # frozen VGG19: rebuilt from its weights, not stored per run

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.raise_if_nonfinite()  # never save NaN weights
        sd = checkpoint["state_dict"]
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
        fixed = {k: v for k, v in super().state_dict().items() if k.startswith(self._FIXED_PREFIX)}
        return super().load_state_dict(fixed | dict(state_dict), strict=strict, assign=assign)

    # ------------------------------------------------------------------ modes
    def train(self, mode: bool = True) -> GANSystem:
        super().train(mode)
        for name in self.eval_by_design():  # e.g. a frozen D keeps its BatchNorm statistics
            getattr(self, name).eval()
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
    @property
    def trains_d(self) -> bool:
        """Whether the discriminator has an optimizer (not frozen, not ``loss=none``)."""
        return self.discriminator is not None and not self.frozen_d

    def configure_optimizers(self):
        cuda_fused = self.fused and torch.cuda.is_available()  # fused kernels on CUDA only
        fused = {"fused": True, "foreach": False} if cuda_fused else {}
        opts = [self.optimizer_g(self.generator.parameters(), **fused)]
        if self.trains_d:
            opts.append(self.optimizer_d(self.discriminator.parameters(), **fused))
        # G steps every n_critic-th iteration: its k-th step is at iteration k * n_critic
        per_step = [self.n_critic if self.trains_d else 1, 1]
        return opts, [
            self.scheduler(opt, total=self.planned_iterations, iterations_per_step=k)
            for opt, k in zip(opts, per_step)
        ]

    def planned_iterations(self) -> int:
        """Iterations the run will do: its batches, capped by ``trainer.max_steps`` in
        iterations (``n_critic + 1`` optimizer steps per ``n_critic`` with a trained D)."""
        if self._total is not None:
            return self._total
        t = self.trainer
        try:
            total = float(t.estimated_stepping_batches)  # batches, capped by max_steps as steps
            if int(t.max_steps) > 0:
                epochs = int(t.max_epochs) if t.max_epochs is not None else -1
                by_epochs = float(t.num_training_batches) * epochs if epochs > 0 else math.inf
                full, rest = divmod(int(t.max_steps), self.n_critic + 1)
                by_steps = full * self.n_critic + rest if self.trains_d else int(t.max_steps)
                total = min(by_epochs, float(by_steps))
        except Exception:  # noqa: BLE001 - outside a trainer
            return 0
        self._total = int(total) if math.isfinite(total) else 0
        return self._total

    # ------------------------------------------------------------------ the NaN watch
    def _note_finite(self, first: int, *terms: Tensor) -> None:
        """Record on the device the first non-finite iteration of ``WATCHED_TERMS[first:]``."""
        if self.check_every > 0:
            bad = ~torch.isfinite(torch.stack([t.detach().float().reshape(()) for t in terms]))
            # a slice is a view (a Python-list index would be a blocking host-to-device copy)
            cur = self._first_nonfinite[first : first + len(terms)]
            cur.copy_(torch.where(bad & (cur < 0), self.iteration, cur))

    def raise_if_nonfinite(self) -> None:
        """Raise :class:`NonFiniteLossError` if any term was ever non-finite (one host sync)."""
        first = self._first_nonfinite.tolist() if self.check_every > 0 else []
        bad = [(i, name) for i, name in zip(first, WATCHED_TERMS) if i >= 0]
        if bad:
            it = min(bad)[0]
            raise NonFiniteLossError(
                f"Non-finite loss at iteration {it} (found at iteration {int(self.iteration)}, "
                f"epoch {self.current_epoch}): term(s) {', '.join(n for i, n in bad if i == it)}. "
                "The run stops here so no NaN weights are saved. Lower the learning rates "
                "(optim.lr_g / optim.lr_d), enable gradient clipping (optim.grad_clip=1.0), or "
                "train in bf16/fp32 instead of 16-mixed."
            )

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.check_every > 0 and self._host_iteration % self.check_every == 0:
            self.raise_if_nonfinite()

    def on_train_end(self) -> None:
        self.raise_if_nonfinite()

    # ------------------------------------------------------------------ training
    def on_train_start(self) -> None:
        # the (checkpointed) device counter read once after a resume: no sync per step
        self._host_iteration = int(self.iteration)

    def on_train_epoch_start(self) -> None:
        frozen = self.current_epoch < self.warmup_epochs
        # apply (and log) only on a change: at the first epoch of a (resumed) run, at unfreezing
        if frozen != self._encoder_frozen and hasattr(self.generator, "set_encoder_frozen"):
            self.generator.set_encoder_frozen(frozen)
        self._encoder_frozen = frozen

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        blur, sharp = batch["blur"], batch["sharp"]
        if self.channels_last:
            blur, sharp = (t.contiguous(memory_format=torch.channels_last) for t in (blur, sharp))
        opt_g, *opt_d = _as_list(self.optimizers())
        sched_g, *sched_d = _as_list(self.lr_schedulers())
        g_step = not opt_d or (self._host_iteration + 1) % self.n_critic == 0
        with torch.set_grad_enabled(g_step):
            fake = self.generator(blur)
        logs: dict[str, Tensor] = {}
        if opt_d:
            logs.update(self._d_step(opt_d[0], sched_d[0], sharp, fake.detach()))
        if g_step:
            logs.update(self._g_step(opt_g, sched_g, sharp, fake, d_trains=bool(opt_d)))
        self.iteration += 1
        self._host_iteration += 1
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=blur.shape[0])
        self._log_lr(opt_g.param_groups[0]["lr"])

    def _d_step(self, opt_d, sched_d, sharp: Tensor, fake: Tensor) -> dict[str, Tensor]:
        """One discriminator step on (sharp, detached fake); its loss terms for the logs."""
        with self.toggled_optimizer(opt_d):
            real_out, fake_out = self.discriminator(sharp), self.discriminator(fake)
            d_loss = self.adv_loss.d_loss(real_out, fake_out)  # lists: mean over the heads
            if hasattr(self.adv_loss, "gradient_penalty"):
                critics = self.discriminator.critics.values()
                gps = [self.adv_loss.gradient_penalty(c, sharp, fake) for c in critics]
                d_loss = d_loss + torch.stack(gps).mean()
            self._note_finite(0, d_loss)
            d_real, d_fake = _mean_scores(real_out, fake_out)
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            opt_d.step()
        sched_d.step()
        return {"train/d": d_loss.detach(), "train/d_real": d_real, "train/d_fake": d_fake}

    def _g_step(self, opt_g, sched_g, sharp: Tensor, fake: Tensor, d_trains: bool) -> dict:
        """One generator step (content + weighted adversarial loss); its terms for the logs."""
        logs: dict[str, Tensor] = {}
        with self.toggled_optimizer(opt_g):
            content = self.content_loss(fake, sharp)
            if self.discriminator is not None:
                real_out = None  # D(y): read by a relativistic loss, logged for a frozen D
                if not d_trains or self.adv_loss.uses_real_in_g:
                    with torch.no_grad():
                        real_out = [r.detach() for r in self.discriminator(sharp)]
                fake_out = self.discriminator(fake)
                if self.frozen_d:  # no D step fills the RaGAN pool: the G step's scores do
                    self.adv_loss.observe(real_out, fake_out)
                g_adv = self.adv_loss.g_loss(real_out, fake_out)  # lists: mean over the heads
                if not d_trains:  # a frozen D takes no D step: its scores for the logs
                    logs["train/d_real"], logs["train/d_fake"] = _mean_scores(real_out, fake_out)
                g_total = content["total"] + self.adv_weight * g_adv
                g_steps = self._host_iteration // (self.n_critic if d_trains else 1)  # before this
                if self.grad_share_every and g_steps % self.grad_share_every == 0:
                    logs["train/adv_grad_share"] = self._adv_grad_share(content["total"], g_adv)
                    self._grad_shares.append(logs["train/adv_grad_share"])
            else:  # loss=none: content only
                g_adv, g_total = content["total"].new_zeros(()), content["total"]
            self._note_finite(1, g_adv, content["pixel"], content["perceptual"])
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(g_total)
            opt_g.step()
        sched_g.step()
        if self.ema_generator is not None:
            self._update_ema()
        terms = {"total": g_total, "adv": g_adv, **{k: content[k] for k in ("pixel", "perceptual")}}
        return logs | {f"train/g_{k}": v.detach() for k, v in terms.items()}

    def _adv_grad_share(self, content: Tensor, g_adv: Tensor) -> Tensor:
        """||grad_G (w L_adv)|| / ||grad_G L_content|| over G's trainable parameters."""
        params = [p for p in self.generator.parameters() if p.requires_grad]

        def norm(loss: Tensor) -> Tensor:
            grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
            norms = [torch.linalg.vector_norm(g.float()) for g in grads if g is not None]
            return torch.linalg.vector_norm(torch.stack(norms)) if norms else content.new_zeros(())

        return (norm(self.adv_weight * g_adv) / norm(content).clamp_min(1e-30)).detach()

    def _log_lr(self, lr: float) -> None:
        """The lr, a host float, straight to the loggers (``self.log`` would copy it to GPU)."""
        every = max(1, int(self.trainer.log_every_n_steps))
        if self._host_iteration % every == 0 and self.trainer.is_global_zero:
            for logger in self.trainer.loggers:
                logger.log_metrics({"train/lr_g": float(lr)}, step=self._host_iteration)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Clip here: Lightning calls this after unscaling under 16-mixed, also in manual mode."""
        if self.grad_clip > 0:
            self.clip_gradients(optimizer, self.grad_clip, gradient_clip_algorithm="norm")

    @torch.no_grad()
    def _update_ema(self) -> None:
        """G's parameters into the EMA in one foreach op, its buffers (BN statistics) in one."""
        ema, gen = self.ema_generator, self.generator
        torch._foreach_lerp_(list(ema.parameters()), list(gen.parameters()), 1.0 - self.ema_decay)
        if buffers := list(ema.buffers()):
            torch._foreach_copy_(buffers, list(gen.buffers()))

    # ------------------------------------------------------------------ validation
    def eval_generator(self) -> nn.Module:
        return self.ema_generator if self.ema_generator is not None else self.generator

    def on_validation_epoch_start(self) -> None:
        self._val: dict[str, list[Tensor]] = {}
        for judge in self._judge:
            judge.to(self.device)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        blur, sharp = batch["blur"].float(), batch["sharp"].float()
        out = self.eval_generator()(batch["blur"]).float()
        per_image: dict[str, Tensor] = {}
        for end, image in (("", out), ("_input", blur)):
            per_image |= {f"psnr{end}": psnr(image, sharp), f"ssim{end}": ssim(image, sharp)}
            per_image |= {f"{k}{end}": v for k, v in sharpness_ratios(image, sharp).items()}
            for judge in self._judge:  # the held-out classifier's blur probability
                judged = torch.sigmoid(per_image_scores(judge(image)))
                per_image[f"judge_blur{end}"] = judged.double()
        if self.discriminator is not None:  # is the game alive: does D still rank sharp first?
            real, fake = self.discriminator(batch["sharp"]), self.discriminator(out)
            per_image["d_rank_acc"] = (per_image_scores(real) > per_image_scores(fake)).double()
        for k, v in per_image.items():
            self._val.setdefault(k, []).append(v)
        exp = getattr(self.logger, "experiment", None) if batch_idx < self._strips else None
        if hasattr(exp, "add_image"):
            strip = (torch.cat([blur[0], out[0], sharp[0]], dim=-1).clamp(-1, 1) + 1) / 2
            exp.add_image(f"val/strip_{batch_idx}", strip.cpu(), self.current_epoch)

    def on_validation_epoch_end(self) -> None:
        # every DDP rank's per-image values, each validation image once (one process: as is)
        per_image = gather_per_image(self, self._val)
        if not len(per_image.get("psnr", ())):
            return
        logs = {f"val/{k}": v.mean() for k, v in per_image.items()}
        logs |= {"hp/psnr": logs["val/psnr"], "hp/ssim": logs["val/ssim"]}
        logs["val/psnr_sd"] = per_image["psnr"].std() if len(per_image["psnr"]) > 1 else 0.0
        if self._grad_shares:  # the adversarial share of G's gradient since the last validation
            logs["val/adv_grad_share"] = torch.stack(self._grad_shares).mean()
            self._grad_shares = []
        # the ranks hold the same values: max keeps them exact
        self.log_dict(logs, on_epoch=True, sync_dist=True, reduce_fx="max")
