"""Thesis Tables 4.1-4.4 from the run records (a pandas row per run): mean, sample std and n of the
finished seeds per thesis cell (no run: ``missing``, never 0); GAN tables add the input's row."""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from logging.handlers import BufferingHandler
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from deblur.errors import UserError
from deblur.runs import Critic, RunRecord, find_runs

THESIS_CSV = Path(__file__).resolve().parents[3] / "experiments" / "thesis_tables.csv"
TABLE_IDS = ("4.1", "4.2", "4.3", "4.4")
INPUT, INPUT_LABEL = "input", "blurred input (no deblurring)"  # the reference row: key, label
# a run of experiment=table4_N counts only in these tables (4.3 and 4.4 share the pretrained
# unfrozen runs, as in the thesis); untagged runs count wherever they fit
EXPERIMENT_TABLES = {"table4_1": {"4.1"}, "table4_2": {"4.2"}} | dict.fromkeys(
    ("table4_3", "table4_4"), {"4.3", "4.4"}
)
CHOICES = ("loss", "disc", "backbone", "gen", "data", "debug")
UNFINISHED = ("failed", "interrupted", "running")  # the order a cell lists them in


class TablesError(UserError, ValueError):
    """A user-facing problem with the inputs of the table script."""


class Metric(NamedTuple):
    key: str  # in metrics.json
    label: str
    digits: int


PSNR, SSIM = Metric("val/psnr", "PSNR", 2), Metric("val/ssim", "SSIM", 4)
VAL_LOSS, ACCURACY = Metric("val/loss", "val loss", 3), Metric("val/acc", "accuracy %", 2)
D_RANK = Metric("val/d_rank_acc", "D rank acc", 2)
# sharpness, a held-out judge, D's ranking (issue 19): shown when measured; the thesis has none
GAN_EXTRA = (
    Metric("val/grad_energy", "grad-energy ratio", 3),
    Metric("val/high_band", "high-band ratio", 3),
    Metric("val/judge_blur", "judge P(blurred)", 3),
    D_RANK,
)
METRICS = {m.key: m for m in (PSNR, SSIM, VAL_LOSS, ACCURACY, *GAN_EXTRA)}
# experiments/thesis_tables.csv's columns, renamed to our fields and metric keys
THESIS_NAMES = {"adv_loss": "loss", "disc_type": "disc", "disc_backbone": "backbone"}
THESIS_NAMES |= {"psnr": PSNR.key, "ssim": SSIM.key, "val_loss": VAL_LOSS.key}
THESIS_NAMES |= {"accuracy": ACCURACY.key}


@dataclass(frozen=True)
class TableSpec:
    """One thesis table: its runs (a pandas query), row fields, column field and order, metrics
    (``extra``: shown when measured), the fields that split it in blocks (``variant``)."""

    id: str
    title: str
    select: str | None = None
    rows: tuple[str, ...] = ("backbone", "loss")
    col: str | None = None
    col_order: tuple[str, ...] = ("no", "yes")  # with a column: the thesis' column order
    variant: tuple[str, ...] = ("gen", "disc")
    task: str = "gan"
    metrics: tuple[Metric, ...] = (PSNR, SSIM)
    extra: tuple[Metric, ...] = GAN_EXTRA

    @property
    def grid(self) -> list[str]:  # the fields of a cell in a block (``_col``: no column)
        return [*self.rows, self.col or "_col"]


# fmt: off
SPECS = {spec.id: spec for spec in (
    TableSpec("4.1", "Baselines: adversarial loss x discriminator type (discriminator trained "
              "from scratch)", "pretrained == 'no'", rows=("loss",), col="disc",
              col_order=("single", "patch", "double"), variant=("gen", "backbone")),
    TableSpec("4.2", "Blur classifier (sharp 0 / blurred 1) per backbone", task="classifier",
              rows=("backbone",), variant=(), metrics=(VAL_LOSS, ACCURACY), extra=()),
    TableSpec("4.3", "GAN with a pretrained (classifier) vs a fresh discriminator, unfrozen",
              "frozen == 'no'", col="pretrained"),
    TableSpec("4.4", "GAN with a pretrained discriminator: unfrozen vs frozen",
              "pretrained == 'yes'", col="frozen"),
)}
# fmt: on


