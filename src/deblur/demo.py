"""``make demo``: the whole study at demo scale on the embedded data, on a CPU, offline.

The runs of :func:`deblur.study.demo.steps` (Tables 4.2, 4.1, 4.4; ``--study``:
experiments/cpu_study, 3 seeds, 4.3 too), then Table 4.1 and which cells beat the blurred input.
Re-running skips finished runs."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from deblur.study.demo import run_demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--runs-dir", default=None, help="default runs/demo (runs/cpu_study)")
    add("--scale", default="demo", help="debug=<scale> option (demo or smoke)")
    add("--seeds", default=None, help="comma-separated (demo: 0; study: 0,1,2)")
    add("--study", action="store_true", help="the CPU-scale study (3 seeds, 4.3)")
    add("--overwrite", action="store_true", help="re-run finished runs")
    args = parser.parse_args(argv)
    default_dir = "runs/cpu_study" if args.study else "runs/demo"
    runs = Path(args.runs_dir or os.environ.get("DEBLUR_DEMO_RUNS", default_dir))
    seeds = args.seeds or ("0,1,2" if args.study else "0")
    failures = run_demo(args.scale, runs, seeds, args.study, args.overwrite)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
