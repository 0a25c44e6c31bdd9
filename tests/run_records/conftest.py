"""Run-record fixtures: one finished smoke GAN run shared by the tests of a session."""

from __future__ import annotations

import pytest

from entry_runs import run


@pytest.fixture(scope="session")
def finished_gan(tmp_path_factory, cache_dir):
    """A finished ``loss=ragan_ls disc=patch`` smoke run: (run_dir, its metrics)."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    rec = run("train", ["loss=ragan_ls", "disc=patch"], run_dir)
    assert rec.status == "finished", rec.error
    return run_dir, rec
