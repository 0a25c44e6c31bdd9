"""The logger group (issue 22): tensorboard, csv, wandb, mlflow, several at once as a Hydra list;
metrics.json does not depend on the choice."""

from __future__ import annotations

import importlib.util
import json

import pytest

from deblur.config import compose
from deblur.errors import UserError
from deblur.systems.fit import build_loggers
from entry_runs import run


def _events(run_dir):
    return list((run_dir / "tb").glob("events.out.tfevents.*"))


def _finished(run_dir, rec):
    assert rec.status == "finished", rec.error
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["result"]["final"] and m["result"]["history"]
    return m


def test_default_writes_tensorboard_events(tmp_path, cache_dir, capsys):
    _finished(tmp_path, run("train", [], tmp_path))
    assert _events(tmp_path) and not (tmp_path / "csv" / "metrics.csv").exists()
    assert "litlogger" not in capsys.readouterr().out


def test_csv_alone(tmp_path, cache_dir):
    _finished(tmp_path, run("train", ["logger=csv"], tmp_path))
    header = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "val/psnr" in header
    assert not _events(tmp_path)


def test_tensorboard_and_csv_together(tmp_path, cache_dir):
    _finished(
        tmp_path, run("train_classifier", ["backbone=nlayer", "logger=[tensorboard,csv]"], tmp_path)
    )
    assert _events(tmp_path) and (tmp_path / "csv" / "metrics.csv").is_file()


@pytest.mark.parametrize("name, pip", [("wandb", "wandb"), ("mlflow", "mlflow-skinny")])
def test_missing_logger_package_names_the_install(tmp_path, monkeypatch, name, pip):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda mod, *a: None if mod == name else real(mod, *a)
    )
    cfg = compose("train", [f"logger=[tensorboard,{name}]"])
    with pytest.raises(UserError, match=f"pip install {pip}"):
        build_loggers(cfg, tmp_path)


def test_mlflow_offline_file_store(tmp_path, cache_dir):
    """MLflow with a local file store in the run folder (mlflow-skinny is a dev dependency)."""
    pytest.importorskip("mlflow")
    _finished(tmp_path, run("train", ["logger=[tensorboard,mlflow]"], tmp_path))
    metric_files = [str(p) for p in (tmp_path / "mlruns").rglob("metrics/**/*") if p.is_file()]
    assert any(p.endswith("val/psnr") for p in metric_files), metric_files
    assert _events(tmp_path)
