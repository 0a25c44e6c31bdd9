"""The values a person sets, checked before any network or file (key typos, types, :data:`RULES`,
``+`` keys, precision x optimizer, the critic's switches): one ConfigValueError with the fix."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Sequence
from typing import Any

import torch
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from deblur.config.compose import CONF_DIR, compose, parse_overrides
from deblur.errors import UserError

_ABSENT = object()


class ConfigValueError(UserError, ValueError):
    """A config value or key a person gave that no run could use (one paragraph)."""


# (key, rule, what the key is, a good value): a range of _RANGES or "bool"; "int": integers
# only; "or null" / "or auto" allow those. A key the config does not have is not checked.
RULES: tuple[tuple[str, str, str, str], ...] = (
    ("optim.lr", "> 0", "a learning rate", "1.0e-4"),
    ("optim.lr_g", "> 0", "the generator's learning rate", "1.0e-4"),
    ("optim.lr_d", "> 0", "the discriminator's learning rate", "1.0e-4"),
    ("optim.weight_decay", ">= 0", "a weight decay", "0"),
    ("optim.grad_clip", ">= 0", "a gradient-norm limit (0 = no clipping)", "0"),
    ("optim.betas", "[0, 1)", "Adam's two averaging factors", "[0.9,0.999]"),
    ("schedule.decay_start", "[0, 1]", "the share of iterations before the lr decays", "0.5"),
    ("schedule.min_lr", ">= 0", "the learning rate the decay ends at", "1.0e-7"),
    ("model.adv_weight", ">= 0", "the adversarial term's weight", "0.001"),
    ("model.content.pixel_weight", ">= 0", "the pixel term's weight", "0.5"),
    ("model.content.perceptual_weight", ">= 0", "the perceptual term's weight", "0.006"),
    ("model.ema_decay", "[0, 1)", "the EMA factor (0 = no EMA)", "0.999"),
    ("model.warmup_epochs", ">= 0 int", "epochs with the encoder frozen", "3"),
    ("model.health_check_every", ">= 0 int", "iterations between NaN checks (0 = never)", "50"),
    ("model.val_image_strips", ">= 0 int", "image strips per validation", "3"),
    ("model.grad_share_every", ">= 0 int", "G steps between gradient-share measurements", "0"),
    ("data.batch_size", "> 0 int", "training pairs per batch", "1"),
    ("data.val_batch_size", "> 0 int", "validation pairs per batch", "1"),
    ("data.crop_size", "> 0 int or null", "the training crop side in pixels (null = whole)", "256"),
    ("data.pre_crop_scale", ">= 1", "the augmented patch's size over the crop's", "1.6"),
    ("data.num_workers", ">= 0 int or auto", "loader processes (auto: from the cores)", "auto"),
    ("data.cache", "bool or auto", "whether decoded images stay in RAM", "auto"),
    ("data.val_pairs_during_training", "> 0 int or null", "validation pairs while training", "64"),
    ("val_every_iterations", "> 0 int or null", "iterations between validations", "5000"),
    ("data.val_fraction", "[0, 1)", "the share of training sequences held out to validate", "0.1"),
    ("data.max_train_pairs", "> 0 int or null", "a limit on training pairs (null = all)", "null"),
    ("data.max_val_pairs", "> 0 int or null", "a limit on validation pairs (null = all)", "null"),
    ("data.max_test_pairs", "> 0 int or null", "a limit on test pairs (null = all)", "null"),
    ("data.min_val_side", ">= 0 int or null", "the smallest validation image side", "32"),
    ("trainer.check_val_every_n_epoch", "> 0 int or null", "epochs between validations", "1"),
    ("trainer.log_every_n_steps", "> 0 int", "steps between logged points", "50"),
    ("seed", ">= 0 int", "the random seed", "0"),
)


_RANGES = {
    "> 0": lambda v: v > 0,
    ">= 0": lambda v: v >= 0,
    ">= 1": lambda v: v >= 1,
    "[0, 1)": lambda v: 0 <= v < 1,
    "[0, 1]": lambda v: 0 <= v <= 1,
}


def _check_one(key: str, rule: str, what: str, example: str, value: Any, overrides) -> None:
    if (value is None and "or null" in rule) or (value == "auto" and "or auto" in rule):
        return
    kind, integer = rule.split(" or ")[0].removesuffix(" int"), " int" in rule

    def fits(v: Any) -> bool:
        if kind == "bool" or isinstance(v, bool) or not isinstance(v, int | float):
            return kind == "bool" and isinstance(v, bool)
        return not (integer and v != int(v)) and _RANGES[kind](v)

    if all(map(fits, value if isinstance(value, ListConfig | list | tuple) else [value])):
        return
    needs = f"{'an integer' if integer else 'a number'} {'in ' if '[' in kind else ''}{kind}"
    needs = "true or false" if kind == "bool" else needs
    needs += "".join(f" or {alt}" for alt in ("null", "auto") if f"or {alt}" in rule)
    shown = OmegaConf.to_container(value) if isinstance(value, ListConfig) else value
    given = any(o.lstrip("+~").split("=", 1)[0] == key for o in overrides)
    where = (
        "on the command line" if given else "by the composed config (an experiment= or data= file)"
    )
    raise ConfigValueError(
        f"{key}={shown} (set {where}): {key} is {what} and must be {needs}. Fix: give "
        f"{key}=<{needs}>, e.g. {key}={example}."
    )


def check_disc_switches(
    *, adversarial: bool, checkpoint: Any, frozen: bool, heads: Sequence[str], kind: str
) -> None:
    """``disc.checkpoint`` / ``disc.frozen`` with the loss and the discriminator they act on."""
    if not adversarial and (checkpoint or frozen):
        raise ConfigValueError(
            f"loss=none trains without a discriminator, so disc.checkpoint={checkpoint or 'null'} / "
            f"disc.frozen={str(bool(frozen)).lower()} have nothing to act on. Drop those "
            "overrides, or choose an adversarial loss (loss=ragan_ls, ...)."
        )
    if frozen and not checkpoint:
        raise ConfigValueError(
            "disc.frozen=true needs a pretrained discriminator: a frozen random D teaches the "
            "generator nothing. Give disc.checkpoint=<classifier best.ckpt> (or "
            "disc.checkpoint=auto to take the Table 4.2 classifier of this backbone)."
        )
    fresh = [h for h in heads if h != "single"]
    if frozen and fresh:
        raise ConfigValueError(
            f"disc={kind} disc.frozen=true would train G against a frozen random "
            f"{' and '.join(fresh)} head: a classifier checkpoint gives only the single critic "
            "its head (the patch critic loads the trunk and keeps a fresh head). Fix: "
            f"disc=single disc.frozen=true (Table 4.4), or keep disc={kind} with "
            "disc.frozen=false so the fresh head trains."
        )


def _suggest(name: str, known: Sequence[str], given: str, prefix: str = "", rest: str = "") -> str:
    """The close match of a mistyped key part ``name`` among ``known`` (keys under ``prefix``)."""
    if close := difflib.get_close_matches(name, known, n=1, cutoff=0.6):
        return f"Did you mean {prefix}{close[0]}{rest}? Fix: {prefix}{close[0]}{rest}={given}"
    return f"Its keys: {', '.join(prefix + k for k in known[:16])}. Fix: one of those"


_PLUS = " (without '+': '+' adds keys the config does not have)"


def check_closed_keys(base: DictConfig, added: Sequence[tuple[str, str]]) -> None:
    """A key added with ``+`` under a ``_target_`` node must be a parameter of that constructor."""
    for key, line in added:
        prefix, _, name = key.rpartition(".")
        node = OmegaConf.select(base, prefix, default=None) if prefix else None
        if not (isinstance(node, DictConfig) and "_target_" in node):
            continue
        try:
            params = inspect.signature(get_object(str(node._target_))).parameters.values()
        except (ValueError, TypeError, ImportError, AttributeError):
            continue  # a constructor whose parameters cannot be read: not checked
        names = [p.name for p in params if p.kind is not p.VAR_POSITIONAL]
        if name in names or any(p.kind is p.VAR_KEYWORD for p in params):
            continue
        known = sorted({*names, *(str(k) for k in node.keys() if not str(k).startswith("_"))})
        raise ConfigValueError(
            f"{line}: {node._target_} (the `{prefix}` node) takes no parameter '{name}', so the "
            f"run would stop with a TypeError when it builds it. "
            f"{_suggest(name, known, line.split('=', 1)[-1], prefix + '.')}{_PLUS}."
        )


def _is_group(key: Any) -> bool:
    return (CONF_DIR / str(key).split("@")[0]).is_dir()


def _keyed(parsed: Sequence[Any]) -> list[Any]:
    """The overrides that set a key of the config (not a group, a deletion or ``hydra.*``)."""
    own = [ov for ov in parsed if not str(ov.key_or_group).startswith("hydra.")]
    return [ov for ov in own if not (ov.is_delete() or _is_group(ov.key_or_group))]


def _not_a_key(line: str, config_name: str, base: DictConfig, note: str = "") -> ConfigValueError:
    """``line`` sets a key ``base`` lacks: one paragraph with its close match."""
    key, _, given = line.lstrip("+").partition("=")
    parent, _, leaf = key.rpartition(".")
    while parent and not isinstance(OmegaConf.select(base, parent, default=None), DictConfig):
        parent, _, leaf = parent.rpartition(".")  # the first part of the key that is not there
    node = OmegaConf.select(base, parent) if parent else base
    rest = key[len(parent) + len(leaf) + bool(parent) :]
    hint = _suggest(leaf, [str(k) for k in node.keys()], given, parent + "." * bool(parent), rest)
    return ConfigValueError(
        f"{line}: '{key}' is not a key of the {config_name} config{note}, so no code would read "
        f"it. {hint}{_PLUS if line.startswith('+') else ''}."
    )


#: Sections whose keys are all read by the code: a key added with ``+`` that they lack is a typo.
SCHEMA_SECTIONS = ("model", "optim", "schedule")
#: What an override of a key with a default of this type must be (an integer passes for a
#: number); a default of any other type takes any scalar, as the code reads strings.
_KINDS = {bool: "true or false", int: "an integer", float: "a number"}


def check_overrides(cfg: DictConfig, config_name: str, overrides: Sequence[str]) -> None:
    """A value whose type differs from its default (``seed=x``), a ``+`` key the config lacks
    at the top level or in :data:`SCHEMA_SECTIONS`, one no constructor takes."""
    parsed = parse_overrides(overrides)
    if not (keyed := _keyed(parsed)):
        return
    base = compose(config_name, [str(o.input_line) for o in parsed if _is_group(o.key_or_group)])
    added: list[tuple[str, str]] = []
    for ov in keyed:
        key, line = str(ov.key_or_group), str(ov.input_line)
        default = OmegaConf.select(base, key, default=_ABSENT, throw_on_missing=False)
        if default is _ABSENT:
            if line.startswith("+") and ("." not in key or key.split(".")[0] in SCHEMA_SECTIONS):
                raise _not_a_key(line, config_name, base)
            added.append((key, line))
            continue
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        name, got = _KINDS.get(type(default)), _KINDS.get(type(value))
        if name and value is not None and got != name and (name, got) != ("a number", "an integer"):
            example = str(default).lower() if isinstance(default, bool) else default
            raise ConfigValueError(
                f"{line}: {key} takes {name} (its default is {default!r}), not {value!r}. "
                f"Fix: give {key}=<{name}>, e.g. {key}={example}."
            )
    check_closed_keys(base, added)


def _has_key(cfg: DictConfig, key: str) -> bool:
    """Whether ``cfg`` has ``key`` (a ``???`` value counts: the key is there, unset)."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent, default=None, throw_on_missing=False) if parent else cfg
    return isinstance(node, DictConfig) and leaf in node.keys()


