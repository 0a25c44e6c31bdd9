"""``python -m deblur.tables runs/table4_1 [more folders] [--out DIR] [--which final|best]``: the
thesis' Tables 4.1-4.4 from the runs' ``metrics.json`` as ``tables.md`` (printed), ``table4_N.csv``
/ ``.tex`` / ``.png``; each cell the mean ± sample std over seeds with n, beside the thesis."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from deblur.study.report import write_outputs
from deblur.study.tables import TABLE_IDS, TablesError, build_tables, table_id


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deblur.tables",
        description="Regenerate the thesis' Tables 4.1-4.4 from the runs' metrics.json files.",
    )
    add = parser.add_argument
    add("paths", nargs="+", help="run or sweep folders (searched recursively)")
    add("--out", help="output folder (default: <first folder>/tables)")
    add("--which", choices=("final", "best"), default="final")
    add("--tables", default=",".join(TABLE_IDS), help="e.g. 4.1,4.3")
    add("--thesis", help="thesis numbers CSV (default experiments/thesis_tables.csv)")
    args = parser.parse_args(argv)
    try:
        ids = [table_id(t) for t in args.tables.split(",") if t.strip()]
        tables = build_tables(args.paths, args.which, ids, args.thesis)
    except TablesError as err:
        print(err, file=sys.stderr)
        return 2
    if not (found := any(not t.runs.empty for t in tables.values())):
        print(
            f"deblur.tables: no GAN or classifier metrics.json under {', '.join(args.paths)}. "
            "Train first (see experiments/README.md) or pass the folders the runs were written to.",
            file=sys.stderr,
        )
    first = Path(args.paths[0])
    out = Path(args.out) if args.out else (first.parent if first.is_file() else first) / "tables"
    written = write_outputs(tables, out, args.paths)
    sys.stdout.write(written[0].read_text())
    print(f"Wrote {', '.join(map(str, written))}", file=sys.stderr)
    return 0 if found else 1


if __name__ == "__main__":
    sys.exit(main())
