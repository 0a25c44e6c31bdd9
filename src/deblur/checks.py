"""The values a person sets, checked before any network is built or any file written.

:func:`check_values` runs on the composed config of every entry point (``deblur.cli``): the
ranges of the numeric keys (:data:`RULES`), the keys added with ``+`` to a node that a
constructor reads whole (:func:`check_closed_keys`), fp16 with a fused, clipped Adam, and the
discriminator's switches
(:func:`check_disc_switches`, also called by the GAN system itself). Each refusal is one
:class:`ConfigValueError` paragraph naming the key, its value, where it came from and the fix.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Sequence
from typing import Any

import torch
from hydra import compose as hydra_compose
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from deblur.config import CONF_DIR, compose, parse_overrides
from deblur.errors import UserError

_ABSENT = object()


class ConfigValueError(UserError, ValueError):
    """A config value or key a person gave that no run could use (one paragraph)."""


# (key, rule, what the key is, a good value): rules "> 0", ">= 0", "> 0 or null", ">= 0 or null", "[0, 1)",
# "[0, 1]", "bool"; integer keys carry "int", "or auto" allows auto. A key the config does not
# have is not checked.
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
    ("model.grad_share_every", ">= 0 int", "iterations between gradient-share measurements", "0"),
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


def _in_range(rule: str, v: float) -> bool:
    if rule.startswith("> 0"):
        return v > 0
    if rule.startswith(">= 0"):
        return v >= 0
    if rule.startswith(">= 1"):
        return v >= 1
    if rule.startswith("[0, 1)"):
        return 0 <= v < 1
    return 0 <= v <= 1  # "[0, 1]"


def _where(key: str, overrides: Sequence[str]) -> str:
    given = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] == key]
    return (
        "on the command line" if given else "by the composed config (an experiment= or data= file)"
    )


def _check_one(
    key: str, rule: str, what: str, example: str, value: Any, overrides: Sequence[str]
) -> None:
    if (value is None and "or null" in rule) or (value == "auto" and "or auto" in rule):
        return
    values = list(value) if isinstance(value, ListConfig | list | tuple) else [value]
    for v in values:
        is_number = isinstance(v, int | float) and not isinstance(v, bool)
        whole = not ("int" in rule and is_number and float(v) != int(v))
        if rule.startswith("bool") and isinstance(v, bool):
            continue
        if not rule.startswith("bool") and is_number and whole and _in_range(rule, float(v)):
            continue
        shown = OmegaConf.to_container(value) if isinstance(value, ListConfig) else value
        kind = rule.replace(" int", "").replace(" or null", "").replace(" or auto", "")
        needs = (
            f"{'an integer' if 'int' in rule else 'a number'} {'in ' if '[' in kind else ''}{kind}"
        )
        if rule.startswith("bool"):
            needs = "true or false"
        for alternative in ("null", "auto"):
            if f"or {alternative}" in rule:
                needs += f" or {alternative}"
        raise ConfigValueError(
            f"{key}={shown} (set {_where(key, overrides)}): {key} is {what} and must be "
            f"{needs}. Fix: give {key}=<{needs}>, e.g. {key}={example}."
        )


def check_ranges(cfg: DictConfig, overrides: Sequence[str] = ()) -> None:
    """Every key of :data:`RULES` the config has, against its rule."""
    for key, rule, what, example in RULES:
        value = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False)
        if value is _ABSENT or (isinstance(value, str) and value == "???"):
            continue
        _check_one(key, rule, what, example, value, overrides)


def check_disc_switches(
    *, adversarial: bool, checkpoint: Any, frozen: bool, heads: Sequence[str], kind: str
) -> None:
    """``disc.checkpoint`` / ``disc.frozen`` with the loss and the discriminator they act on."""
    if not adversarial and (checkpoint or frozen):
        raise ConfigValueError(
            f"loss=none trains without a discriminator, so disc.checkpoint="
            f"{checkpoint if checkpoint else 'null'} / "
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


def _check_disc(cfg: DictConfig) -> None:
    if cfg.get("task") != "gan" or "disc" not in cfg or "loss" not in cfg:
        return
    target = str(OmegaConf.select(cfg, "loss._target_", default=""))
    critics = OmegaConf.select(cfg, "disc.net.critics", default=None)
    check_disc_switches(
        adversarial=not target.endswith("NoAdversarialLoss"),
        checkpoint=cfg.disc.get("checkpoint"),
        frozen=bool(cfg.disc.get("frozen")),
        heads=list(critics.keys()) if isinstance(critics, DictConfig) else [],
        kind=str(OmegaConf.select(cfg, "disc.net.kind", default="?")),
    )


def _parameters(target: str) -> tuple[list[str], bool] | None:
    """The keyword names ``target`` takes and whether it takes ``**kwargs`` (None: unknown)."""
    try:
        sig = inspect.signature(get_object(target))
    except (ValueError, TypeError, ImportError, AttributeError):
        return None
    names = [p.name for p in sig.parameters.values() if p.kind is not p.VAR_POSITIONAL]
    open_ = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    return names, open_


def check_closed_keys(base: DictConfig, added: Sequence[tuple[str, str]]) -> None:
    """A key added with ``+`` under a node with a ``_target_`` (``+data.crop_sise=32``) must be
    a parameter of that constructor, or the run would end in its ``TypeError``."""
    for key, line in added:
        parts = key.split(".")
        for depth in range(len(parts) - 1, 0, -1):
            node = OmegaConf.select(base, ".".join(parts[:depth]), default=None)
            if isinstance(node, DictConfig) and "_target_" in node:
                break
        else:
            continue
        params = _parameters(str(node._target_))
        name = parts[depth]
        if params is None or params[1] or name in params[0] or depth != len(parts) - 1:
            continue
        known = sorted({*params[0], *(str(k) for k in node.keys() if not str(k).startswith("_"))})
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        prefix = ".".join(parts[:depth])
        hint = (
            f"Did you mean {prefix}.{close[0]}? Fix: {prefix}.{close[0]}={line.split('=', 1)[-1]}"
            if close
            else f"Its keys: {', '.join(known[:16])}"
        )
        raise ConfigValueError(
            f"{line}: {node._target_} (the `{prefix}` node) takes no parameter '{name}', so the "
            f"run would stop with a TypeError when it builds it. {hint} (without '+': '+' adds "
            "keys the config does not have)."
        )


# --------------------------------------------------------------------------- overrides


def _is_group(key: str) -> bool:
    return (CONF_DIR / key).is_dir()


def _compose_here(config_name: str, overrides: list[str]) -> DictConfig:
    """Compose inside a running Hydra app (its search path) or, outside one, from CONF_DIR."""
    if GlobalHydra.instance().is_initialized():
        return hydra_compose(config_name=config_name, overrides=overrides)
    return compose(config_name, overrides)


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    return "a string"


def _type_ok(default: Any, value: Any) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    return True  # strings (and the rest) take any scalar, as the code reads them


#: Sections whose keys are all read by the code: a key added with ``+`` that they lack is a typo.
SCHEMA_SECTIONS = ("model", "optim", "schedule")


def _did_you_mean(key: str, base: DictConfig, given: str) -> str:
    section = key.rsplit(".", 1)[0] if "." in key else ""
    known = [
        k for k in _flat_keys(base) if (k.startswith(section + ".") if section else "." not in k)
    ]
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"Did you mean {close[0]}? Fix: {close[0]}={given}"
    return f"Its keys: {', '.join(known[:12])}. Fix: one of those"


def check_overrides(cfg: DictConfig, config_name: str, overrides: Sequence[str]) -> None:
    """Refuse a command-line value whose type differs from the config's default (``seed=x``,
    ``trainer.max_epochs=abc``); a key added with ``+`` that the config does not have, at the
    top level or in :data:`SCHEMA_SECTIONS` (``+model.adv_wieght=...``); and one added to a
    node that a constructor reads whole (``+data.crop_sise=32``, :func:`check_closed_keys`),
    naming the key, the close match and the fix."""
    parsed = parse_overrides(overrides)
    groups = [str(o.input_line) for o in parsed if _is_group(o.key_or_group.split("@")[0])]
    base = None
    added: list[tuple[str, str]] = []
    for ov in parsed:
        key = str(ov.key_or_group)
        if ov.is_delete() or _is_group(key.split("@")[0]) or key.startswith("hydra."):
            continue
        if base is None:
            base = _compose_here(config_name, groups)
        default = OmegaConf.select(base, key, default=_ABSENT, throw_on_missing=False)
        given = ov.input_line.split("=", 1)[1] if "=" in str(ov.input_line) else ""
        if default is _ABSENT:
            section = key.split(".", 1)[0] if "." in key else ""
            if (ov.is_add() or ov.is_force_add()) and (not section or section in SCHEMA_SECTIONS):
                raise ConfigValueError(
                    f"{ov.input_line}: '{key}' is not a key of the {config_name} config, so no "
                    f"code would read it and the value would be ignored. "
                    f"{_did_you_mean(key, base, given)} (without '+': '+' adds keys the config "
                    "does not have)."
                )
            added.append((key, str(ov.input_line)))
            continue
        if isinstance(default, DictConfig | dict) or OmegaConf.is_missing(base, key):
            continue
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if not _type_ok(default, value):
            raise ConfigValueError(
                f"{key}={given}: {key} takes {_type_name(default)} (its default is "
                f"{default!r}), not {value!r}. Fix: give {key}=<{_type_name(default)}>, e.g. "
                f"{key}={str(default).lower() if isinstance(default, bool) else default}."
            )
    if added and base is not None:
        check_closed_keys(base, added)


def _has_key(cfg: DictConfig, key: str) -> bool:
    """Whether ``cfg`` has ``key`` (a ``???`` value counts: the key is there, unset)."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent, default=None, throw_on_missing=False) if parent else cfg
    return isinstance(node, DictConfig) and leaf in node.keys()


