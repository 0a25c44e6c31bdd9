"""``python -m deblur.dashboard [folders...] [--port 6006] [--latest]``: one TensorBoard over the
run or sweep folders (default: the latest sweep under ``${DEBLUR_RUNS:-runs}``)."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Sequence

from deblur.study import dashboard as board


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deblur.dashboard",
        description="TensorBoard over run or sweep folders (default: the latest sweep under "
        "${DEBLUR_RUNS:-runs}); runs are named by their folder, i.e. their choices.",
    )
    add = parser.add_argument
    add("folders", nargs="*", help="run or sweep folders")
    add("--port", type=int, help="default: 6006 or the next free port")
    add("--host", default="localhost", help="0.0.0.0 to serve other machines")
    add("--latest", action="store_true", help="only the latest sweep inside the given folders")
    add("--dry-run", action="store_true", help="print the runs and the command, start nothing")
    args = parser.parse_args(argv)
    try:
        logdir = board.resolve_logdir(args.folders, args.latest)
    except board.DashboardError as err:
        print(err, file=sys.stderr)
        return 2
    runs, no_events = board.run_folders(logdir), board.runs_without_events(logdir)
    print(f"TensorBoard over {logdir}: {len(runs)} run(s)", *(f"  {r}" for r in runs), sep="\n")
    if no_events:
        print(
            f"  ({len(no_events)} run(s) without TensorBoard events, not shown: trained without "
            "the tensorboard logger; add it next time with logger=[tensorboard,csv])"
        )
    if args.dry_run:
        print("tensorboard " + " ".join(board.tensorboard_argv(logdir, args.port, args.host)))
        return 0
    url = board.serve(logdir, args.port, args.host)
    print(f"TensorBoard at {url}  (Ctrl-C to stop)", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # so atexit removes a view folder
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
