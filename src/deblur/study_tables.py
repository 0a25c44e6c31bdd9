"""The thesis' Tables 4.1-4.4 regenerated from the runs, beside its published numbers.

Runs are found with :func:`deblur.runs.find_runs` and become one pandas row each; a table groups
its runs (``groupby`` over the table's fields) into cells of mean, sample std and n over the
finished seeds, on the full grid of the thesis (a cell without runs says ``missing``, never 0),
merged with ``experiments/thesis_tables.csv``. GAN tables get a ``blurred input`` reference row:
the input's own PSNR / SSIM against the sharp images, stored by every run. Rendering goes
through :mod:`deblur.render` (Markdown, LaTeX), ``DataFrame.to_csv`` and ``DataFrame.plot.bar``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from logging.handlers import BufferingHandler
from pathlib import Path
from typing import Any

import pandas as pd

from deblur.errors import UserError
from deblur.render import escape_latex, latex, markdown
from deblur.runs import RunRecord, find_runs

THESIS_CSV = Path(__file__).resolve().parents[2] / "experiments" / "thesis_tables.csv"
TABLE_IDS = ("4.1", "4.2", "4.3", "4.4")
INPUT = "input"  # the row key of the blurred-input reference row
INPUT_LABEL = "blurred input (no deblurring)"

# A run tagged with experiment=table4_N counts only in these tables (the thesis reused its
# pretrained-unfrozen runs in both 4.3 and 4.4); untagged runs count wherever they fit.
EXPERIMENT_TABLES = {
    "table4_1": {"4.1"},
    "table4_2": {"4.2"},
    "table4_3": {"4.3", "4.4"},
    "table4_4": {"4.3", "4.4"},
}
CHOICES = ("loss", "disc", "backbone", "gen", "data", "debug")
ROW_LABELS = {"none": "none (no discriminator)"}  # loss=none: content loss only


class TablesError(UserError, ValueError):
    """A user-facing problem with the inputs of the table script."""


@dataclass(frozen=True)
class Metric:
    """A reported metric: its key in metrics.json, its label and digits."""

    key: str
    label: str
    digits: int


PSNR, SSIM = Metric("val/psnr", "PSNR", 2), Metric("val/ssim", "SSIM", 4)
VAL_LOSS, ACCURACY = Metric("val/loss", "val loss", 3), Metric("val/acc", "accuracy %", 2)
# sharpness against the sharp image, a held-out judge classifier, D's ranking (issue 19): a GAN
# table shows each of these columns when one of its runs measured it
GRAD_ENERGY = Metric("val/grad_energy", "grad-energy ratio", 3)
HIGH_BAND = Metric("val/high_band", "high-band ratio", 3)
JUDGE = Metric("val/judge_blur", "judge P(blurred)", 3)
D_RANK = Metric("val/d_rank_acc", "D rank acc", 2)
GAN_EXTRA = (GRAD_ENERGY, HIGH_BAND, JUDGE, D_RANK)
METRICS = {m.key: m for m in (PSNR, SSIM, VAL_LOSS, ACCURACY, *GAN_EXTRA)}
# experiments/thesis_tables.csv's columns, renamed to our fields and metric keys
THESIS_NAMES = {"adv_loss": "loss", "disc_type": "disc", "disc_backbone": "backbone"}
THESIS_NAMES |= {
    "psnr": "val/psnr",
    "ssim": "val/ssim",
    "val_loss": "val/loss",
    "accuracy": "val/acc",
}


@dataclass(frozen=True)
class TableSpec:
    """How one thesis table groups runs: which runs (a pandas query), row fields, column field,
    metrics, and the fields that split it into blocks (variants)."""

    id: str
    title: str
    task: str
    select: str | None
    rows: tuple[str, ...]
    col: str | None
    metrics: tuple[Metric, ...]
    variant: tuple[str, ...] = ()
    col_order: tuple[str, ...] = ()
    extra: tuple[Metric, ...] = ()  # shown when a run of the table has them

    @property
    def keys(self) -> list[str]:
        """Fields of one cell: variant, rows, column (``_col`` when the table has none)."""
        return [*self.variant, *self.rows, self.col or "_col"]

    @property
    def input_row(self) -> bool:
        return self.task == "gan"


SPECS: dict[str, TableSpec] = {
    "4.1": TableSpec(
        "4.1",
        "Baselines: adversarial loss x discriminator type (discriminator trained from scratch)",
        "gan",
        "pretrained == 'no'",
        rows=("loss",),
        col="disc",
        metrics=(PSNR, SSIM),
        extra=GAN_EXTRA,
        variant=("gen", "backbone"),
        col_order=("single", "patch", "double"),
    ),
    "4.2": TableSpec(
        "4.2",
        "Blur classifier (sharp 0 / blurred 1) per backbone",
        "classifier",
        None,
        rows=("backbone",),
        col=None,
        metrics=(VAL_LOSS, ACCURACY),
    ),
    "4.3": TableSpec(
        "4.3",
        "GAN with a pretrained (classifier) vs a fresh discriminator, unfrozen",
        "gan",
        "frozen == 'no'",
        rows=("backbone", "loss"),
        col="pretrained",
        metrics=(PSNR, SSIM),
        extra=GAN_EXTRA,
        variant=("gen", "disc"),
        col_order=("no", "yes"),
    ),
    "4.4": TableSpec(
        "4.4",
        "GAN with a pretrained discriminator: unfrozen vs frozen",
        "gan",
        "pretrained == 'yes'",
        rows=("backbone", "loss"),
        col="frozen",
        metrics=(PSNR, SSIM),
        extra=GAN_EXTRA,
        variant=("gen", "disc"),
        col_order=("no", "yes"),
    ),
}


@dataclass
class Table:
    """A regenerated table: ``cells`` has one row per block, cell and metric (mean, std, n,
    status counts, state, thesis, text); ``runs`` one row per run that belongs to the table."""

    spec: TableSpec
    cells: pd.DataFrame
    runs: pd.DataFrame
    which: str
    notes: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def blocks(self) -> list[dict[str, str]]:
        """The variants (e.g. ``{"gen": ..., "backbone": ...}``), the one with most runs first."""
        if self.cells.empty:
            return []
        firsts = self.cells.drop_duplicates("block")
        return [{k: str(r[k]) for k in self.spec.variant} for _, r in firsts.iterrows()]


# ---------------------------------------------------------------- runs as a DataFrame


def _number(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out if math.isfinite(out) else math.nan


def _experiment(record: RunRecord) -> str:
    exp = record.choices.get("experiment")
    for item in record.overrides:
        key, _, value = str(item).lstrip("+~").partition("=")
        if key == "experiment" and value:
            exp = value
    return "" if exp in (None, "null", "None") else str(exp)


def _run_row(run_dir: Path, record: RunRecord, which: str) -> dict[str, Any]:
    choices = {k: str(v) for k, v in record.choices.items()}
    # the critic's flags are in the record from a GAN run's first write (runs.base_record)
    pretrained, frozen = bool(record.disc_pretrained), bool(record.disc_frozen)
    row: dict[str, Any] = {
        "path": str(run_dir),
        "status": record.status or "unknown",
        "task": record.task or "unknown",
        "seed": str(record.seed),
        "experiment": _experiment(record),
        "random_weights": record.pretrained_weights is False,
        "pretrained": "yes" if pretrained else "no",
        "frozen": "yes" if frozen else "no",
        "_col": "",
    }
    row |= {k: choices.get(k, "" if k == "debug" else "?") for k in CHOICES}
    values, inputs = getattr(record, which) or {}, record.input or {}
    row |= {key: _number(values.get(key)) for key in METRICS}
    row |= {f"{INPUT} {key}": _number(inputs.get(key)) for key in METRICS}
    return row


def read_runs(paths: Iterable[str | Path], which: str = "final") -> tuple[pd.DataFrame, list[str]]:
    """One row per run below ``paths`` (``which``: final or best metrics) and a note per
    metrics.json that could not be read."""
    folders = []
    for p in map(Path, paths):
        if not p.exists():
            raise TablesError(
                f"deblur.tables: {p} does not exist. Pass run or sweep folders written by "
                "`python -m deblur.train -m ...` (e.g. runs/table4_1), or set DEBLUR_RUNS."
            )
        folders.append(p.parent if p.is_file() else p)
    collect, logger = BufferingHandler(10**6), logging.getLogger("deblur.runs")
    collect.setLevel(logging.WARNING)  # deblur.runs warns about each unreadable metrics.json
    logger.addHandler(collect)
    try:
        found = find_runs(folders)
    finally:
        logger.removeHandler(collect)
    unique = {Path(d).resolve(): rec for d, rec in found}  # overlapping folders: once each
    rows = [_run_row(d, rec, which) for d, rec in unique.items()]
    columns = list(_run_row(Path("."), RunRecord(), which))
    problems = [f"skipped: {r.getMessage()}" for r in collect.buffer]
    return pd.DataFrame(rows, columns=columns), problems


def read_thesis(path: str | Path | None = None) -> pd.DataFrame:
    """experiments/thesis_tables.csv: the thesis' published numbers, one row per cell."""
    path = Path(path) if path is not None else THESIS_CSV
    if not path.is_file():
        raise TablesError(
            f"deblur.tables: the thesis' numbers {path} are missing. Restore "
            "experiments/thesis_tables.csv from the repository or pass --thesis PATH."
        )
    return pd.read_csv(path, dtype=str, keep_default_na=False).rename(columns=THESIS_NAMES)


