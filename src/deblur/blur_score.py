"""``python -m deblur.blur_score ckpt=<classifier .ckpt> input=<file|folder|glob> output=x.csv``:
a 0..1 blur score per image; exit code 1 when no image could be scored."""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from deblur.config.cli import entry_point
from deblur.eval.blur_score import run_blur_score


@entry_point("blur_score")
def main(cfg: DictConfig) -> None:
    if not run_blur_score(cfg).scores:
        print("[deblur.blur_score] no image could be scored.", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
