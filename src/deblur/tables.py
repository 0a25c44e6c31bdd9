"""Regenerate the thesis' Tables 4.1-4.4 from the runs' ``metrics.json`` files (no TensorBoard).

``python -m deblur.tables runs/table4_1 [more folders] [--out DIR] [--which final|best]``
prints Markdown and writes ``tables.md``, ``table4_N.csv``, ``table4_N.tex`` and ``table4_N.png``.
Each cell is the mean +- sample std over seeds with n, beside the thesis' published number.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import io
import json
import math
import re
import statistics
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

THESIS_CSV = Path(__file__).resolve().parents[2] / "experiments" / "thesis_tables.csv"
TABLE_IDS = ("4.1", "4.2", "4.3", "4.4")

# A run tagged with experiment=table4_N counts only in these tables (the thesis reused its
# pretrained-unfrozen runs in both 4.3 and 4.4); untagged runs count wherever they fit.
EXPERIMENT_TABLES = {
    "table4_1": {"4.1"},
    "table4_2": {"4.2"},
    "table4_3": {"4.3", "4.4"},
    "table4_4": {"4.3", "4.4"},
}


def _yes_no(value: Any) -> str:
    return "yes" if bool(value) else "no"


@dataclass(frozen=True)
class Run:
    """One run as read from its metrics.json."""

    path: Path
    status: str
    task: str
    choices: dict[str, str]
    seed: Any
    disc_pretrained: bool
    disc_frozen: bool
    experiment: str | None
    values: dict[str, float]
    input: dict[str, float]
    random_weights: bool = False

    def field(self, name: str) -> str:
        """The run's value of a table field (a config choice, or pretrained/frozen as yes/no)."""
        return FIELD_GETTERS.get(name, lambda r: str(r.choices.get(name, "?")))(self)


FIELD_GETTERS: dict[str, Callable[[Run], str]] = {
    "pretrained": lambda r: _yes_no(r.disc_pretrained),
    "frozen": lambda r: _yes_no(r.disc_frozen),
}


@dataclass(frozen=True)
class Metric:
    """A reported metric: its key in metrics.json, its label, digits and thesis CSV column."""

    key: str
    label: str
    digits: int
    thesis_column: str


PSNR = Metric("val/psnr", "PSNR", 2, "psnr")
SSIM = Metric("val/ssim", "SSIM", 4, "ssim")
VAL_LOSS = Metric("val/loss", "val loss", 3, "val_loss")
ACCURACY = Metric("val/acc", "accuracy %", 2, "accuracy")


@dataclass(frozen=True)
class TableSpec:
    """How one thesis table groups runs: which runs, row fields, column field, metrics."""

    id: str
    title: str
    task: str
    select: Callable[[Run], bool]
    rows: tuple[str, ...]
    col: str | None
    metrics: tuple[Metric, ...]
    variant: tuple[str, ...] = ()
    col_order: tuple[str, ...] = ()
    thesis_columns: dict[str, str] = field(default_factory=dict)
    input_row: bool = False

    @property
    def slug(self) -> str:
        return "table" + self.id.replace(".", "_")


SPECS: dict[str, TableSpec] = {
    "4.1": TableSpec(
        "4.1",
        "Baselines: adversarial loss x discriminator type (discriminator trained from scratch)",
        "gan",
        lambda r: not r.disc_pretrained,
        rows=("loss",),
        col="disc",
        metrics=(PSNR, SSIM),
        variant=("gen", "backbone"),
        col_order=("single", "patch", "double"),
        thesis_columns={"loss": "adv_loss", "disc": "disc_type"},
        input_row=True,
    ),
    "4.2": TableSpec(
        "4.2",
        "Blur classifier (sharp 0 / blurred 1) per backbone",
        "classifier",
        lambda r: True,
        rows=("backbone",),
        col=None,
        metrics=(VAL_LOSS, ACCURACY),
        thesis_columns={"backbone": "disc_backbone"},
    ),
    "4.3": TableSpec(
        "4.3",
        "GAN with a pretrained (classifier) vs a fresh discriminator, unfrozen",
        "gan",
        lambda r: not r.disc_frozen,
        rows=("backbone", "loss"),
        col="pretrained",
        metrics=(PSNR, SSIM),
        variant=("gen", "disc"),
        col_order=("no", "yes"),
        thesis_columns={
            "backbone": "disc_backbone",
            "loss": "adv_loss",
            "pretrained": "pretrained",
        },
    ),
    "4.4": TableSpec(
        "4.4",
        "GAN with a pretrained discriminator: unfrozen vs frozen",
        "gan",
        lambda r: r.disc_pretrained,
        rows=("backbone", "loss"),
        col="frozen",
        metrics=(PSNR, SSIM),
        variant=("gen", "disc"),
        col_order=("no", "yes"),
        thesis_columns={"backbone": "disc_backbone", "loss": "adv_loss", "frozen": "frozen"},
    ),
}


