"""Run the real entry-point code inside the test process (composed config -> managed_run -> fit),
or an entry point as a subprocess. Importable from every test folder (pytest puts tests/ on the
path for the root conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from deblur.config import compose
from deblur.runs import RunRecord, managed_run


def run(
    config_name: str,
    overrides: list[str],
    run_dir: Path,
    callbacks: list | None = None,
    debug: str = "smoke",
) -> RunRecord:
    """Like ``python -m deblur.<entry> debug=<debug> ...`` with its run folder at ``run_dir``."""
    from deblur.systems.fit import fit

    cfg = compose(config_name, [f"debug={debug}", *overrides], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    task = "gan" if config_name == "train" else "classifier"
    return managed_run(
        cfg, task, lambda d, rec: fit(cfg, d, rec, extra_callbacks=callbacks), run_dir=run_dir
    )


SRC = Path(__file__).resolve().parents[1] / "src"


def cli(
    module: str,
    *args: str,
    runs: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 600,
    check: bool = False,
    **kw: Any,
) -> subprocess.CompletedProcess:
    """``python -m <module> <args>`` (the one command-line runner of the tests), with
    DEBLUR_RUNS=runs when given, this checkout's src/ first on the path and ``env`` added;
    returns the finished process (``check``: fail with its output unless it exited 0)."""
    full = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    full["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), full.get("PYTHONPATH")) if p)
    if runs is not None:
        full["DEBLUR_RUNS"] = str(runs)
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{module} {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n"
            f"{proc.stderr[-5000:]}"
        )
    return proc
