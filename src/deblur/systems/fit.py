"""Build the Trainer for a run folder and fit a system: one path for the GAN and the classifier."""

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
from pytorch_lightning.callbacks import Callback, ModelCheckpoint, Timer
from pytorch_lightning.loggers import Logger, TensorBoardLogger

from deblur.checkpoints import AtomicCheckpointIO
from deblur.config import to_container
from deblur.data.io import DataError
from deblur.errors import UserError
from deblur.runs import IncompleteRunError, RunRecord, update_record
from deblur.systems.distributed import check_launcher
from deblur.systems.layout import custom_scalars_layout

log = logging.getLogger(__name__)
# Lightning's "try installing litlogger" tip, printed at every Trainer start
logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(
    lambda record: "litlogger" not in str(record.msg)
)

# logger group option -> (module it needs, the pip install that provides it)
_LOGGER_PACKAGES = {"wandb": ("wandb", "wandb"), "mlflow": ("mlflow", "mlflow-skinny")}


class LoggerPackageError(UserError, ImportError):
    """A chosen logger whose package is not installed."""


def build_loggers(cfg: DictConfig, run_dir: Path) -> list[Logger]:
    """The ``logger`` group's loggers, each writing inside ``run_dir`` (MLflow without a
    ``tracking_uri``: a file store in <run>/mlruns; a given server is kept)."""
    out: list[Logger] = []
    for name, node in (cfg.get("logger") or {}).items():
        if not node:
            continue
        module, pip = _LOGGER_PACKAGES.get(str(name), (None, None))
        if module and importlib.util.find_spec(module) is None:
            raise LoggerPackageError(
                f"logger={name} needs the {module} package, which is not installed: run "
                f"`pip install {pip}`, or choose another logger, e.g. logger=[tensorboard,csv]. "
                "The run's metrics.json does not depend on the logger."
            )
        extra: dict[str, Any] = {"save_dir": str(run_dir)} if "save_dir" in node else {}
        if "tracking_uri" in node and not node.tracking_uri:
            extra["tracking_uri"] = (run_dir / "mlruns").resolve().as_uri()
            # MLflow >= 3.x refuses a file store unless asked for: the run folder is the point
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        out.append(instantiate(node, **extra))
    return out


def resolve_precision(precision: str | int | None) -> str:
    """``auto``: bf16-mixed on a GPU that supports it, fp32 elsewhere."""
    if precision in (None, "auto"):
        bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return "bf16-mixed" if bf16 else "32-true"
    return str(precision)


class RunStats(Callback):
    """Validation history, training images/s (saved in the checkpoints), whether the fit loop
    ran to its end in this process, and the identity stamp every checkpoint carries."""

    def __init__(self, ckpt: ModelCheckpoint, identity: dict[str, Any] | None) -> None:
        self.ckpt, self.identity = ckpt, identity
        self.history: list[dict[str, float]] = []
        self.train_images, self.train_time = 0, 0.0
        self._t0: float | None = None
        self.reached_end = False

    def state_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("history", "train_images", "train_time")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.__dict__.update({k: state[k] for k in self.state_dict() if k in state})

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        if self.identity is not None:
            checkpoint["deblur_identity"] = self.identity  # a resume compares it

    # Training time runs from epoch start to end, validation left out; the device is
    # synchronised only there (a sync per step would cap a launch-bound GPU run).
    def _clock(self, pl_module, start: bool) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        if self._t0 is not None:
            self.train_time += time.perf_counter() - self._t0
        self._t0 = time.perf_counter() if start else None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._clock(pl_module, start=True)

    def on_validation_start(self, trainer, pl_module) -> None:
        self._clock(pl_module, start=False)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._clock(pl_module, start=False)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        first = next(iter(batch.values())) if isinstance(batch, dict) else batch[0]
        self.train_images += int(first.shape[0])

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        if trainer.state.fn == "fit":
            self._clock(pl_module, start=True)  # validation inside a training epoch
        logged = trainer.callback_metrics.items()
        metrics = {k: round(float(v), 6) for k, v in logged if k.startswith("val/")}
        if metrics:
            metrics["epoch"] = trainer.current_epoch
            metrics["iteration"] = int(getattr(pl_module, "_host_iteration", trainer.global_step))
            if trainer.state.fn != "fit":  # the whole split, after a fit on a subset
                metrics["full_set"] = 1
            self.history.append(metrics)

    def on_train_end(self, trainer, pl_module) -> None:
        self.reached_end = True

    def best(self) -> dict[str, float]:
        """The validation whose value is ModelCheckpoint's best score (best.ckpt's)."""
        monitor, score = self.ckpt.monitor, self.ckpt.best_model_score
        scored = [h for h in self.history if monitor in h and "full_set" not in h]
        if not scored or score is None:
            return {}
        return dict(min(scored, key=lambda h: abs(h[monitor] - float(score))))

    def images_per_s(self) -> float | None:
        return round(self.train_images / self.train_time, 3) if self.train_time > 0 else None


