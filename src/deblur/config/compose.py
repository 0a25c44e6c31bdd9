"""Configuration plumbing: the conf/ folder, the run-folder names (the OmegaConf resolvers
``run_dirname`` and ``eval_slug``), composing for tests and notebooks."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from deblur.files import file_sha256


def _find_conf_dir() -> Path:
    if os.environ.get("DEBLUR_CONF"):
        return Path(os.environ["DEBLUR_CONF"]).resolve()
    here = Path(__file__).resolve()
    if found := next((p / "conf" for p in here.parents if (p / "conf/train.yaml").is_file()), None):
        return found
    raise FileNotFoundError(
        "Cannot find the deblur config folder `conf/` (looked above "
        f"{here}). Run from a clone of the repository installed with `pip install -e .`, "
        "or point the environment variable DEBLUR_CONF at the repository's conf/ folder."
    )


CONF_DIR: Path = _find_conf_dir()


#: The one list of config keys (each with everything below it) that do not define a run's result:
#: where it lives, how it is relaunched, how data is fed, what is shown. They are in neither its
#: identity (:func:`deblur.runs.identity.identify`) nor its folder name.
IDENTITY_EXCLUDE = (
    "runs_dir",
    "sweep_name",
    "overwrite",
    "resume",
    "ckpt_path",  # exact resume: the result is the same as an uninterrupted run's
    "data.num_workers",
    "data.pin_memory",
    "data.persistent_workers",
    "data.multiprocessing_context",
    "data.cache",  # RAM cache of the decoded images: the same pixels
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "model.val_image_strips",  # TensorBoard images only
    "model.health_check_every",  # how often NaN/inf is looked for, not the values
    "callbacks.last",  # the writer of last.ckpt (a file of the run, not its result)
    "callbacks.checkpoint.save_last",  # moot since callbacks.last (kept out: older runs match)
    "device",  # evaluate / robustness: the same network on another device
    "save_images",  # evaluate: its output images written too
    "progress",
)
#: Keys that define a training run but not its folder name: the sweep folder names the preset,
#: and the identity holds the dataset folder (moving a dataset renames no run).
NAMED_ELSEWHERE = ("experiment", "data.root")


_EXCLUDED = tuple(f"{x}." for x in IDENTITY_EXCLUDE)  # a key and everything below it


def defines_the_run(key: str) -> bool:
    """False for a key of :data:`IDENTITY_EXCLUDE` or below one."""
    return not f"{key}.".startswith(_EXCLUDED)


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _above_checkpoints(p: Path, n: int) -> list[str]:
    """The ``n`` folders above the last ``checkpoints/`` of ``p`` (a run's), [] without one."""
    folders = p.parts[:-1]
    i = len(folders) - folders[::-1].index("checkpoints") - 1 if "checkpoints" in folders else 0
    return list(folders[max(0, i - n) : i])


def path_tag(value: str) -> str:
    """``<name>-<hash8>`` for a file path: the run folder above ``checkpoints/`` (else the
    stem), the sha256 of the file's content (of the path when there is no file)."""
    p = Path(value).expanduser()
    name = (_above_checkpoints(p, 1) or [p.stem or p.name])[0]
    name = _UNSAFE.sub("-", name).strip("-.")[:40] or "file"
    digest = file_sha256(p) if p.is_file() else hashlib.sha256(str(p).encode()).hexdigest()
    return f"{name}-{digest[:8]}"


def parse_overrides(overrides: Sequence[str]) -> list[Any]:
    return OverridesParser.create().parse_overrides([str(o) for o in overrides])


def run_dirname(overrides: Sequence[str]) -> str:
    """A training run's folder name: its overrides of keys that define the run (not
    :data:`NAMED_ELSEWHERE`), sorted, ``,``-joined ("default": none); a path as a :func:`path_tag`."""
    lines = []
    for ov in parse_overrides(overrides):
        if not defines_the_run(ov.key_or_group) or ov.key_or_group in NAMED_ELSEWHERE:
            continue
        line = str(ov.input_line).replace("\\:", ":")  # Hydra escapes ':' in overrides.task
        value = ov.value() if not ov.is_sweep_override() else None
        if isinstance(value, str) and ("/" in value or "\\" in value or value.startswith("~")):
            prefix = line[: line.index(ov.key_or_group)] if ov.key_or_group in line else ""
            line = f"{prefix}{ov.key_or_group}={path_tag(value)}"
        lines.append(line)
    name = ",".join(sorted(lines)) or "default"
    if len(name) > 200:  # file names stop at 255 bytes
        name = name[:180] + "-" + hashlib.sha256(name.encode()).hexdigest()[:8]
    return name


def _slug_value(key: str, value: str) -> str:
    if key == "ckpt":
        p = Path(value)
        run = "_".join(_above_checkpoints(p, 2) if "checkpoints" in p.parts else [p.parent.name])
        return f"{run}_{p.stem}" if run else p.stem
    return value.replace("/", "_").replace("\\", "_").strip("_.") or "_"


def eval_slug(overrides: str | Sequence[str]) -> str:
    """``<method>/<its other overrides of keys that define the run>``, an evaluate / robustness
    run's folder, from Hydra's override list (values may hold ``=``, ``,``) or override_dirname."""
    items = [s for s in overrides.split(",") if s] if isinstance(overrides, str) else overrides
    method, rest = "", []
    for item in sorted(map(str, items)):
        key, _, value = item.partition("=")
        key, value = key.lstrip("+~"), value.strip("'\"")
        if key in ("ckpt", "baseline"):
            method = _slug_value(key, value)
        elif defines_the_run(key):
            rest.append(f"{key}={_slug_value(key, value)}")
    tail = ",".join(rest) or "default"
    if len(tail) > 120:
        tail = tail[:100] + "-" + hashlib.sha1(tail.encode()).hexdigest()[:8]
    return f"{method or 'no_method'}/{tail}"


RESOLVERS = {
    "run_dirname": run_dirname,
    "eval_slug": eval_slug,
    "dirname": lambda override_dirname: override_dirname or "default",  # configs before run_dirname
}


def register_resolvers() -> None:
    """Register the OmegaConf resolvers our YAML uses (idempotent); called at import, as a
    submitit job resolves its run folder before any entry-point code runs in it."""
    for name, fn in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register_resolvers()


def to_container(cfg: DictConfig | dict) -> dict[str, Any]:
    """Resolved plain-dict copy of a config (what checkpoints and metrics.json store)."""
    if isinstance(cfg, dict):
        return cfg
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)  # type: ignore


def compose(
    config_name: str, overrides: list[str] | None = None, return_hydra_config: bool = False
):
    """Compose a config the way the entry points do: inside a running Hydra app on its search
    path, else from CONF_DIR (tests, notebooks)."""
    if GlobalHydra.instance().is_initialized():
        return hydra_compose(config_name, list(overrides or []), return_hydra_config)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name, list(overrides or []), return_hydra_config)