@dataclass
class Table:
    """``cells``: one row per block, cell and metric (mean, std, n, status counts, state, thesis,
    text); ``runs``: one row per run of the table."""

    spec: TableSpec
    cells: pd.DataFrame
    runs: pd.DataFrame
    which: str
    notes: list[str] = field(default_factory=list)

    @property
    def blocks(self) -> list[dict[str, str]]:
        """The variants (e.g. ``{"gen": ..., "backbone": ...}``), the one with most runs first."""
        firsts = self.cells.drop_duplicates("block") if len(self.cells) else self.cells
        return [{k: str(r[k]) for k in self.spec.variant} for _, r in firsts.iterrows()]

    def variant_text(self, block: int) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.blocks[block].items())


def _run_row(run_dir: Path, record: RunRecord, which: str) -> dict[str, Any]:
    choices = {k: str(v) for k, v in record.choices.items()}
    result = record.result  # a robustness result has no metrics, a classifier's no critic
    values, inputs = getattr(result, which, None) or {}, getattr(result, "input", None) or {}
    critic = getattr(result, "critic", None) or Critic()
    return {
        "path": str(run_dir),
        "status": record.status or "unknown",
        "task": record.task or "unknown",
        "seed": str(record.seed),
        "experiment": choices.get("experiment", ""),
        "random_weights": getattr(result, "pretrained_weights", None) is False,
        "pretrained": "yes" if critic.pretrained else "no",
        "frozen": "yes" if critic.frozen else "no",
        "_col": "",
        **{k: choices.get(k, "" if k == "debug" else "?") for k in CHOICES},
        **{key: values.get(key) for key in METRICS},
        **{f"{INPUT} {key}": inputs.get(key) for key in METRICS},
    }


def read_runs(paths: Iterable[str | Path], which: str = "final") -> tuple[pd.DataFrame, list[str]]:
    """One row per run below ``paths`` (``which``: final | best), a note per unreadable record."""
    paths = [Path(p) for p in paths]
    if missing := next((p for p in paths if not p.exists()), None):
        raise TablesError(
            f"deblur.tables: {missing} does not exist. Pass run or sweep folders written by "
            "`python -m deblur.train -m ...` (e.g. runs/table4_1), or set DEBLUR_RUNS."
        )
    collect, logger = BufferingHandler(10**6), logging.getLogger("deblur.runs")
    collect.setLevel(logging.WARNING)  # deblur.runs warns about each unreadable metrics.json
    logger.addHandler(collect)
    try:
        found = find_runs([p.parent if p.is_file() else p for p in paths])
    finally:
        logger.removeHandler(collect)
    unique = {Path(d).resolve(): rec for d, rec in found}  # overlapping folders: once each
    rows = [_run_row(d, rec, which) for d, rec in unique.items()]
    frame = pd.DataFrame(rows, columns=list(_run_row(Path("."), RunRecord(), which)))
    numbers = [*METRICS, *(f"{INPUT} {key}" for key in METRICS)]
    values = frame[numbers].apply(pd.to_numeric, errors="coerce")
    frame[numbers] = values.where(values.abs() < math.inf)  # not a number, inf: NaN
    return frame, [f"skipped: {r.getMessage()}" for r in collect.buffer]


def _ordered(canonical: Iterable, present: Iterable) -> list:
    canonical = list(dict.fromkeys(canonical))
    return canonical + sorted(set(present) - set(canonical))


def _stats(runs: pd.DataFrame, keys: list[str], columns: dict[str, str]) -> pd.DataFrame:
    """mean, sample std and n of every metric (``columns``: run column -> metric) per cell."""
    finished = runs.loc[runs["status"] == "finished", [*keys, *columns]].rename(columns=columns)
    long = finished.melt(id_vars=keys, value_vars=list(columns.values()), var_name="metric")
    long = long.dropna(subset=["value"])
    return long.groupby([*keys, "metric"])["value"].agg(mean="mean", std="std", n="count")


