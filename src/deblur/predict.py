"""``python -m deblur.predict ckpt=<gan .ckpt> input=<file|folder|glob|video> output=<folder>``;
exit code 1 when nothing could be processed."""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from deblur.config.cli import entry_point
from deblur.eval.predict import run_predict


@entry_point("predict")
def main(cfg: DictConfig) -> None:
    if run_predict(cfg).processed == 0:
        print("[deblur.predict] nothing could be processed.", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