def build_system(cfg: DictConfig | dict[str, Any]) -> pl.LightningModule:
    """The ``system`` node, built by Hydra, with the resolved config in it (every tool rebuilds
    the networks from a checkpoint alone); ``loss=none`` builds no discriminator."""
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
    """The ``trainer`` node writing under ``run_dir``, with the loggers, the ``callbacks``
    (checkpoints/), :class:`RunStats`, the resolved precision and :class:`AtomicCheckpointIO`."""
    t = cfg.trainer
    loggers = build_loggers(cfg, run_dir)
    ckpt_dir = {"dirpath": str(run_dir / "checkpoints")}
    built = {
        k: instantiate(v, **(ckpt_dir if "dirpath" in v else {}))
        for k, v in cfg.callbacks.items()
        if v
    }
    ckpt: ModelCheckpoint = built.pop("checkpoint")
    stats = RunStats(ckpt, identity)
    deterministic = t.deterministic
    if deterministic is True and torch.cuda.is_available() and t.accelerator != "cpu":
        deterministic = "warn"  # ReflectionPad2d backward has no deterministic CUDA kernel
    every = cfg.val_every_iterations  # validation by iterations (batches), across epochs
    schedule = {"val_check_interval": every, "check_val_every_n_epoch": None} if every else {}
    trainer: pl.Trainer = instantiate(
        t,
        default_root_dir=str(run_dir),
        logger=loggers or False,
        callbacks=[ckpt, *built.values(), stats, *(extra_callbacks or [])],
        plugins=[AtomicCheckpointIO()],
        precision=resolve_precision(t.precision),
        deterministic=deterministic,
        **schedule,
    )
    check_launcher(trainer)  # spawn strategies / a local multirun over several processes
    return trainer, loggers, stats


def build_datamodule(cfg: DictConfig, task: str) -> pl.LightningDataModule:
    """The data group's DataModule; a missing ``data.root`` gets a message naming the fix."""
    if OmegaConf.is_missing(cfg.data, "root"):
        name = cfg.data.name
        raise DataError(
            f"data={name} needs the dataset folder: add data.root=/path/to/{name} to the command "
            f"(expected layout in conf/data/{name}.yaml and the README's Datasets table), or use "
            "data=embedded, the built-in dataset that needs no download."
        )
    accelerator = str(cfg.trainer.accelerator)
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return instantiate(cfg.data, task=task, on_gpu=on_gpu, _recursive_=False)


def _log_tb_setup(loggers: list[Logger], params: dict[str, Any], task: str) -> None:
    """Hyperparameters for every logger; on TensorBoard with placeholder metrics (validation
    logs them) and the custom-scalars layout."""
    tb = next((lg for lg in loggers if isinstance(lg, TensorBoardLogger)), None)
    for other in loggers:
        if other is not tb:
            other.log_hyperparams(params)
    if tb is not None:
        tb.log_hyperparams(params, {f"hp/{k}": 0.0 for k in _TASKS[task][3]})
        tb.experiment.add_custom_scalars(custom_scalars_layout(task))


_LIGHTNING_EVAL_WARNING = r"Found \d+ module\(s\) in eval mode at the start of training"


