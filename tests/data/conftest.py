"""Data tests build everything from conf/data (the code path training uses), never from copies."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from deblur.config import compose, to_container
from deblur.data.datamodule import DeblurDataModule
from deblur.errors import UserError


@pytest.fixture(scope="session")
def thesis_augment() -> dict[str, dict[str, Any]]:
    """``data.augment`` of conf/data/_common.yaml as training composes it (plain dicts)."""
    return to_container(compose("train", []).data.augment)


@pytest.fixture()
def make_datamodule() -> Callable[..., DeblurDataModule]:
    """``make_datamodule(data, root, *overrides, task="paired", **keys)``: ``data=<data>``
    composed from conf/train.yaml with the command-line ``overrides`` and ``data.<key>=<value>``,
    instantiated as the entry points do. Hydra wraps an error of the constructor in an
    InstantiationException; the UserError inside it (what a person sees) is raised instead."""

    def make(
        data: str, root: Path | str | None, *overrides: str, task: str = "paired", **keys: Any
    ) -> DeblurDataModule:
        cfg = compose("train", [f"data={data}", *overrides])
        if root is not None:
            cfg.data.root = str(root)
        for key, value in keys.items():
            cfg.data[key] = value
        try:
            return instantiate(cfg.data, task=task)
        except InstantiationException as exc:
            if isinstance(exc.__cause__, UserError):
                raise exc.__cause__ from None
            raise

    return make
