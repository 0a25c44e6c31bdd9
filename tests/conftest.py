"""Shared fixtures: one small embedded dataset per session, runs in tmp folders, few threads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """DEBLUR_CACHE for the session: the embedded dataset is built once, into a temp folder."""
    path = tmp_path_factory.mktemp("deblur_cache")
    os.environ["DEBLUR_CACHE"] = str(path)
    return path


@pytest.fixture()
def runs_dir(tmp_path, cache_dir) -> Path:
    path = tmp_path / "runs"
    os.environ["DEBLUR_RUNS"] = str(path)
    return path