def check_known_keys(config_name: str, overrides: Sequence[str]) -> None:
    """Before Hydra composes: a ``key=value`` (no ``+``) whose key the config lacks gets the
    close match, not Hydra's advice to add the typo with ``+``. A sweep's groups are tried in
    each of their values until one composition has the key. Overrides that extend the search
    path (``hydra.searchpath``) skip the check (their keys are not in ``conf/``)."""
    parsed = parse_overrides(overrides)
    if any(str(ov.key_or_group).startswith("hydra.searchpath") for ov in parsed):
        return
    plain = [
        ov
        for ov in parsed
        if not (ov.is_add() or ov.is_force_add() or ov.is_delete())
        and not _is_group(str(ov.key_or_group).split("@")[0])
        and not str(ov.key_or_group).startswith("hydra.")
    ]
    if not plain:
        return
    choices: list[list[str]] = []
    for ov in parsed:
        if _is_group(str(ov.key_or_group).split("@")[0]):
            name = str(ov.key_or_group)
            values = (
                [str(v) for v in ov.sweep_string_iterator()]
                if ov.is_sweep_override()
                else [ov.get_value_element_as_str()]
            )
            choices.append([f"{name}={v}" for v in values])
    tried = [[c[0] for c in choices]] + [
        [*(c[0] for c in choices[:i]), v, *(c[0] for c in choices[i + 1 :])]
        for i, c in enumerate(choices)
        for v in c[1:]
    ]
    missing = plain
    first: DictConfig | None = None
    for groups in tried:
        try:
            base = _compose_here(config_name, groups)
        except Exception:  # noqa: BLE001 - a group option only Hydra can find: Hydra reports it
            return
        first = base if first is None else first
        missing = [ov for ov in missing if not _has_key(base, str(ov.key_or_group))]
        if not missing:
            return
    ov = missing[0]
    key = str(ov.key_or_group)
    given = str(ov.input_line).split("=", 1)[1] if "=" in str(ov.input_line) else ""
    raise ConfigValueError(
        f"{ov.input_line}: '{key}' is not a key of the {config_name} config (with "
        f"{' '.join(tried[0]) or 'its default groups'}), so no code would read it. "
        f"{_did_you_mean(key, first, given)}."
    )


def _flat_keys(node: Any, prefix: str = "") -> list[str]:
    out: list[str] = []
    if isinstance(node, DictConfig):
        for k in node.keys():
            child = node._get_node(k)
            full = f"{prefix}{k}"
            out.append(full)
            if isinstance(child, DictConfig):
                out += _flat_keys(child, full + ".")
    return out


def _check_precision(cfg: DictConfig) -> None:
    """fp16 mixed precision scales the loss (a GradScaler); Lightning cannot clip the gradients
    of a fused Adam, which unscales inside its own kernel, so the three are refused together."""
    precision = str(OmegaConf.select(cfg, "trainer.precision", default=""))
    fused = bool(OmegaConf.select(cfg, "optim.fused", default=False))
    clip = OmegaConf.select(cfg, "optim.grad_clip", default=0) or 0
    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator", default="auto"))
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
    """Ranges, precision x optimizer, and the discriminator's switches (see the module doc)."""
    check_ranges(cfg, overrides)
    _check_precision(cfg)
    _check_disc(cfg)