def check_known_keys(config_name: str, overrides: Sequence[str]) -> None:
    """Before Hydra composes: a ``key=value`` whose key the config lacks (under each value of a
    sweep's groups) gets the close match, not Hydra's advice to add the typo with ``+``."""
    parsed = parse_overrides(overrides)
    if any(str(ov.key_or_group).startswith("hydra.searchpath") for ov in parsed):
        return
    missing = [ov for ov in _keyed(parsed) if not (ov.is_add() or ov.is_force_add())]
    choices = [
        [f"{ov.key_or_group}={v}" for v in ov.sweep_string_iterator()]
        if ov.is_sweep_override()
        else [f"{ov.key_or_group}={ov.get_value_element_as_str()}"]
        for ov in parsed
        if _is_group(ov.key_or_group)
    ]
    firsts = [c[0] for c in choices]
    tried = [firsts] + [
        [*firsts[:i], v, *firsts[i + 1 :]] for i, c in enumerate(choices) for v in c[1:]
    ]
    first: DictConfig | None = None
    for groups in tried if missing else []:
        try:
            base = compose(config_name, groups)
        except Exception:  # noqa: BLE001 - a group option only Hydra can find: Hydra reports it
            return
        first = base if first is None else first
        if not (missing := [ov for ov in missing if not _has_key(base, str(ov.key_or_group))]):
            return
    if missing and first is not None:
        note = f" (with {' '.join(firsts) or 'its default groups'})"
        raise _not_a_key(str(missing[0].input_line), config_name, first, note)


