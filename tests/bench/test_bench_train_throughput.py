"""benchmarks/train_throughput.py: the CPU smoke mode times the real systems and writes the table."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "train_throughput.py"


@pytest.fixture(scope="module")
def tt():
    """The benchmark script imported as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("train_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_throughput"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("train_throughput", None)


def test_smoke_mode_measures_every_step_and_appends_the_table(tt, tmp_path, capsys):
    out = tmp_path / "RESULTS.md"
    out.write_text("# Benchmark results\n\n## Data throughput\n\nkeep me\n")
    argv = ["--smoke", "--crop", "32", "--batch-sizes", "1", "--iters", "2", "--warmup", "1"]
    argv += ["--threads", "1"]  # one thread: robust when other jobs share the 2 cores
    rows = tt.main([*argv, "--infer-size", "64", "32", "--out", str(out)])

    steps = {r.step: r for r in rows}
    assert set(steps) == {"GAN train step", "classifier train step", "G inference (eval, no_grad)"}
    for r in rows:
        assert len(r.times_s) == 2 and all(t > 0 for t in r.times_s)
        assert r.images_per_s() > 0 and r.wall_images_per_s > 0
        assert r.peak_mib > 100  # RSS of a process holding torch and the models
        assert r.peak_flops > 1e8 and 0 < r.mfu < 1.5  # a step cannot beat a big matmul
    gan, clf = steps["GAN train step"], steps["classifier train step"]
    # Counted on the real step (G, two critics, VGG, backward): far more than the lone classifier.
    assert gan.flops_method == "counted" and clf.flops_method == "counted"
    assert gan.flops_per_image > 5 * clf.flops_per_image > 0

    text = out.read_text()
    assert text.index("## Data throughput") < text.index("## Training throughput")
    assert "keep me" in text and "smoke mode" in text and "torch " in text
    table = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert table[0] == tt.TABLE_HEAD
    assert len(table) == 1 + len(rows)
    for line in table[1:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == 12 and float(cells[5]) > 0  # img/s median
    assert re.search(r"\| GAN train step \| baseline fp32 \| 1 \| 32x32 \| 32-true \| \d", text)
    assert "GAN train step" in capsys.readouterr().out  # rows are also printed as they come


def test_append_section_inserts_before_the_next_section(tt, tmp_path):
    path = tmp_path / "R.md"
    path.write_text("# R\n\n## Training throughput\n\nold\n\n## Inference\n\nother\n")
    tt.append_section(path, "new block\n")
    text = path.read_text()
    assert text.index("old") < text.index("new block") < text.index("## Inference")
    assert text.endswith("other\n")

    fresh = tmp_path / "fresh.md"
    tt.append_section(fresh, "first")
    assert fresh.read_text() == "# Benchmark results\n\n## Training throughput\n\nfirst\n"


def test_matrix_switches_one_thing_at_a_time(tt):
    base = tt.matrix_variant("baseline")
    assert base.precision == "32-true" and "model.health_check_every=1" in base.overrides()
    bf16 = tt.matrix_variant("bf16")
    assert bf16.precision == "bf16-mixed"
    assert set(bf16.overrides()) - set(base.overrides()) == {"trainer.precision=bf16-mixed"}
    check = tt.matrix_variant("no_health_check")
    assert set(check.overrides()) - set(base.overrides()) == {"model.health_check_every=0"}
    every = tt.matrix_variant("all")
    assert every.channels_last and every.fused and every.health_check_every == 0
    assert not every.compile
    with pytest.raises(ValueError, match="unknown --variants entry 'bogus'"):
        tt.matrix_variant("bogus")


def test_images_per_s_quantiles(tt):
    row = tt.Row("s", "v", 2, "8x8", "32-true", [1.0, 2.0, 3.0, 4.0], 10.0, 1.0)
    assert row.images_per_s() == pytest.approx(2 / 2.5)
    assert row.images_per_s(0.9) > row.images_per_s() > row.images_per_s(0.1)
    assert row.wall_images_per_s == pytest.approx(0.8)
    assert row.mfu is None  # no FLOPs, no peak: no MFU


def test_threads_are_restored_after_a_run(tt, monkeypatch):
    import torch

    before = torch.get_num_threads()
    monkeypatch.setattr(tt, "_run", lambda args, log: (torch.get_num_threads(), ""))
    args = tt.parse_args(["--smoke", "--threads", "1"])
    assert tt.run(args) == (1, "")
    assert torch.get_num_threads() == before