def _counts(runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per cell: runs by status (n_finished, n_failed, ...), finished seeds and data sets."""
    status = runs.groupby(keys)["status"].value_counts().unstack(fill_value=0).add_prefix("n_")
    finished = runs[runs["status"] == "finished"]
    seeds = finished.groupby(keys)["seed"].agg(lambda s: ";".join(sorted(s)))
    data = runs.groupby(keys)["data"].agg(lambda s: ";".join(sorted(set(s))))
    return status.join(seeds.rename("seeds")).join(data.rename("data"))


def _block(spec: TableSpec, runs: pd.DataFrame, thesis: pd.DataFrame, block: int) -> pd.DataFrame:
    """All cells x metrics of one variant: the thesis' grid (long form) and what the runs add."""
    grid, metrics = spec.grid, [m.key for m in spec.metrics]
    row_keys = [list(f[list(spec.rows)].itertuples(index=False, name=None)) for f in (thesis, runs)]
    cols = _ordered(spec.col_order if spec.col else [""], runs[grid[-1]])
    index = pd.MultiIndex.from_tuples(
        [(*r, c, m) for r in _ordered(*row_keys) for c in cols for m in metrics],
        names=[*grid, "metric"],
    )
    cells = pd.DataFrame(index=index).join(_stats(runs, grid, {m: m for m in metrics}))
    cells = cells.join(_counts(runs, grid)).reset_index()
    cells = cells.merge(thesis, on=[*grid, "metric"], how="left")
    if spec.task == "gan":
        inputs = _stats(runs, grid[-1:], {f"{INPUT} {m}": m for m in metrics}).reset_index()
        cells = pd.concat([cells, inputs.assign(**dict.fromkeys(spec.rows, INPUT))])
    return cells.assign(**{k: runs[k].iloc[0] for k in spec.variant}, block=block)


def _describe(cell: pd.Series, expected: bool) -> tuple[str, str]:
    """(state, text) of a cell: ok '28.71 ± 0.12 (n=3)' / '28.71 (n=1; 1 running)', missing,
    not in thesis '—', running / failed / interrupted 'failed (2)', no value."""
    metric, n = METRICS[cell["metric"]], int(cell["n"])
    mean, std = (f"{cell[k]:.{metric.digits}f}" for k in ("mean", "std"))
    if cell["row"] == INPUT:  # every run saw the same images: no spread
        if not n:
            return "missing", "—" if metric == D_RANK else "missing"  # no D judges the input
        same = pd.isna(cell["std"]) or cell["std"] < 0.5 * 10**-metric.digits
        return "ok", mean if same else f"{mean} ± {std}"
    if not cell["n_runs"]:
        return ("missing", "missing") if expected else ("not in thesis", "—")
    dagger = " †" if ";" in str(cell["data"]) else ""  # runs on different data sets
    others = [c[2:] for c in cell.index if c.startswith("n_") and c not in ("n_runs", "n_finished")]
    unfinished = [(s, int(cell[f"n_{s}"])) for s in _ordered(UNFINISHED, others) if cell[f"n_{s}"]]
    if n:
        spread, more = f" ± {std}" if n >= 2 else "", "".join(f"; {k} {s}" for s, k in unfinished)
        return "ok", f"{mean}{spread} (n={n}{more}){dagger}"
    state = next((s for s in ("running", "failed", "interrupted") if cell[f"n_{s}"]), "no value")
    text = ", ".join(f"{s} ({k})" for s, k in unfinished)
    return state, (text or f"no {metric.label} ({int(cell['n_finished'])} finished)") + dagger


def _finish(cells: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    """The cells with their run counts, row label, state, text and difference to the thesis."""
    every = ["n_finished", *(f"n_{s}" for s in UNFINISHED)]
    cells = cells.reindex(columns=list(dict.fromkeys([*cells.columns, *every])))
    counts = [c for c in cells.columns if c.startswith("n_")]
    cells[[*counts, "n"]] = cells[[*counts, "n"]].fillna(0).astype(int)
    cells["n_runs"] = cells[counts].sum(axis=1)
    cells["row"] = cells[list(spec.rows)].agg(" / ".join, axis=1)
    cells.loc[cells[spec.rows[0]] == INPUT, "row"] = INPUT
    grid = cells.groupby(["block", *spec.grid])["thesis"]
    expected = grid.transform(lambda s: s.notna().any())
    described = [_describe(c, e) for (_, c), e in zip(cells.iterrows(), expected)]
    cells["state"], cells["text"] = zip(*described)
    return cells.assign(diff_vs_thesis=cells["mean"] - cells["thesis"])


def build_table(spec: TableSpec, runs: pd.DataFrame, thesis: pd.DataFrame, which: str) -> Table:
    """Group the runs that belong to ``spec`` into cells (one block per variant)."""
    belongs = runs["experiment"].map(lambda e: spec.id in EXPERIMENT_TABLES.get(e, TABLE_IDS))
    mine = runs.loc[(runs["task"] == spec.task) & belongs.astype(bool)]
    mine = mine.query(spec.select) if spec.select else mine
    measured = tuple(m for m in spec.extra if mine[m.key].notna().any())
    spec = dataclasses.replace(spec, metrics=spec.metrics + measured, extra=())
    published = thesis[thesis["table"] == spec.id].assign(_col="")
    present = [m.key for m in spec.metrics if m.key in published.columns]  # thesis: PSNR/SSIM
    published = published.melt(spec.grid, present, var_name="metric", value_name="thesis")
    published["thesis"] = pd.to_numeric(published["thesis"], errors="coerce")
    variants = mine.groupby(list(spec.variant)) if spec.variant else [((), mine)]
    ordered = sorted(variants, key=lambda kv: -len(kv[1])) if len(mine) else []  # stable sort
    blocks = [_block(spec, members, published, i) for i, (_, members) in enumerate(ordered)]
    cells = _finish(pd.concat(blocks, ignore_index=True), spec) if blocks else pd.DataFrame()
    table = Table(spec, cells, mine.reset_index(drop=True), which)
    table.notes = _notes(table)
    return table


def _notes(table: Table) -> list[str]:
    runs, spec = table.runs, table.spec
    status, data = (runs[k].value_counts().sort_index() for k in ("status", "data"))
    listing = ", ".join(f"{n} {s}" for s, n in status.items()) or "none"
    notes = [f"Runs: {len(runs)} ({listing})."]
    add = notes.append
    if len(data) == 1:
        add(f"Data: {data.index[0]} (all runs).")
    elif len(data) > 1:
        mix = ", ".join(f"{d} ({n} runs)" for d, n in data.items())
        add(f"Data: MIXTURE of {mix}; cells marked † average runs on different data.")
    if n_random := int(runs["random_weights"].sum()):
        add(f"{n_random} run(s) used random instead of ImageNet weights (pretrained=false).")
    for name, n in runs.loc[runs["debug"] != "", "debug"].value_counts().sort_index().items():
        add(f"{n} run(s) are debug={name} runs (a few iterations): not results.")
    if set(data.index) - {"gopro"}:
        add("The thesis' numbers are on GoPro: runs on other data are not comparable.")
    finished = runs[runs["status"] == "finished"]
    per_seed = finished.groupby([*spec.variant, *spec.grid, "seed"]).size()
    for (*cell, seed), _ in per_seed[per_seed > 1].items():
        where = "/".join(str(c) for c in cell[len(spec.variant) :] if c)
        add(f"Cell {where}: several finished runs with seed {seed}.")
    if (runs["loss"] == "none").any():
        add(
            "loss=none: content loss only, no discriminator is built; its disc column is the "
            "run's (ignored) disc= choice."
        )
    return notes


def table_id(text: str) -> str:
    """'4.1', 'table4_1', '4_1' -> '4.1'; anything else is a TablesError."""
    if not (match := re.fullmatch(r"(?:table)?\s*4[._]?([1-4])", text.strip().lower())):
        raise TablesError(
            f"deblur.tables: unknown table {text!r}; use 4.1, 4.2, 4.3 or 4.4 (comma separated)."
        )
    return f"4.{match.group(1)}"


def build_tables(
    paths: Iterable[str | Path],
    which: str = "final",
    tables: Iterable[str] | None = None,
    thesis_csv: str | Path | None = None,
) -> dict[str, Table]:
    """Tables 4.1-4.4 (or those in ``tables``) from every metrics.json below ``paths``."""
    if which not in ("final", "best"):
        raise TablesError(f"deblur.tables: which={which!r}; use 'final' or 'best'.")
    runs, problems = read_runs(paths, which)
    path = Path(thesis_csv) if thesis_csv is not None else THESIS_CSV
    if not path.is_file():
        raise TablesError(
            f"deblur.tables: the thesis' numbers {path} are missing. Restore "
            "experiments/thesis_tables.csv from the repository or pass --thesis PATH."
        )
    thesis = pd.read_csv(path, dtype=str, keep_default_na=False).rename(columns=THESIS_NAMES)
    out = {t: build_table(SPECS[table_id(t)], runs, thesis, which) for t in tables or TABLE_IDS}
    for table in out.values():
        table.notes.extend(problems)
    return out
