"""``python -m deblur.export ckpt=<gan .ckpt> format=torchscript|onnx out=<file>``: the generator
for any ``1 x 3 x H x W`` input, checked against PyTorch."""

from __future__ import annotations

from omegaconf import DictConfig

from deblur.config.cli import entry_point
from deblur.eval.export import run_export


@entry_point("export")
def main(cfg: DictConfig) -> None:
    run_export(cfg)


if __name__ == "__main__":
    main()