def _eval_modules_are_by_design(system: pl.LightningModule) -> bool:
    """True when every submodule in eval mode is one the system keeps there on purpose (fixed
    VGG19, frozen D, EMA generator): Lightning's warning is then replaced by one log line."""
    by_design = {f"{p}.": why for p, why in getattr(system, "eval_by_design", dict)().items()}
    in_eval = [f"{n}." for n, m in system.named_modules() if n and not m.training]  # "a.b."
    if not in_eval or not all(any(n.startswith(p) for p in by_design) for n in in_eval):
        return False
    used = [why for p, why in by_design.items() if any(n.startswith(p) for n in in_eval)]
    log.info("In eval mode during training, by design: %s.", ", ".join(used))
    return True


# task -> (what pretrained=false leaves random, data task, the validation values metrics.json
# keeps as "final" / "best", HPARAMS metrics)
_TASKS = {
    "gan": (
        "the generator encoder, VGG19 and timm critics",
        "paired",
        (
            *("val/psnr", "val/ssim", "val/psnr_input", "val/psnr_sd", "val/grad_energy"),
            *("val/grad_energy_input", "val/high_band", "val/high_band_input", "val/d_rank_acc"),
            *("val/judge_blur", "val/judge_blur_input", "val/adv_grad_share", "epoch"),
        ),
        ("psnr", "ssim"),
    ),
    "classifier": (
        "the classifier backbone",
        "classify",
        ("val/loss", "val/acc", "epoch"),
        ("val_loss", "val_acc"),
    ),
}


def _start(cfg: DictConfig, record: RunRecord) -> dict[str, Any]:
    """The result's training fields (weights, precision, the critic's start) and the
    hyperparameters shown in TensorBoard."""
    result = record.result
    result.pretrained_weights = bool(cfg.pretrained)
    result.precision = resolve_precision(cfg.trainer.precision)
    if not cfg.pretrained:
        result.warning = msg = (
            f"pretrained=false: {_TASKS[cfg.task][0]} use RANDOM weights, not ImageNet ones. "
            "Results of this run are not comparable with the thesis; use it for tests and the "
            "offline demo only."
        )
        log.warning("\n%s\n%s\n%s", "!" * 78, msg, "!" * 78)
        print(f"[deblur] WARNING: {msg}", flush=True)
    hp: dict[str, Any] = {f"choice/{k}": v for k, v in record.choices.items()}
    hp.update(seed=int(cfg.seed), pretrained_weights=bool(cfg.pretrained))
    hp.update(crop_size=int(cfg.data.crop_size or 0), batch_size=int(cfg.data.batch_size))
    if result.critic is not None:  # a GAN: its critic's start, as base_record read it
        if str(cfg.disc.checkpoint).startswith("auto"):  # resolved once, in the run's start files
            cfg.disc.checkpoint = record.start_files["disc.checkpoint"]
        result.critic.checkpoint = cfg.disc.checkpoint
        hp.update(disc_pretrained=result.critic.pretrained, disc_frozen=result.critic.frozen)
        hp["adv_weight"] = float(cfg.model.adv_weight)
    hp.update({k: float(v) for k, v in cfg.optim.items() if str(k).startswith("lr")})
    return hp


