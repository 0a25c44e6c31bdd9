"""Build the Trainer for a run folder and fit a system: shared by the GAN and classifier entry points."""

from __future__ import annotations

import copy
import importlib.util
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.loggers import Logger, TensorBoardLogger

from deblur.checkpoints import (
    AtomicCheckpointIO,
    check_resume_checkpoint,
    read_classifier_checkpoint,
)
from deblur.config import to_container
from deblur.data.io import DataError
from deblur.errors import UserError
from deblur.runs import (
    IncompleteRunError,
    resolve_classifier_checkpoint,
    run_identity,
    update_record,
)
from deblur.study.layout import custom_scalars_layout
from deblur.systems.classifier import ClassifierSystem
from deblur.systems.distributed import check_launcher
from deblur.systems.gan import GANSystem

log = logging.getLogger(__name__)


class _NoLitLoggerTip(logging.Filter):
    """Drops Lightning's "try installing litlogger" tip, printed at every Trainer start."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in str(record.msg)


logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_NoLitLoggerTip())

# logger group option -> (module it needs, the pip install that provides it)
_LOGGER_PACKAGES = {"wandb": ("wandb", "wandb"), "mlflow": ("mlflow", "mlflow-skinny")}


class LoggerPackageError(UserError, ImportError):
    """A chosen logger whose package is not installed."""


def build_loggers(cfg: DictConfig, run_dir: Path) -> list[Logger]:
    """The ``logger`` group's named loggers (``logger=[tensorboard,csv]``), built by Hydra, each
    writing inside ``run_dir`` (``save_dir``; MLflow without a ``tracking_uri``: a file store in
    <run>/mlruns; a server given as ``logger.mlflow.tracking_uri=http://...`` is kept)."""
    out: list[Logger] = []
    for name, node in (cfg.get("logger") or {}).items():
        if not node:
            continue
        module, pip = _LOGGER_PACKAGES.get(str(name), (None, None))
        if module and importlib.util.find_spec(module) is None:
            raise LoggerPackageError(
                f"logger={name} needs the {module} package, which is not installed: run "
                f"`pip install {pip}`, or choose another "
                "logger, e.g. logger=[tensorboard,csv]. The run's metrics.json does not depend "
                "on the logger."
            )
        extra: dict[str, Any] = {}
        if "save_dir" in node:
            extra["save_dir"] = str(run_dir)
        if "tracking_uri" in node and not node.tracking_uri:
            extra["tracking_uri"] = (run_dir / "mlruns").resolve().as_uri()
            # MLflow >= 3.x refuses a file store unless asked for: the run folder is the point
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        out.append(instantiate(node, **extra))
    return out


def tensorboard_of(loggers: list[Logger]) -> TensorBoardLogger | None:
    """The TensorBoard logger among the chosen ones (its HPARAMS and layout), or None."""
    return next((lg for lg in loggers if isinstance(lg, TensorBoardLogger)), None)


def resolve_precision(precision: str | int | None) -> str:
    """``auto``: bf16-mixed on a GPU that supports it, fp32 elsewhere."""
    if precision in (None, "auto"):
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return "bf16-mixed"
        return "32-true"
    return str(precision)


def _scalar(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.detach().float().item()
    return v


class RunStats(Callback):
    """Validation history, best epoch and training images/s (saved in the checkpoints)."""

    def __init__(self, monitor: str, mode: str) -> None:
        self.monitor, self.mode = monitor, mode
        self.history: list[dict[str, float]] = []
        self.train_images = 0
        self.train_time = 0.0
        self._t0: float | None = None
        self.reached_end = False  # on_train_end ran in this process: the fit loop ran to its end

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": self.history,
            "train_images": self.train_images,
            "train_time": self.train_time,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = list(state.get("history", []))
        self.train_images = int(state.get("train_images", 0))
        self.train_time = float(state.get("train_time", 0.0))

    # Training time is measured between epoch start and end, with validation left out; the device
    # is synchronised only there (never per step: a sync per step caps a launch-bound GPU run).
    @staticmethod
    def _sync(pl_module) -> None:
        if torch.cuda.is_available() and pl_module.device.type == "cuda":
            torch.cuda.synchronize()

    def _resume_clock(self, pl_module) -> None:
        self._sync(pl_module)
        self._t0 = time.perf_counter()

    def _pause_clock(self, pl_module) -> None:
        if self._t0 is None:
            return
        self._sync(pl_module)
        self.train_time += time.perf_counter() - self._t0
        self._t0 = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._resume_clock(pl_module)

    def on_validation_start(self, trainer, pl_module) -> None:
        self._pause_clock(pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._pause_clock(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        first = next(iter(batch.values())) if isinstance(batch, dict) else batch[0]
        self.train_images += int(first.shape[0])

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._resume_clock(pl_module)  # validation inside a training epoch: training goes on
        if trainer.sanity_checking:
            return
        metrics = {
            k: round(_scalar(v), 6)
            for k, v in trainer.callback_metrics.items()
            if k.startswith("val/")
        }
        if metrics:
            metrics["epoch"] = trainer.current_epoch
            metrics["iteration"] = int(getattr(pl_module, "_host_iteration", trainer.global_step))
            if trainer.state.fn != "fit":  # the whole split, after a fit on a subset
                metrics["full_set"] = 1
            self.history.append(metrics)

    def on_train_end(self, trainer, pl_module) -> None:
        self.reached_end = True

    def best(self) -> dict[str, float]:
        scored = [h for h in self.history if self.monitor in h and "full_set" not in h]
        if not scored:
            return {}
        pick = max if self.mode == "max" else min
        return dict(pick(scored, key=lambda h: h[self.monitor]))

    def images_per_s(self) -> float | None:
        return round(self.train_images / self.train_time, 3) if self.train_time > 0 else None


class IdentityStamp(Callback):
    """Stores the run identity in every checkpoint (``deblur_identity``): a resume compares it."""

    def __init__(self, identity: dict[str, Any] | None) -> None:
        self.identity = identity

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        if self.identity is not None:
            checkpoint["deblur_identity"] = self.identity


def build_system(cfg: DictConfig | dict[str, Any]) -> pl.LightningModule:
    """The run config's ``system`` node, built by Hydra, with the resolved config saved in it
    (``hyper_parameters["cfg"]``: every tool rebuilds the networks from a checkpoint alone).

    A loss whose class says ``uses_discriminator = False`` (``loss=none``) gets no
    discriminator: ``system.discriminator`` (``${disc.net}``) is not built.
    """
    plain = to_container(cfg)
    c = OmegaConf.create(plain)
    skip = {}
    if "discriminator" in c.system and not get_class(c.loss._target_).uses_discriminator:
        skip["discriminator"] = None
    # _partial_: the nested nodes are built now; the plain config goes in as it is (a config
    # kwarg would be merged into the node and its `_target_`s instantiated)
    return instantiate(c.system, _partial_=True, **skip)(cfg=plain)


def build_trainer(
    cfg: DictConfig,
    run_dir: Path,
    extra_callbacks: list[Callback] | None = None,
    identity: dict[str, Any] | None = None,
) -> tuple[pl.Trainer, list[Logger], RunStats]:
    """The ``trainer`` node, built by Hydra, writing everything under ``run_dir``: the
    ``logger`` group's loggers (:func:`build_loggers`; default tb/), the ``callbacks``
    (``checkpoint``: checkpoints/best.ckpt; ``last``:
    checkpoints/last.ckpt).

    Only run-time values are added here: the run folder, ``trainer.precision=auto`` and
    ``deterministic`` on CUDA resolved, :class:`RunStats` (metrics.json), the run identity
    stamp, and :class:`deblur.checkpoints.AtomicCheckpointIO` (temporary file in the same
    folder, fsync, rename).
    """
    t = cfg.trainer
    loggers = build_loggers(cfg, run_dir)
    ckpt_dir = run_dir / "checkpoints"
    # a callback node with a `dirpath: null` key writes into the run folder's checkpoints/
    built = {
        k: instantiate(v, **({"dirpath": str(ckpt_dir)} if "dirpath" in v else {}))
        for k, v in cfg.callbacks.items()
        if v
    }
    ckpt: ModelCheckpoint = built.pop("checkpoint")
    others = list(built.values())
    stats = RunStats(ckpt.monitor, ckpt.mode)
    deterministic = t.deterministic
    if deterministic is True and torch.cuda.is_available() and t.accelerator != "cpu":
        deterministic = "warn"  # ReflectionPad2d backward has no deterministic CUDA kernel
    every = cfg.val_every_iterations  # validation by iterations (batches), across epochs
    schedule = {"val_check_interval": every, "check_val_every_n_epoch": None} if every else {}
    trainer: pl.Trainer = instantiate(
        t,
        default_root_dir=str(run_dir),
        logger=loggers or False,
        callbacks=[ckpt, *others, stats, IdentityStamp(identity), *(extra_callbacks or [])],
        plugins=[AtomicCheckpointIO()],
        precision=resolve_precision(t.precision),
        deterministic=deterministic,
        **schedule,
    )
    check_launcher(trainer)  # spawn strategies / a local multirun over several processes
    return trainer, loggers, stats


def build_datamodule(cfg: DictConfig, task: str) -> pl.LightningDataModule:
    """The data group's DataModule; a missing ``data.root`` gets a message naming the fix."""
    root = cfg.data.get("root", None) if OmegaConf.is_missing(cfg.data, "root") is False else "???"
    if root == "???":
        name = cfg.data.get("name", "?")
        raise DataError(
            f"data={name} needs the dataset folder: add data.root=/path/to/{name} to the command "
            f"(expected layout in conf/data/{name}.yaml and the README's Datasets table), or use "
            "data=embedded, the built-in dataset that needs no download."
        )
    accelerator = str(cfg.trainer.accelerator)
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return instantiate(cfg.data, task=task, on_gpu=on_gpu, _recursive_=False)


def _loud_random_weights_banner(what: str) -> str:
    msg = (
        f"pretrained=false: {what} use RANDOM weights, not ImageNet ones. Results of this run are "
        "not comparable with the thesis; use it for tests and the offline demo only."
    )
    bar = "!" * 78
    log.warning("\n%s\n%s\n%s", bar, msg, bar)
    print(f"[deblur] WARNING: {msg}", flush=True)
    return msg


def _log_tb_setup(
    loggers: list[Logger], params: dict[str, Any], metrics: dict[str, float], kind: str
) -> None:
    """HPARAMS (with placeholder metrics that validation then logs) and the custom-scalars
    layout on the TensorBoard logger; the other loggers get the hyperparameters only."""
    logger = tensorboard_of(loggers)
    for other in loggers:
        if other is not logger:
            other.log_hyperparams(params)
    if logger is None:
        return
    logger.log_hyperparams(params, metrics)
    try:
        logger.experiment.add_custom_scalars(custom_scalars_layout(kind))
    except (ImportError, TypeError) as err:  # pragma: no cover - layout is optional sugar
        log.info("No custom-scalars layout: %s", err)


def _hparams(cfg: DictConfig, record: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {f"choice/{k}": v for k, v in record.get("choices", {}).items()}
    out.update(
        {
            "seed": int(cfg.seed),
            "pretrained_weights": bool(cfg.pretrained),
            "crop_size": int(cfg.data.crop_size or 0),
            "batch_size": int(cfg.data.batch_size),
        }
    )
    return out


def _start(cfg: DictConfig, record: dict[str, Any], random_what: str) -> DictConfig:
    """Seed, take a mutable copy of the config, record weights/precision (and warn on random)."""
    pl.seed_everything(int(cfg.seed), workers=True)
    cfg = copy.deepcopy(cfg)  # interpolations kept: the system node follows disc.checkpoint=auto
    OmegaConf.set_struct(cfg, False)
    record.update(
        {
            "pretrained_weights": bool(cfg.pretrained),
            "precision": resolve_precision(cfg.trainer.precision),
        }
    )
    if not cfg.pretrained:
        record["warning"] = _loud_random_weights_banner(random_what)
    return cfg


_LIGHTNING_EVAL_WARNING = r"Found \d+ module\(s\) in eval mode at the start of training"


def _eval_modules_are_by_design(system: pl.LightningModule) -> bool:
    """True when every submodule in eval mode is one the system keeps there on purpose.

    Lightning warns about any module in eval mode when training starts; for the fixed VGG19, a
    frozen D and the EMA generator that warning is noise, so it is replaced by one log line.
    Any other module in eval mode keeps Lightning's warning.
    """
    by_design = getattr(system, "eval_by_design", dict)()
    in_eval = [n for n, m in system.named_modules() if n and not m.training]

    def under(name: str, prefix: str) -> bool:
        return name == prefix or name.startswith(prefix + ".")

    if not in_eval or not all(any(under(n, p) for p in by_design) for n in in_eval):
        return False
    used = [why for p, why in by_design.items() if any(under(n, p) for n in in_eval)]
    log.info("In eval mode during training, by design: %s.", ", ".join(used))
    return True


# the validation values a GAN run's metrics.json keeps as "final" / "best" (those logged)
GAN_RESULT_KEYS = (
    "val/psnr",
    "val/ssim",
    "val/psnr_input",
    "val/psnr_sd",
    "val/grad_energy",
    "val/grad_energy_input",
    "val/high_band",
    "val/high_band_input",
    "val/d_rank_acc",
    "val/judge_blur",
    "val/judge_blur_input",
    "val/adv_grad_share",
    "epoch",
)


def _fit(
    cfg: DictConfig,
    run_dir: Path,
    system: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    *,
    hparams: tuple[dict[str, Any], dict[str, float], str],
    keys: tuple[str, ...],
    extra_callbacks: list[Callback] | None,
    record: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``system`` in ``run_dir``: trainer, TensorBoard setup, fit, the common results.

    ``ckpt_path`` must be a full checkpoint of the same run identity. The run counts as done
    only when the fit loop ran to its end here and best.ckpt and last.ckpt exist.
    """
    identity = (record or {}).get("identity")
    if cfg.ckpt_path:
        check_resume_checkpoint(cfg.ckpt_path, str(cfg.task), identity, identity_of=run_identity)
    trainer, loggers, stats = build_trainer(cfg, run_dir, extra_callbacks, identity=identity)
    _log_tb_setup(loggers, *hparams)
    with warnings.catch_warnings():
        if _eval_modules_are_by_design(system):
            warnings.filterwarnings("ignore", message=_LIGHTNING_EVAL_WARNING)
        trainer.fit(system, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    _check_complete(cfg, run_dir, trainer, stats)
    if _needs_final_validation(cfg, stats, system):
        trainer.validate(system, datamodule=datamodule, verbose=False)
    history = stats.history
    last = history[-1] if history else {}
    status = {}
    if not _planned_end_reached(trainer):  # e.g. a callback stopped it: continue with ckpt_path
        status = {
            "status": "stopped",
            "stopped": f"before its planned length, at epoch {trainer.current_epoch} "
            f"(max_epochs={trainer.max_epochs}, max_steps={trainer.max_steps})",
        }
    return {
        **status,
        "final": {k: v for k, v in last.items() if k in keys},
        "best": {k: v for k, v in stats.best().items() if k in keys},
        "history": history,
        "epochs": trainer.current_epoch,
        "images_per_s": stats.images_per_s(),
        "device": str(trainer.strategy.root_device),
        "checkpoints": {
            "best": str(run_dir / "checkpoints" / "best.ckpt"),
            "last": str(run_dir / "checkpoints" / "last.ckpt"),
        },
    }


def _needs_final_validation(cfg: DictConfig, stats: RunStats, system: Any) -> bool:
    """The final weights were validated on a subset only (``data.val_pairs_during_training``),
    or not at all (``val_every_iterations`` not a divisor of the run's length): the whole
    validation split, once more, for metrics.json's ``final``."""
    if cfg.data.val_pairs_during_training:
        return True
    last = stats.history[-1] if stats.history else {}
    now = int(getattr(system, "_host_iteration", system.trainer.global_step))
    return bool(cfg.val_every_iterations) and last.get("iteration") != now


def _planned_end_reached(trainer: pl.Trainer) -> bool:
    """True when training stopped at one of its limits (max_epochs, max_steps, max_time), not
    because something asked it to stop early."""
    from pytorch_lightning.callbacks import Timer

    if trainer.max_steps is not None and trainer.max_steps > 0:
        if trainer.global_step >= trainer.max_steps:
            return True
    if trainer.max_epochs is not None and trainer.max_epochs >= 0:
        if trainer.current_epoch >= trainer.max_epochs:
            return True
    timers = [c for c in trainer.callbacks if isinstance(c, Timer)]
    return any((t.time_remaining() or 0) <= 0 for t in timers)


def _check_complete(cfg: DictConfig, run_dir: Path, trainer: pl.Trainer, stats: RunStats) -> None:
    """Refuse to call a run finished that did not train to its end or has no checkpoints."""
    if trainer.interrupted:
        raise IncompleteRunError(f"Training of {run_dir} was interrupted; run the command again.")
    if not stats.reached_end:
        raise IncompleteRunError(
            f"Nothing was trained in {run_dir}: ckpt_path={cfg.ckpt_path} is the "
            f"checkpoint of a run that had already reached its planned length (epoch "
            f"{trainer.current_epoch}, max_epochs={cfg.trainer.max_epochs}, "
            f"max_steps={cfg.trainer.max_steps}), so this run has no results of its "
            "own. Its results are in that run's metrics.json; to train this configuration, drop "
            "ckpt_path."
        )
    ckpts = run_dir / "checkpoints"
    missing = [n for n in ("best.ckpt", "last.ckpt") if not (ckpts / n).is_file()]
    if missing:
        raise IncompleteRunError(
            f"Training of {run_dir} ended without writing {' and '.join(missing)} in {ckpts}: "
            "best.ckpt is written at a validation, so no validation ran. Make the run validate "
            "at least once (trainer.check_val_every_n_epoch <= trainer.max_epochs, "
            "val_every_iterations <= the run's iterations, "
            "trainer.limit_val_batches > 0)."
        )


def fit_gan(
    cfg: DictConfig,
    run_dir: Path,
    record: dict[str, Any],
    extra_callbacks: list[Callback] | None = None,
) -> dict[str, Any]:
    """Train the GAN of one study cell in ``run_dir``; return what goes into metrics.json."""
    cfg = _start(cfg, record, "the generator encoder, VGG19 and timm critics")
    ckpt_spec = cfg.disc.checkpoint
    if isinstance(ckpt_spec, str) and ckpt_spec.startswith("auto"):
        cfg.disc.checkpoint = str(
            resolve_classifier_checkpoint(ckpt_spec, str(cfg.backbone.name), cfg.runs_dir, cfg.seed)
        )
    if cfg.disc.checkpoint:
        read_classifier_checkpoint(cfg.disc.checkpoint)  # one paragraph for any other file
    record.update(
        {
            "disc_pretrained": bool(cfg.disc.checkpoint),
            "disc_frozen": bool(cfg.disc.frozen),
            "disc_checkpoint": cfg.disc.checkpoint,
        }
    )
    update_record(run_dir, record)

    datamodule = build_datamodule(cfg, "paired")
    datamodule.setup("fit")  # the data checks (files, sizes, a validation split) before any network
    system: GANSystem = build_system(cfg)
    if system.load_report:
        record["disc_load_report"] = system.load_report
    hp = _hparams(cfg, record)
    hp.update(
        {
            "disc_pretrained": record["disc_pretrained"],
            "disc_frozen": record["disc_frozen"],
            "adv_weight": float(cfg.model.adv_weight),
            "lr_g": float(cfg.optim.lr_g),
            "lr_d": float(cfg.optim.lr_d),
        }
    )
    results = _fit(
        cfg,
        run_dir,
        system,
        datamodule,
        hparams=(hp, {"hp/psnr": 0.0, "hp/ssim": 0.0}, "gan"),
        keys=GAN_RESULT_KEYS,
        extra_callbacks=extra_callbacks,
        record=record,
    )
    last = results["history"][-1] if results["history"] else {}
    # the blurred inputs' own values (the table's input row): what deblurring starts from
    results["input"] = {
        key: last.get(f"{key}_input")
        for key in ("val/psnr", "val/ssim", "val/grad_energy", "val/high_band", "val/judge_blur")
        if f"{key}_input" in last or key in ("val/psnr", "val/ssim")
    }
    results["iterations"] = int(system.iteration)
    results["planned_iterations"] = system.planned_iterations()  # the lr schedule's length
    return results


def fit_classifier(
    cfg: DictConfig,
    run_dir: Path,
    record: dict[str, Any],
    extra_callbacks: list[Callback] | None = None,
) -> dict[str, Any]:
    """Train the blur classifier in ``run_dir``; return what goes into metrics.json."""
    cfg = _start(cfg, record, "the classifier backbone")
    update_record(run_dir, record)
    datamodule = build_datamodule(cfg, "classify")
    datamodule.setup("fit")  # the data checks before any network is built
    system: ClassifierSystem = build_system(cfg)
    hp = _hparams(cfg, record)
    hp["lr"] = float(cfg.optim.lr)
    return _fit(
        cfg,
        run_dir,
        system,
        datamodule,
        hparams=(hp, {"hp/val_loss": 0.0, "hp/val_acc": 0.0}, "classifier"),
        keys=("val/loss", "val/acc", "epoch"),
        extra_callbacks=extra_callbacks,
        record=record,
    )