@dataclass(frozen=True)
class Stat:
    """Mean, sample std (None when n=1) and n of one metric over the finished runs of a cell."""

    mean: float
    std: float | None
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat | None:
        if not values:
            return None
        std = statistics.stdev(values) if len(values) > 1 else None
        return cls(statistics.fmean(values), std, len(values))

    def text(self, digits: int) -> str:
        std = "—" if self.std is None else f"{self.std:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {std} (n={self.n})"


@dataclass
class Cell:
    """The runs of one table cell, their per-metric statistics and the thesis' numbers."""

    runs: list[Run]
    stats: dict[str, Stat | None]
    thesis: dict[str, float | None]
    status: Counter

    @property
    def expected(self) -> bool:
        return bool(self.runs) or any(v is not None for v in self.thesis.values())

    @property
    def data(self) -> list[str]:
        return sorted({r.choices.get("data", "?") for r in self.runs})

    @property
    def seeds(self) -> list[Any]:
        return sorted((r.seed for r in self.runs if r.status == "finished"), key=str)

    @property
    def unfinished(self) -> list[tuple[str, int]]:
        """(status, count) of the runs that have no result: failed, interrupted, running, ..."""
        order = {"failed": 0, "interrupted": 1, "running": 2}
        items = [(s, n) for s, n in self.status.items() if s != "finished" and n]
        return sorted(items, key=lambda sn: (order.get(sn[0], 3), sn[0]))

    def state(self, metric: str) -> str:
        """ok | missing | not in thesis | failed | running | interrupted | no value."""
        if self.stats.get(metric) is not None:
            return "ok"
        if not self.runs:
            return "missing" if self.expected else "not in thesis"
        if self.status["running"]:
            return "running"
        return self.unfinished[0][0] if self.unfinished else "no value"

    def value_text(self, metric: Metric) -> str:
        """'28.71 ± 0.12 (n=3)', 'failed (2)', 'running (1)' or 'missing' (never 0)."""
        stat = self.stats.get(metric.key)
        if stat is not None:
            text = stat.text(metric.digits)
            if self.unfinished:
                text = text[:-1] + "; " + ", ".join(f"{n} {s}" for s, n in self.unfinished) + ")"
        elif not self.runs:
            text = "missing" if self.expected else "—"
        elif self.unfinished:
            text = ", ".join(f"{s} ({n})" for s, n in self.unfinished)
        else:
            text = f"no {metric.label} ({len(self.runs)} finished)"
        if len(self.data) > 1:
            text += " †"
        return text

    def thesis_text(self, metric: Metric) -> str:
        value = self.thesis.get(metric.key)
        return "—" if value is None else f"{value:.{metric.digits}f}"


@dataclass
class Block:
    """One table body: a variant (e.g. gen=..., backbone=...) with its rows x columns of cells."""

    variant: dict[str, str]
    rows: list[tuple[str, ...]]
    cols: list[str]
    cells: dict[tuple[tuple[str, ...], str], Cell]
    input_stats: dict[str, dict[str, Stat | None]] = field(default_factory=dict)

    def cell(self, row: str | tuple[str, ...], col: str = "") -> Cell:
        return self.cells[(row if isinstance(row, tuple) else (row,), col)]


@dataclass
class Table:
    """A regenerated thesis table: its spec, blocks (one per variant) and notes for the reader."""

    spec: TableSpec
    blocks: list[Block]
    runs: list[Run]
    which: str
    notes: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.spec.id

    def cell(self, row: str | tuple[str, ...], col: str = "", variant: int = 0) -> Cell:
        """Cell of row (a loss, a backbone, or a (backbone, loss) tuple) and column."""
        return self.blocks[variant].cell(row, col)

    @property
    def data(self) -> Counter:
        return Counter(r.choices.get("data", "?") for r in self.runs)