def _check_precision(cfg: DictConfig) -> None:
    """fp16 on the CPU; fp16 (GradScaler) with a clipped fused Adam, which unscales inside its
    kernel, so Lightning cannot clip it."""
    if "trainer" not in cfg:  # a tool's config
        return
    precision, accelerator = str(cfg.trainer.precision), str(cfg.trainer.accelerator)
    fused, clip = cfg.optim.get("fused"), cfg.optim.get("grad_clip") or 0  # GAN keys only
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if precision in ("16-mixed", "16") and on_cpu:
        raise ConfigValueError(
            f"trainer.precision={precision} with trainer.accelerator={accelerator}: fp16 mixed "
            "precision needs a CUDA GPU; on the CPU Lightning would quietly train in bf16-mixed "
            f"while the run record says {precision}. Fix: trainer.precision=bf16-mixed or "
            "32-true on the CPU, or trainer=gpu_fp16 on a GPU."
        )
    if precision in ("16-mixed", "16", "16-true") and fused and float(clip) > 0:
        raise ConfigValueError(
            f"trainer.precision={precision} optim.fused=true optim.grad_clip={clip}: fp16 "
            "training unscales a fused Adam's gradients inside the optimizer, so they cannot be "
            "clipped first (Lightning refuses it at the first step). Fix: optim.fused=false "
            "(foreach Adam, nearly as fast), optim.grad_clip=0, or trainer.precision=bf16-mixed "
            "(no loss scaling)."
        )


def check_values(cfg: DictConfig, overrides: Sequence[str] = ()) -> None:
    """The ranges of :data:`RULES`, precision x optimizer, and the discriminator's switches."""
    for key, rule, what, example in RULES:
        value = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False)
        if value is not _ABSENT:  # (a ``???`` value reads as absent)
            _check_one(key, rule, what, example, value, overrides)
    _check_precision(cfg)
    if cfg.get("task") == "gan":
        check_disc_switches(
            adversarial=not str(cfg.loss._target_).endswith("NoAdversarialLoss"),
            checkpoint=cfg.disc.checkpoint,
            frozen=bool(cfg.disc.frozen),
            heads=list(cfg.disc.net.critics),
            kind=str(cfg.disc.net.kind),
        )
