"""The run record (issue 13, item 2): metrics.json has one typed schema, RunRecord, read and
written only through it, and one run discovery, find_runs, behind every reader."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from deblur.checkpoints import CheckpointError
from deblur.models.load import load_classifier, load_generator
from deblur.runs import RunRecord, TrainResult, find_runs, read_metrics
from deblur.study.dashboard import run_folders
from deblur.study.tables import read_runs

# a metrics.json as the code before RunRecord wrote it for a finished GAN run (trimmed), with a key
# this version does not know
OLD_RECORD = {
    "status": "finished",
    "task": "gan",
    "choices": {"loss": "ragan", "disc": "double"},
    "seed": 0,
    "overrides": ["loss=ragan"],
    "disc_checkpoint": None,
    "final": {"val/psnr": 25.0, "val/ssim": 0.8},
    "input": {"val/psnr": 24.0, "val/ssim": 0.7},
    "wall_time_s": 12,
    "retired_field": {"kept": True},
}


def _write(folder, record) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(record))


def test_an_old_record_reads_and_keeps_what_it_does_not_know(tmp_path):
    """A flat record of earlier versions: its result fields move under ``result`` (the
    critic's disc_* under result.critic); a key this version does not know stays."""
    _write(tmp_path / "run", {**OLD_RECORD, "disc_frozen": True})
    rec = read_metrics(tmp_path / "run")
    assert rec.status == "finished" and rec.result.final["val/psnr"] == 25.0
    assert rec.wall_time_s == 12 and rec.result.critic.frozen is True
    assert rec.error is None and rec.result.best is None and rec.identity is None  # not recorded
    assert "error" not in rec.to_json() and "best" not in rec.to_json()["result"]
    with pytest.raises(TypeError):  # a typed record: attributes, no item access
        rec["seed"]  # noqa: B018
    assert rec.extra == {"retired_field": {"kept": True}}
    rec.write(tmp_path / "run")  # written back: the unknown key survives, null means absent
    again = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert again["retired_field"] == {"kept": True} and "disc_checkpoint" not in again
    kept = {k: OLD_RECORD[k] for k in ("final", "input")}
    assert again["result"] == {"critic": {"frozen": True}, **kept}
    assert read_metrics(tmp_path / "run").to_json() == again  # the nested form reads back


def test_the_result_of_a_task_this_version_does_not_know_is_kept(tmp_path):
    """A record of another task (a newer tool's): its result read and written back untouched."""
    _write(tmp_path / "run", {"status": "finished", "task": "future", "result": {"x": [1, 2]}})
    rec = read_metrics(tmp_path / "run")
    assert rec.result is None and rec.extra == {"result": {"x": [1, 2]}}
    rec.write(tmp_path / "run")
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["result"] == {"x": [1, 2]}


def test_a_field_of_the_wrong_type_is_skipped_naming_the_file_and_field(tmp_path, caplog):
    """A hand-edited record with a list where the metrics go used to crash the tables with an
    AttributeError; it is now skipped like broken JSON, with a note naming the field."""
    _write(tmp_path / "good", OLD_RECORD)
    _write(tmp_path / "bad", {**OLD_RECORD, "final": [25.0, 0.8]})
    with caplog.at_level(logging.WARNING, logger="deblur.runs"):
        found = find_runs([tmp_path])
    assert [d.name for d, _ in found] == ["good"]
    assert "field 'result.final' is an array in JSON, not an object" in caplog.text
    frame, problems = read_runs([tmp_path])
    assert len(frame) == 1 and len(problems) == 1
    assert str(tmp_path / "bad" / "metrics.json") in problems[0] and "'result.final'" in problems[0]


def test_only_schema_fields_can_be_set():
    rec = RunRecord(status="running", task="gan", result=TrainResult())
    rec.result.final = {"val/psnr": 1.0}
    assert rec.to_json()["result"] == {"final": {"val/psnr": 1.0}}
    with pytest.raises(AttributeError, match="fianl"):
        rec.result.fianl = {}
    with pytest.raises(AttributeError, match="imagesPerS"):
        rec.imagesPerS = 1.0
    assert not hasattr(rec, "imagesPerS")
    with pytest.raises(ValueError, match="'result.critic.frozen' is a string in JSON"):
        RunRecord.from_json({"task": "gan", "result": {"critic": {"frozen": "yes"}}})


def test_find_runs_follows_links_once_and_leaves_attempts_out(tmp_path):
    sweep = tmp_path / "elsewhere" / "sweep"
    _write(sweep / "a", OLD_RECORD)
    _write(sweep / "a" / "attempts" / "1", {**OLD_RECORD, "status": "failed"})
    _write(sweep / "b", {**OLD_RECORD, "seed": 1})
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "linked").symlink_to(sweep, target_is_directory=True)
    (sweep / "loop").symlink_to(sweep, target_is_directory=True)  # must not recurse forever
    found = [(d.relative_to(runs).as_posix(), r.seed) for d, r in find_runs([runs])]
    assert found == [("linked/a", 0), ("linked/b", 1)]
    events = sweep / "a" / "tb" / "events.out.tfevents.1.host.1.0"
    events.parent.mkdir()
    events.write_bytes(b"")
    (sweep / "a" / "attempts" / "1" / "tb").mkdir()
    (sweep / "a" / "attempts" / "1" / "tb" / events.name).write_bytes(b"")
    assert run_folders(runs) == {"linked/a": ["linked/a/tb"]}  # the dashboard's runs: the same


def test_checkpoints_of_a_finished_run_load_into_the_tools(finished_gan):
    run_dir, rec = finished_gan
    assert isinstance(rec, RunRecord) and rec.result.checkpoints["best"].endswith("best.ckpt")
    assert read_metrics(run_dir).to_json() == rec.to_json()  # what is written is what is read
    best = run_dir / "checkpoints" / "best.ckpt"
    gen = load_generator(best)
    x = torch.rand(1, 3, 40, 56) * 2 - 1
    padded = torch.nn.functional.pad(x, (0, 8, 0, 24), mode="reflect")
    with torch.no_grad():
        assert gen(padded).shape == (1, 3, 64, 64)
    with pytest.raises(CheckpointError, match=r"comes from a gan run.*python -m deblur\.predict"):
        load_classifier(best)