# ---------------------------------------------------------------- grouping


def _thesis_cells(spec: TableSpec, thesis: pd.DataFrame) -> pd.DataFrame:
    """The thesis' numbers of ``spec`` in long form: rows..., col, metric, thesis."""
    mine = thesis[thesis["table"] == spec.id].assign(_col="")
    keys = spec.keys[len(spec.variant) :]
    metrics = [m.key for m in spec.metrics if m.key in mine.columns]  # the thesis has PSNR/SSIM
    long = mine.melt(id_vars=keys, value_vars=metrics, var_name="metric", value_name="thesis")
    return long.assign(thesis=pd.to_numeric(long["thesis"], errors="coerce"))


def _ordered(canonical: Iterable, present: Iterable) -> list:
    canonical = list(dict.fromkeys(canonical))
    return canonical + sorted(set(present) - set(canonical))


def _counts(runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per cell: runs by status (n_finished, n_failed, ...), finished seeds and data sets."""
    status = runs.groupby(keys)["status"].value_counts().unstack(fill_value=0)
    status.columns = [f"n_{c}" for c in status.columns]
    finished = runs[runs["status"] == "finished"]
    seeds = finished.groupby(keys)["seed"].agg(lambda s: ";".join(sorted(s)))
    data = runs.groupby(keys)["data"].agg(lambda s: ";".join(sorted(set(s))))
    return status.join(seeds.rename("seeds")).join(data.rename("data"))


def _stats(runs: pd.DataFrame, keys: list[str], columns: Mapping[str, str]) -> pd.DataFrame:
    """mean, sample std and n of every metric (``columns``: run column -> metric) per cell."""
    finished = runs.loc[runs["status"] == "finished", [*keys, *columns]].rename(columns=columns)
    long = finished.melt(id_vars=keys, value_vars=list(columns.values()), var_name="metric")
    long = long.dropna(subset=["value"])
    return long.groupby([*keys, "metric"])["value"].agg(mean="mean", std="std", n="count")


def _row_keys(frame: pd.DataFrame, spec: TableSpec) -> list[tuple[str, ...]]:
    return list(frame[list(spec.rows)].itertuples(index=False, name=None))


def _block(spec: TableSpec, runs: pd.DataFrame, thesis: pd.DataFrame, block: int) -> pd.DataFrame:
    """All cells of one variant: the thesis' grid plus what the runs add, x the metrics."""
    grid_keys, metrics = spec.keys[len(spec.variant) :], [m.key for m in spec.metrics]
    rows = _ordered(_row_keys(thesis, spec), _row_keys(runs, spec))
    cols = _ordered(spec.col_order or [""], runs[grid_keys[-1]])
    index = pd.MultiIndex.from_tuples(
        [(*r, c, m) for r in rows for c in cols for m in metrics], names=[*grid_keys, "metric"]
    )
    cells = pd.DataFrame(index=index).join(_stats(runs, grid_keys, {m: m for m in metrics}))
    cells = cells.join(_counts(runs, grid_keys)).reset_index()
    cells = cells.merge(thesis, on=[*grid_keys, "metric"], how="left")
    if spec.input_row:
        inputs = _stats(runs, [grid_keys[-1]], {f"{INPUT} {m}": m for m in metrics}).reset_index()
        for key in spec.rows:
            inputs[key] = INPUT
        cells = pd.concat([cells, inputs], ignore_index=True)
    for key in spec.variant:
        cells[key] = runs[key].iloc[0]
    cells["block"] = block
    return cells


def _state(cell: pd.Series, expected: bool) -> str:
    """ok | missing | not in thesis | running | failed | interrupted | no value."""
    if cell["n"] > 0:
        return "ok"
    if cell["row"] == INPUT:
        return "missing"
    if cell["n_runs"] == 0:
        return "missing" if expected else "not in thesis"
    if cell.get("n_running", 0):
        return "running"
    for status in ("failed", "interrupted"):
        if cell.get(f"n_{status}", 0):
            return status
    return "no value"


def _unfinished(cell: pd.Series) -> list[tuple[str, int]]:
    order = ("failed", "interrupted", "running")
    found = [(c[2:], int(cell[c])) for c in cell.index if c.startswith("n_") and c != "n_runs"]
    found = [(s, n) for s, n in found if s != "finished" and n]
    return sorted(found, key=lambda sn: (order.index(sn[0]) if sn[0] in order else 3, sn[0]))


def _text(cell: pd.Series) -> str:
    """'28.71 ± 0.12 (n=3)', '28.71 (n=1; 1 running)', 'failed (2)', 'missing' or '—'."""
    metric, state, unfinished = METRICS[cell["metric"]], cell["state"], _unfinished(cell)
    d = metric.digits
    if cell["row"] == INPUT:
        if state != "ok":
            return "—" if cell["metric"] == D_RANK.key else "missing"  # no D judges the input
        same = pd.isna(cell["std"]) or cell["std"] < 0.5 * 10**-d  # every run saw the same images
        return f"{cell['mean']:.{d}f}" if same else f"{cell['mean']:.{d}f} ± {cell['std']:.{d}f}"
    if state == "ok":
        spread = "" if cell["n"] < 2 else f" ± {cell['std']:.{d}f}"
        more = "".join(f"; {n} {s}" for s, n in unfinished)
        text = f"{cell['mean']:.{d}f}{spread} (n={int(cell['n'])}{more})"
    elif state == "missing":
        text = "missing"
    elif state == "not in thesis":
        text = "—"
    elif unfinished:
        text = ", ".join(f"{s} ({n})" for s, n in unfinished)
    else:
        text = f"no {metric.label} ({int(cell.get('n_finished', 0))} finished)"
    return text + (" †" if ";" in str(cell["data"]) else "")


def build_table(spec: TableSpec, runs: pd.DataFrame, thesis: pd.DataFrame, which: str) -> Table:
    """Group the runs that belong to ``spec`` into cells (one block per variant)."""
    belongs = runs["experiment"].map(lambda e: spec.id in EXPERIMENT_TABLES.get(e, TABLE_IDS))
    mine = runs.loc[(runs["task"] == spec.task) & belongs.astype(bool)]
    if spec.select:
        mine = mine.query(spec.select)
    measured = tuple(m for m in spec.extra if mine[m.key].notna().any())
    spec = dataclasses.replace(spec, metrics=spec.metrics + measured, extra=())
    published = _thesis_cells(spec, thesis)
    blocks = []
    if not mine.empty:
        variants = mine.groupby(list(spec.variant)) if spec.variant else [((), mine)]
        ordered = sorted(variants, key=lambda kv: -len(kv[1]))  # stable: ties in key order
        blocks = [_block(spec, members, published, i) for i, (_, members) in enumerate(ordered)]
    cells = pd.concat(blocks, ignore_index=True) if blocks else pd.DataFrame()
    if not cells.empty:
        for status in ("finished", "failed", "interrupted", "running"):
            cells[f"n_{status}"] = cells.get(f"n_{status}", 0)
        counts = [c for c in cells.columns if c.startswith("n_")]
        cells[counts] = cells[counts].fillna(0).astype(int)
        cells["n"] = cells["n"].fillna(0).astype(int)
        cells["n_runs"] = cells[counts].sum(axis=1)
        cells["row"] = cells[list(spec.rows)].agg(" / ".join, axis=1)
        cells.loc[cells[spec.rows[0]] == INPUT, "row"] = INPUT
        expected = cells.groupby(["block", *spec.keys[len(spec.variant) :]])["thesis"].transform(
            lambda s: s.notna().any()
        )
        cells["state"] = [_state(c, e) for (_, c), e in zip(cells.iterrows(), expected)]
        cells["text"] = cells.apply(_text, axis=1)
        cells["diff_vs_thesis"] = cells["mean"] - cells["thesis"]
    table = Table(spec, cells, mine.reset_index(drop=True), which)
    table.notes = _notes(table)
    return table


def _notes(table: Table) -> list[str]:
    runs = table.runs
    status = runs["status"].value_counts().sort_index()
    listing = ", ".join(f"{n} {s}" for s, n in status.items()) or "none"
    notes = [f"Runs: {len(runs)} ({listing})."]
    data = runs["data"].value_counts().sort_index()
    if len(data) == 1:
        notes.append(f"Data: {data.index[0]} (all runs).")
    elif len(data) > 1:
        mix = ", ".join(f"{d} ({n} runs)" for d, n in data.items())
        notes.append(f"Data: MIXTURE of {mix}; cells marked † average runs on different data.")
    if runs["random_weights"].sum():
        notes.append(
            f"{int(runs['random_weights'].sum())} run(s) used random instead of ImageNet "
            "weights (pretrained=false)."
        )
    for name, n in runs.loc[runs["debug"] != "", "debug"].value_counts().sort_index().items():
        notes.append(f"{n} run(s) are debug={name} runs (a few iterations): not results.")
    if set(data.index) - {"gopro"}:
        notes.append("The thesis' numbers are on GoPro: runs on other data are not comparable.")
    finished = runs[runs["status"] == "finished"]
    per_seed = finished.groupby([*table.spec.keys, "seed"]).size()
    for (*cell, seed), _ in per_seed[per_seed > 1].items():
        where = "/".join(str(c) for c in cell[len(table.spec.variant) :] if c)
        notes.append(f"Cell {where}: several finished runs with seed {seed}.")
    if (runs["loss"] == "none").any():
        notes.append(
            "loss=none: content loss only, no discriminator is built; its disc column is the "
            "run's (ignored) disc= choice."
        )
    return notes


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
    thesis = read_thesis(thesis_csv)
    out = {}
    for tid in tables or TABLE_IDS:
        out[tid] = build_table(SPECS[table_id(tid)], runs, thesis, which)
        out[tid].notes.extend(problems)
    return out


def table_id(text: str) -> str:
    """'4.1', 'table4_1', '4_1' -> '4.1'; anything else is a TablesError."""
    match = re.fullmatch(r"(?:table)?\s*4[._]?([1-4])", text.strip().lower())
    if not match:
        raise TablesError(
            f"deblur.tables: unknown table {text!r}; use 4.1, 4.2, 4.3 or 4.4 (comma separated)."
        )
    return f"4.{match.group(1)}"


# ---------------------------------------------------------------- rendering


def _variant_text(table: Table, block: int) -> str:
    return ", ".join(f"{k}={v}" for k, v in table.blocks[block].items())


def _wide(table: Table, block: int, texts: pd.Series) -> pd.DataFrame:
    """One block as rows x (column value, metric) of ``texts`` (one per cell), in table order."""
    spec = table.spec
    cells = table.cells.assign(text=texts)
    cells = cells[cells["block"] == block]
    cells["label"] = cells["row"].map(lambda r: INPUT_LABEL if r == INPUT else ROW_LABELS.get(r, r))
    labels = {m.key: m.label for m in spec.metrics}
    col = spec.col or "_col"
    cells["header"] = [
        f"{spec.col}={c} {labels[m]}" if spec.col else labels[m]
        for c, m in zip(cells[col], cells["metric"])
    ]
    wide = cells.pivot(index="label", columns="header", values="text")
    wide = wide.reindex(index=cells["label"].unique(), columns=cells["header"].unique())
    first = " / ".join(spec.rows)
    return wide.fillna("").rename_axis(index=first, columns=None).reset_index()


def _markdown_cells(table: Table) -> pd.Series:
    cells = table.cells
    thesis = cells.apply(lambda c: _thesis_text(c, "—"), axis=1)
    plain = (cells["row"] == INPUT) | (cells["state"] == "not in thesis")
    plain |= cells["metric"].isin([m.key for m in GAN_EXTRA])  # the thesis did not measure them
    suffix = (" · thesis " + thesis).where(~plain, "")
    return table.cells["text"] + suffix


def _thesis_text(cell: pd.Series, none: str) -> str:
    value = cell["thesis"]
    return none if pd.isna(value) else f"{value:.{METRICS[cell['metric']].digits}f}"


def render_markdown(tables: dict[str, Table], sources: Sequence[str | Path] = ()) -> str:
    """All tables as Markdown: each cell 'mean ± std (n) · thesis X'."""
    which = next(iter(tables.values())).which if tables else "final"
    stamp = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    out = [
        "# Thesis tables regenerated from metrics.json",
        "",
        f"Generated {stamp} from {', '.join(map(str, sources)) or 'the given runs'} "
        f"({which} validation metrics). Cells: mean ± sample std over the finished seeds (n) "
        "when n ≥ 2, the value (n=1) for one seed · the thesis' published single-run number. "
        "'missing' = no run of a cell the thesis has, '—' = neither a run nor a thesis number, "
        "'failed (n)' / 'running (n)' = no finished run yet. The blurred-input row is the input "
        "images' own PSNR / SSIM: what deblurring starts from.",
    ]
    for table in tables.values():
        out += ["", f"## Table {table.id}: {table.spec.title}", ""]
        if table.runs.empty:
            out.append(f"No runs for Table {table.id} under the given folders.")
            out += [f"- {n}" for n in table.notes[1:]]
            continue
        texts = _markdown_cells(table)
        for block in range(len(table.blocks)):
            if table.spec.variant:
                out += [f"Setup: {_variant_text(table, block)}", ""]
            out += [markdown(_wide(table, block, texts)), ""]
        out += [f"- {n}" for n in table.notes]
    return "\n".join(out) + "\n"


def _latex_cell(cell: pd.Series) -> str:
    d = METRICS[cell["metric"]].digits
    if cell["state"] == "not in thesis":
        return "--"
    if cell["state"] != "ok":
        value = r"\emph{" + escape_latex(cell["text"].replace(" †", "").replace("—", "--")) + "}"
    elif cell["row"] == INPUT:
        value = "$" + cell["text"].replace("±", r"\pm") + "$"
    elif cell["n"] < 2:
        value = f"${cell['mean']:.{d}f}$ ({cell['n']})"
    else:
        value = rf"${cell['mean']:.{d}f} \pm {cell['std']:.{d}f}$ ({cell['n']})"
    dagger = r"$^\dagger$" if ";" in str(cell["data"]) else ""
    thesis = "" if cell["row"] == INPUT else f" [{_thesis_text(cell, '--')}]"
    return f"{value}{dagger}{thesis}"


def render_latex(table: Table) -> str:
    r"""A booktabs table per block; cells '$mean \pm std$ (n) [thesis]'."""
    out = [f"% Table {table.id} regenerated by python -m deblur.tables ({table.which} metrics)"]
    texts = table.cells.apply(_latex_cell, axis=1)
    for block in range(len(table.blocks)):
        caption = f"Table {table.id}: {table.spec.title}"
        if table.spec.variant:
            caption += f" ({_variant_text(table, block)})"
        caption = escape_latex(caption) + r". Mean $\pm$ std over seeds (n) [thesis]."
        wide = _wide(table, block, texts)
        out.append(latex(wide, caption, escape_columns=(wide.columns[0],)))
    return "\n".join(out)


def render_csv(table: Table) -> str:
    """Tidy CSV: one line per cell and metric (mean, std, n, status, thesis, difference)."""
    spec, cells = table.spec, table.cells.copy()
    cells["table"] = spec.id
    cells["variant"] = [_variant_text(table, b) or "-" for b in cells["block"]]
    cells["status"] = cells["state"]
    cells["n_failed"] = cells["n_failed"] + cells["n_interrupted"]
    columns = ["table", "variant", "block", *spec.rows, *([spec.col] if spec.col else [])]
    columns += ["metric", "mean", "std", "n", "n_failed", "n_running", "status", "thesis"]
    columns += ["diff_vs_thesis", "seeds", "data"]
    return cells[columns].round(6).to_csv(index=False, lineterminator="\n")


def _grid(frame: pd.DataFrame, col: str, values: str) -> pd.DataFrame:
    """rows x columns of one block and metric, in table order."""
    rows, cols = frame["row"].unique(), frame[col].unique()
    return frame.pivot(index="row", columns=col, values=values).reindex(rows, columns=cols)


_LABEL = {"rotation": 90, "fontsize": 7, "ha": "center", "va": "bottom"}


def _plot(ax, table: Table, block: int, metric: Metric, legend: bool) -> None:
    from matplotlib.container import BarContainer

    spec, cells, col = table.spec, table.cells, table.spec.col or "_col"
    mine = cells[(cells["block"] == block) & (cells["metric"] == metric.key)]
    grid, inputs = mine[mine["row"] != INPUT], mine[mine["row"] == INPUT]
    name = {c: f"{spec.col}={c}" if spec.col else "ours" for c in grid[col]}
    means, stds = (_grid(grid, col, v).rename(columns=name) for v in ("mean", "std"))
    means.plot.bar(ax=ax, yerr=stds.fillna(0), capsize=3, rot=20, legend=False, width=0.8)
    thesis, state = _grid(grid, col, "thesis"), _grid(grid, col, "state")
    shown = [*means.stack().dropna(), *inputs["mean"].dropna(), *thesis.stack().dropna()]
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    for container, c in zip(bars, thesis.columns):
        for patch, r in zip(container.patches, thesis.index):
            x0, w = patch.get_x(), patch.get_width()
            if pd.notna(thesis.loc[r, c]):
                ax.plot([x0, x0 + w], [thesis.loc[r, c]] * 2, color="black", lw=2)
            if state.loc[r, c] not in ("ok", "not in thesis"):
                ax.text(
                    x0 + w / 2, 0.02, state.loc[r, c], transform=ax.get_xaxis_transform(), **_LABEL
                )
    for value in inputs["mean"].dropna():
        ax.axhline(value, color="grey", ls="--", lw=1)
    if shown:  # zoom on the values: PSNR differences of 0.1 dB vanish on a 0-based axis
        lo, hi = min(shown), max(shown)
        pad = max(hi - lo, abs(hi) * 0.01, 1e-3) * 0.5
        ax.set_ylim(lo - pad, hi + pad)
    variant = _variant_text(table, block)
    title = f"Table {table.id}: {metric.label} ({table.which})"
    ax.set_title(title + (f"\n{variant}" if variant else ""), fontsize=9)
    ax.set_xlabel("")
    ax.tick_params(axis="x", labelsize=8)
    ax.plot([], [], color="black", lw=2, label="thesis")
    if spec.input_row:
        ax.plot([], [], color="grey", ls="--", lw=1, label=INPUT_LABEL)
    if legend:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def render_png(table: Table, path: str | Path) -> Path:
    """Grouped bars per block and metric (``DataFrame.plot.bar``): our mean with a std error bar,
    black ticks = the thesis, dashed line = the blurred input, state text where a bar is missing."""
    from matplotlib.figure import Figure  # no pyplot state: any backend, no GUI

    nb, nm = len(table.blocks), len(table.spec.metrics)
    fig = Figure(figsize=(4.8 * nm + 1.5, 3.6 * nb), layout="constrained")
    axes = fig.subplots(nb, nm, squeeze=False)
    for b in range(nb):
        for i, metric in enumerate(table.spec.metrics):
            _plot(axes[b][i], table, b, metric, legend=i == nm - 1)
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path


def write_outputs(tables: dict[str, Table], out: str | Path, sources: Sequence = ()) -> list[Path]:
    """Write tables.md and, per table with runs, table4_N.csv / .tex / .png into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "tables.md"]
    written[0].write_text(render_markdown(tables, sources))
    for table in tables.values():
        if table.runs.empty:
            continue
        base = out / f"table{table.id.replace('.', '_')}"
        base.with_suffix(".csv").write_text(render_csv(table))
        base.with_suffix(".tex").write_text(render_latex(table))
        render_png(table, base.with_suffix(".png"))
        written += [base.with_suffix(s) for s in (".csv", ".tex", ".png")]
    return written