def fit(
    cfg: DictConfig, run_dir: Path, record: RunRecord, extra_callbacks: list[Callback] | None = None
) -> None:
    """Train ``cfg.task`` (gan | classifier) in ``run_dir`` into ``record.result``; done only when
    its fit loop ran to the end here and both checkpoints exist."""
    pl.seed_everything(int(cfg.seed), workers=True)
    cfg = copy.deepcopy(cfg)  # mutable, interpolations kept
    OmegaConf.set_struct(cfg, False)
    hp = _start(cfg, record)
    update_record(run_dir, record)
    datamodule = build_datamodule(cfg, _TASKS[cfg.task][1])
    datamodule.setup("fit")  # the data checks (files, sizes, a validation split) before any network
    system = build_system(cfg)
    if getattr(system, "load_report", None):
        record.result.critic.load_report = system.load_report
    trainer, loggers, stats = build_trainer(cfg, run_dir, extra_callbacks, identity=record.identity)
    _log_tb_setup(loggers, hp, cfg.task)
    with warnings.catch_warnings():
        if _eval_modules_are_by_design(system):
            warnings.filterwarnings("ignore", message=_LIGHTNING_EVAL_WARNING)
        trainer.fit(system, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    _check_complete(cfg, run_dir, trainer, stats)
    last = stats.history[-1] if stats.history else {}
    now = int(getattr(system, "_host_iteration", trainer.global_step))
    # final weights validated on a subset only, or not at all: the whole split once more
    if cfg.data.val_pairs_during_training or (
        cfg.val_every_iterations and last.get("iteration") != now
    ):
        trainer.validate(system, datamodule=datamodule, verbose=False)
    _record_results(cfg, record, trainer, stats, system)


def _record_results(cfg, record: RunRecord, trainer: pl.Trainer, stats: RunStats, system) -> None:
    keys, result, run_dir = _TASKS[cfg.task][2], record.result, Path(record.run_dir)
    last = stats.history[-1] if stats.history else {}
    result.final = {k: v for k, v in last.items() if k in keys}
    result.best = {k: v for k, v in stats.best().items() if k in keys}
    result.history, result.epochs = stats.history, trainer.current_epoch
    result.images_per_s, result.device = stats.images_per_s(), str(trainer.strategy.root_device)
    result.checkpoints = {n: str(run_dir / "checkpoints" / f"{n}.ckpt") for n in ("best", "last")}
    if not _planned_end_reached(trainer):  # e.g. a callback stopped it: continue with ckpt_path
        record.stopped = (
            f"before its planned length, at epoch {trainer.current_epoch} "
            f"(max_epochs={trainer.max_epochs}, max_steps={trainer.max_steps})"
        )
    if cfg.task == "gan":
        # the blurred inputs' own values (the table's input row): what deblurring starts from
        extra = ("val/grad_energy", "val/high_band", "val/judge_blur")
        result.input = {k: last.get(f"{k}_input") for k in ("val/psnr", "val/ssim")}
        result.input |= {k: last[f"{k}_input"] for k in extra if f"{k}_input" in last}
        result.iterations = int(system.iteration)
        result.planned_iterations = system.planned_iterations()  # the lr schedule's length


def _planned_end_reached(trainer: pl.Trainer) -> bool:
    """Training stopped at one of its limits (max_epochs, max_steps, max_time), not early."""
    if trainer.max_steps is not None and 0 < trainer.max_steps <= trainer.global_step:
        return True
    if trainer.max_epochs is not None and 0 <= trainer.max_epochs <= trainer.current_epoch:
        return True
    timers = [c for c in trainer.callbacks if isinstance(c, Timer)]
    return any((t.time_remaining() or 0) <= 0 for t in timers)


def _check_complete(cfg: DictConfig, run_dir: Path, trainer: pl.Trainer, stats: RunStats) -> None:
    """Refuse to call a run finished that did not train to its end or has no checkpoints."""
    if trainer.interrupted:
        raise IncompleteRunError(f"Training of {run_dir} was interrupted; run the command again.")
    if not stats.reached_end:
        raise IncompleteRunError(
            f"Nothing was trained in {run_dir}: ckpt_path={cfg.ckpt_path} is the checkpoint of a "
            f"run that had already reached its planned length (epoch {trainer.current_epoch}, "
            f"max_epochs={cfg.trainer.max_epochs}, max_steps={cfg.trainer.max_steps}), so this "
            "run has no results of its own. Its results are in that run's metrics.json; to "
            "train this configuration, drop ckpt_path."
        )
    ckpts = run_dir / "checkpoints"
    missing = [n for n in ("best.ckpt", "last.ckpt") if not (ckpts / n).is_file()]
    if missing:
        raise IncompleteRunError(
            f"Training of {run_dir} ended without writing {' and '.join(missing)} in {ckpts}: "
            "best.ckpt is written at a validation, so no validation ran. Make the run validate "
            "at least once (trainer.check_val_every_n_epoch <= trainer.max_epochs, "
            "val_every_iterations <= the run's iterations, trainer.limit_val_batches > 0)."
        )