# ---------------------------------------------------------------- reading runs


class TablesError(ValueError):
    """A user-facing problem with the inputs of the table script."""


def _experiment(record: dict[str, Any]) -> str | None:
    exp = (record.get("choices") or {}).get("experiment")
    for item in record.get("overrides") or []:
        key, _, value = str(item).lstrip("+~").partition("=")
        if key == "experiment" and value:
            exp = value
    return str(exp) if exp not in (None, "null", "None") else None


def _number(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _numbers(section: Any) -> dict[str, float]:
    if not isinstance(section, dict):
        return {}
    out = {k: _number(v) for k, v in section.items()}
    return {k: v for k, v in out.items() if v is not None}


def _hydra_disc(path: Path) -> dict[str, Any]:
    """The run's composed ``disc`` config from .hydra/config.yaml ({} when absent)."""
    cfg_file = path.parent / ".hydra" / "config.yaml"
    try:
        import yaml

        disc = (yaml.safe_load(cfg_file.read_text()) or {}).get("disc")
    except (OSError, ImportError, ValueError, AttributeError):
        return {}
    return disc if isinstance(disc, dict) else {}


def read_run(path: Path, which: str = "final") -> Run:
    """Parse one metrics.json into a :class:`Run` (``which`` picks the final or best metrics)."""
    record = json.loads(path.read_text())
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    pretrained, frozen = record.get("disc_pretrained"), record.get("disc_frozen")
    if record.get("task") == "gan" and (pretrained is None or frozen is None):
        # a run that failed before recording them: read the composed config
        disc = _hydra_disc(path)
        ckpt = disc.get("checkpoint")
        pretrained = ckpt not in (None, "", "null") if pretrained is None else pretrained
        frozen = disc.get("frozen", False) if frozen is None else frozen
    return Run(
        path=path,
        status=str(record.get("status", "unknown")),
        task=str(record.get("task", "unknown")),
        choices={k: str(v) for k, v in (record.get("choices") or {}).items()},
        seed=record.get("seed"),
        disc_pretrained=bool(pretrained),
        disc_frozen=bool(frozen),
        experiment=_experiment(record),
        values=_numbers(record.get(which)),
        input=_numbers(record.get("input")),
        random_weights=record.get("pretrained_weights") is False,
    )


def find_runs(paths: Iterable[str | Path], which: str = "final") -> tuple[list[Run], list[str]]:
    """Every metrics.json below ``paths`` (folders or files), and a note per unreadable file."""
    files: dict[Path, None] = {}
    for p in map(Path, paths):
        if not p.exists():
            raise TablesError(
                f"deblur.tables: {p} does not exist. Pass run or sweep folders written by "
                "`python -m deblur.train -m ...` (e.g. runs/table4_1), or set DEBLUR_RUNS."
            )
        found = [p] if p.is_file() else sorted(p.rglob("metrics.json"))
        for f in found:
            if "attempts" in f.relative_to(p).parts:
                continue  # earlier attempts archived by deblur.runs on a re-launch
            files[f.resolve()] = None
    runs, problems = [], []
    for f in files:
        try:
            runs.append(read_run(f, which))
        except (OSError, ValueError) as err:
            problems.append(f"skipped unreadable {f} ({err})")
    return runs, problems


def read_thesis(path: str | Path | None = None) -> list[dict[str, str]]:
    """Rows of experiments/thesis_tables.csv (the thesis' published numbers)."""
    path = Path(path) if path is not None else THESIS_CSV
    if not path.is_file():
        raise TablesError(
            f"deblur.tables: the thesis' numbers {path} are missing. Restore "
            "experiments/thesis_tables.csv from the repository or pass --thesis PATH."
        )
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


# ---------------------------------------------------------------- building tables


def _thesis_lookup(spec: TableSpec, thesis: list[dict[str, str]]):
    """Map (row key, col) -> {metric key: published value}, plus the thesis' row order."""
    values: dict[tuple[tuple[str, ...], str], dict[str, float | None]] = {}
    rows: list[tuple[str, ...]] = []
    for line in thesis:
        if line.get("table") != spec.id:
            continue
        row = tuple(line.get(spec.thesis_columns[f], "") for f in spec.rows)
        col = line.get(spec.thesis_columns[spec.col], "") if spec.col else ""
        values[(row, col)] = {m.key: _number(line.get(m.thesis_column)) for m in spec.metrics}
        if row not in rows:
            rows.append(row)
    return values, rows


def _ordered(canonical: Sequence, present: Iterable) -> list:
    extras = sorted(set(present) - set(canonical))
    return list(canonical) + extras


def _block(
    spec: TableSpec, variant: dict[str, str], runs: list[Run], thesis_values, thesis_rows
) -> Block:
    row_keys = [tuple(r.field(f) for f in spec.rows) for r in runs]
    col_keys = [r.field(spec.col) if spec.col else "" for r in runs]
    rows = _ordered(thesis_rows, row_keys)
    cols = _ordered(spec.col_order if spec.col else ("",), col_keys)
    grouped: dict[tuple, list[Run]] = {}
    for run, row, col in zip(runs, row_keys, col_keys):
        grouped.setdefault((row, col), []).append(run)
    cells = {}
    for row in rows:
        for col in cols:
            members = grouped.get((row, col), [])
            finished = [r for r in members if r.status == "finished"]
            stats = {
                m.key: Stat.of([r.values[m.key] for r in finished if m.key in r.values])
                for m in spec.metrics
            }
            thesis = thesis_values.get((row, col), {m.key: None for m in spec.metrics})
            status = Counter(r.status for r in members)
            cells[(row, col)] = Cell(members, stats, dict(thesis), status)
    block = Block(variant, rows, cols, cells)
    if spec.input_row:
        for col in cols:
            finished = [r for r, c in zip(runs, col_keys) if c == col and r.status == "finished"]
            block.input_stats[col] = {
                m.key: Stat.of([r.input[m.key] for r in finished if m.key in r.input])
                for m in spec.metrics
            }
    return block


def build_table(
    spec: TableSpec, runs: list[Run], thesis: list[dict[str, str]], which: str = "final"
) -> Table:
    """Group the runs that belong to ``spec`` into cells (one block per variant)."""
    mine = [
        r
        for r in runs
        if r.task == spec.task
        and spec.select(r)
        and spec.id in EXPERIMENT_TABLES.get(r.experiment or "", set(TABLE_IDS))
    ]
    thesis_values, thesis_rows = _thesis_lookup(spec, thesis)
    variants: dict[tuple[str, ...], list[Run]] = {}
    for r in mine:
        variants.setdefault(tuple(r.field(f) for f in spec.variant), []).append(r)
    if not variants:
        variants[tuple("?" for _ in spec.variant)] = []
    blocks = [
        _block(spec, dict(zip(spec.variant, key)), members, thesis_values, thesis_rows)
        for key, members in sorted(variants.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    ]
    table = Table(spec, blocks, mine, which)
    table.notes.extend(_notes(table))
    return table


def _notes(table: Table) -> list[str]:
    notes = []
    status = Counter(r.status for r in table.runs)
    notes.append(
        f"Runs: {len(table.runs)} ({', '.join(f'{n} {s}' for s, n in sorted(status.items())) or 'none'})."
    )
    data = table.data
    if len(data) == 1:
        notes.append(f"Data: {next(iter(data))} (all runs).")
    elif data:
        listing = ", ".join(f"{d} ({n} runs)" for d, n in sorted(data.items()))
        notes.append(f"Data: MIXTURE of {listing}; cells marked † average runs on different data.")
    random = sum(r.random_weights for r in table.runs)
    if random:
        notes.append(f"{random} run(s) used random instead of ImageNet weights (pretrained=false).")
    smoke = Counter(r.choices["debug"] for r in table.runs if r.choices.get("debug"))
    for name, n in sorted(smoke.items()):
        notes.append(f"{n} run(s) are debug={name} runs (a few iterations): not results.")
    if set(data) - {"gopro"}:
        notes.append("The thesis' numbers are on GoPro: runs on other data are not comparable.")
    for block in table.blocks:
        for (row, col), cell in block.cells.items():
            seeds = Counter(str(r.seed) for r in cell.runs if r.status == "finished")
            dup = sorted(s for s, n in seeds.items() if n > 1)
            if dup:
                where = "/".join(row) + (f", {col}" if col else "")
                notes.append(f"Cell {where}: several finished runs with seed {', '.join(dup)}.")
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
    runs, problems = find_runs(paths, which)
    thesis = read_thesis(thesis_csv)
    out = {}
    for tid in tables or TABLE_IDS:
        out[tid] = build_table(SPECS[_table_id(tid)], runs, thesis, which)
        out[tid].notes.extend(problems)
    return out


def _table_id(text: str) -> str:
    match = re.fullmatch(r"(?:table)?\s*4[._]?([1-4])", text.strip().lower())
    if not match:
        raise TablesError(
            f"deblur.tables: unknown table {text!r}; use 4.1, 4.2, 4.3 or 4.4 (comma separated)."
        )
    return f"4.{match.group(1)}"


# ---------------------------------------------------------------- rendering


def _row_label(row: tuple[str, ...]) -> str:
    return " / ".join(row)


def _columns(table: Table, block: Block) -> list[tuple[str, Metric]]:
    return [(col, m) for col in block.cols for m in table.spec.metrics]


def _header(table: Table, block: Block) -> list[str]:
    spec = table.spec
    first = " / ".join(spec.rows)
    cols = [f"{f'{spec.col}={c} ' if spec.col else ''}{m.label}" for c, m in _columns(table, block)]
    return [first, *cols]


def _variant_text(block: Block) -> str:
    return ", ".join(f"{k}={v}" for k, v in block.variant.items())


def _markdown_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def render_markdown(tables: dict[str, Table], sources: Sequence[str | Path] = ()) -> str:
    """All tables as Markdown: each cell 'mean ± std (n) · thesis X'."""
    which = next(iter(tables.values())).which if tables else "final"
    stamp = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    out = [
        "# Thesis tables regenerated from metrics.json",
        "",
        f"Generated {stamp} from {', '.join(map(str, sources)) or 'the given runs'} "
        f"({which} validation metrics). Cells: mean ± sample std over seeds (n = finished runs; "
        "— when n=1) · the thesis' published single-run number. 'missing' = no run, "
        "'failed (n)' / 'running (n)' = no finished run yet.",
    ]
    for table in tables.values():
        out += ["", f"## Table {table.id}: {table.spec.title}", ""]
        if not table.runs:
            out.append(f"No runs for Table {table.id} under the given folders.")
            out += [f"- {n}" for n in table.notes[1:]]
            continue
        for block in table.blocks:
            if block.variant:
                out += [f"Setup: {_variant_text(block)}", ""]
            body = _body(table, block, _md_cell, _md_stat)
            out.append(_markdown_table(_header(table, block), body))
            out.append("")
        out += [f"- {n}" for n in table.notes]
    return "\n".join(out) + "\n"


def _md_cell(cell: Cell, metric: Metric) -> str:
    return f"{cell.value_text(metric)} · thesis {cell.thesis_text(metric)}"


def _md_stat(stat: Stat | None, metric: Metric) -> str:
    return stat.text(metric.digits) if stat else "missing"


def _body(
    table: Table,
    block: Block,
    fmt: Callable[[Cell, Metric], str],
    fmt_stat: Callable[[Stat | None, Metric], str],
    label: Callable[[str], str] = str,
) -> list[list[str]]:
    """Rows of cell texts; Table 4.1 gets a last row with the blurred input's own metrics."""
    columns = _columns(table, block)
    body = [
        [label(_row_label(row)), *(fmt(block.cells[(row, c)], m) for c, m in columns)]
        for row in block.rows
    ]
    if table.spec.input_row:
        stats = [fmt_stat(block.input_stats.get(c, {}).get(m.key), m) for c, m in columns]
        body.append([label("input (blurred, no deblurring)"), *stats])
    return body


def _stat_fields(stat: Stat | None) -> dict[str, Any]:
    return {
        "mean": None if stat is None else round(stat.mean, 6),
        "std": None if stat is None or stat.std is None else round(stat.std, 6),
        "n": 0 if stat is None else stat.n,
    }


def _csv_rows(table: Table) -> list[dict[str, Any]]:
    spec = table.spec
    rows = []
    for i, block in enumerate(table.blocks):
        base = {"table": spec.id, "variant": _variant_text(block) or "-", "block": i}
        for (row, col), cell in block.cells.items():
            keys = dict(zip(spec.rows, row)) | ({spec.col: col} if spec.col else {})
            for m in spec.metrics:
                stat, thesis = cell.stats.get(m.key), cell.thesis.get(m.key)
                diff = None if stat is None or thesis is None else round(stat.mean - thesis, 6)
                rows.append(
                    base
                    | keys
                    | {"metric": m.key}
                    | _stat_fields(stat)
                    | {
                        "n_failed": cell.status["failed"] + cell.status["interrupted"],
                        "n_running": cell.status["running"],
                        "status": cell.state(m.key),
                        "thesis": thesis,
                        "diff_vs_thesis": diff,
                        "seeds": ";".join(map(str, cell.seeds)),
                        "data": ";".join(cell.data),
                    }
                )
        for col, stats in block.input_stats.items():  # Table 4.1's blurred-input row
            keys = dict.fromkeys(spec.rows, "input") | {str(spec.col): col}
            for m in spec.metrics:
                stat = stats.get(m.key)
                status = {"status": "ok" if stat else "missing"}
                rows.append(base | keys | {"metric": m.key} | _stat_fields(stat) | status)
    return rows


def render_csv(table: Table) -> str:
    """Tidy CSV: one line per cell and metric (mean, std, n, status, thesis, difference)."""
    spec = table.spec
    fields = ["table", "variant", "block", *spec.rows, *([spec.col] if spec.col else [])]
    fields += ["metric", "mean", "std", "n", "n_failed", "n_running", "status", "thesis"]
    fields += ["diff_vs_thesis", "seeds", "data"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(_csv_rows(table))
    return buf.getvalue()


_TEX_ESCAPES = {"_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "$": r"\$"}


def _tex(text: str) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in text)


def _tex_stat(stat: Stat | None, metric: Metric) -> str:
    if stat is None:
        return r"\emph{missing}"
    std = "--" if stat.std is None else f"{stat.std:.{metric.digits}f}"
    return rf"${stat.mean:.{metric.digits}f} \pm {std}$ ({stat.n})"


def _tex_cell(cell: Cell, metric: Metric) -> str:
    stat = cell.stats.get(metric.key)
    if stat is None:
        text = cell.value_text(metric).replace(" †", "").replace("—", "--")
        value = r"\emph{" + _tex(text) + "}"
    else:
        value = _tex_stat(stat, metric)
    dagger = r"$^\dagger$" if len(cell.data) > 1 else ""
    return f"{value}{dagger} [{cell.thesis_text(metric).replace('—', '--')}]"


def render_latex(table: Table) -> str:
    r"""A booktabs tabular per block; cells '$mean \pm std$ (n) [thesis]'."""
    out = [f"% Table {table.id} regenerated by python -m deblur.tables ({table.which} metrics)"]
    for block in table.blocks:
        header = _header(table, block)
        caption = f"Table {table.id}: {table.spec.title}"
        if block.variant:
            caption += f" ({_variant_text(block)})"
        out += [
            r"\begin{table}[ht]",
            r"\centering",
            r"\caption{" + _tex(caption) + r". Mean $\pm$ std over seeds (n) [thesis].}",
            r"\begin{tabular}{l" + "c" * (len(header) - 1) + "}",
            r"\toprule",
            " & ".join(_tex(h) for h in header) + r" \\",
            r"\midrule",
        ]
        body = _body(table, block, _tex_cell, _tex_stat, label=_tex)
        out += [" & ".join(cells) + r" \\" for cells in body]
        out += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(out)


def _plot_metric(ax, table: Table, block: Block, metric: Metric, legend: bool) -> None:
    """Bars = our mean (error bar = std), black ticks = thesis, dashed = blurred input."""
    spec = table.spec
    width = 0.8 / len(block.cols)
    shown: list[float] = []
    for ci, col in enumerate(block.cols):
        label = f"{spec.col}={col}" if spec.col else "ours"
        for i, row in enumerate(block.rows):
            x = i + (ci - (len(block.cols) - 1) / 2) * width
            cell = block.cells[(row, col)]
            stat, thesis = cell.stats.get(metric.key), cell.thesis.get(metric.key)
            if thesis is not None:
                ax.plot([x - width / 2, x + width / 2], [thesis] * 2, color="black", lw=2)
                shown.append(thesis)
            if stat is None:
                state = cell.state(metric.key)
                if state != "not in thesis":
                    ax.text(
                        x,
                        0.02,
                        state,
                        rotation=90,
                        fontsize=7,
                        ha="center",
                        va="bottom",
                        transform=ax.get_xaxis_transform(),
                    )
                continue
            err = stat.std or 0.0
            ax.bar(x, stat.mean, width * 0.9, color=f"C{ci}", label=label)
            ax.errorbar(x, stat.mean, yerr=err, ecolor="dimgray", capsize=3, fmt="none")
            label = None
            shown += [stat.mean - err, stat.mean + err]
    for stats in block.input_stats.values():
        stat = stats.get(metric.key)
        if stat is not None:
            ax.axhline(stat.mean, color="grey", ls="--", lw=1)
            shown.append(stat.mean)
    if shown:  # zoom on the values: PSNR differences of 0.1 dB vanish on a 0-based axis
        lo, hi = min(shown), max(shown)
        pad = max(hi - lo, abs(hi) * 0.01, 1e-3) * 0.5
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_xticks(range(len(block.rows)))
    ax.set_xticklabels([_row_label(r) for r in block.rows], rotation=20, fontsize=8)
    title = f"Table {table.id}: {metric.label} ({table.which})"
    ax.set_title(title + (f"\n{_variant_text(block)}" if block.variant else ""), fontsize=9)
    ax.plot([], [], color="black", lw=2, label="thesis")
    if spec.input_row:
        ax.plot([], [], color="grey", ls="--", lw=1, label="blurred input")
    if legend:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def render_png(table: Table, path: str | Path) -> Path:
    """Grouped bar chart per block and metric with std error bars and the thesis' numbers."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    nb, nm = len(table.blocks), len(table.spec.metrics)
    fig = Figure(figsize=(4.8 * nm + 1.5, 3.6 * nb), layout="constrained")
    axes = fig.subplots(nb, nm, squeeze=False)
    for bi, block in enumerate(table.blocks):
        for mi, metric in enumerate(table.spec.metrics):
            _plot_metric(axes[bi][mi], table, block, metric, legend=mi == nm - 1)
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
        if not table.runs:
            continue
        base = out / table.spec.slug
        base.with_suffix(".csv").write_text(render_csv(table))
        base.with_suffix(".tex").write_text(render_latex(table))
        render_png(table, base.with_suffix(".png"))
        written += [base.with_suffix(s) for s in (".csv", ".tex", ".png")]
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: regenerate the tables from run or sweep folders."""
    parser = argparse.ArgumentParser(
        prog="python -m deblur.tables",
        description="Regenerate the thesis' Tables 4.1-4.4 from the runs' metrics.json files.",
    )
    parser.add_argument("paths", nargs="+", help="run or sweep folders (searched recursively)")
    parser.add_argument("--out", help="output folder (default: <first folder>/tables)")
    parser.add_argument("--which", choices=("final", "best"), default="final")
    parser.add_argument("--tables", default=",".join(TABLE_IDS), help="e.g. 4.1,4.3")
    parser.add_argument(
        "--thesis", help="thesis numbers CSV (default experiments/thesis_tables.csv)"
    )
    args = parser.parse_args(argv)
    try:
        ids = [_table_id(t) for t in args.tables.split(",") if t.strip()]
        tables = build_tables(args.paths, args.which, ids, args.thesis)
    except TablesError as err:
        print(err, file=sys.stderr)
        return 2
    found = any(t.runs for t in tables.values())
    if not found:
        print(
            f"deblur.tables: no GAN or classifier metrics.json under {', '.join(args.paths)}. "
            "Train first (see experiments/README.md) or pass the folders the runs were written to.",
            file=sys.stderr,
        )
    first = Path(args.paths[0])
    out = Path(args.out) if args.out else (first.parent if first.is_file() else first) / "tables"
    written = write_outputs(tables, out, args.paths)
    sys.stdout.write(written[0].read_text())
    print(f"Wrote {', '.join(str(p) for p in written)}", file=sys.stderr)
    return 0 if found else 1


if __name__ == "__main__":
    sys.exit(main())
