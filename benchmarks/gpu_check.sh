#!/usr/bin/env bash
# The prepared GPU check of issue 20 (see benchmarks/README.md, "GPU check").
#
#   benchmarks/gpu_check.sh wheels                 # HERE, once: wheels the device lacks -> .whl/
#   git describe --always --dirty > .commit        # HERE, before each call (the device gets no .git)
#   benchmarks/gpu_check.sh [gpu_check.py options] # THERE (device tool, carry [".whl", ".commit"]):
#                                                  # install .whl/*.whl, run every phase into $OUT
#   benchmarks/gpu_check.sh --device cpu --tiny --out /tmp/c   # anywhere: checks the script
#
# The global deadline (gpu_check.py --deadline, 400 s) counts from this script's start, the
# wheel install included: the phases' budgets add up to 380 s.
#
# The device's python3 (3.12) has torch, Lightning, timm, OpenCV, scikit-image... but not Hydra,
# OmegaConf, antlr4 or albumentations (and albumentations' pydantic stack): `wheels` downloads
# exactly the versions installed in .venv, for CPython ${WHEEL_PYTHON:-3.12} on manylinux x86-64.
set -u
export GPU_CHECK_T0=${GPU_CHECK_T0:-$(date +%s)}   # the global deadline counts from here
export NO_ALBUMENTATIONS_UPDATE=1   # albumentations asks a package index for updates (2 s a process)
cd "$(dirname "$0")/.."

if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

# pure-Python or binary wheels the device lacks (names as pip knows them; versions from .venv)
NEEDED="hydra-core omegaconf albumentations albucore pydantic pydantic-core annotated-types \
typing-inspection typing-extensions stringzilla simsimd"

if [ "${1:-}" = wheels ]; then
  set -e
  pins=$("$PYTHON" - $NEEDED <<'PY'
import sys
from importlib.metadata import version
print(" ".join(f"{n}=={version(n)}" for n in sys.argv[1:]))
PY
)
  antlr=$("$PYTHON" -c "from importlib.metadata import version; print(version('antlr4-python3-runtime'))")
  rm -rf .whl && mkdir -p .whl
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "${WHEEL_PYTHON:-3.12}" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d .whl $pins
  # antlr4-python3-runtime 4.9.x is published as a source archive only: build its (pure) wheel
  "$PYTHON" -m pip wheel -q --no-deps -w .whl "antlr4-python3-runtime==$antlr"
  ls -1 .whl
  du -sh .whl
  echo "call the device tool with carry [\".whl\"] (see benchmarks/README.md)"
  exit 0
fi

# on the device: install the carried wheels where the python lacks them
if ! "$PYTHON" -c "import hydra, omegaconf, albumentations" 2>/dev/null; then
  if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "gpu_check.sh: $PYTHON lacks hydra / omegaconf / albumentations and there is no .whl/" \
      "folder. Run 'benchmarks/gpu_check.sh wheels' here first and call the device tool with" \
      "carry [\".whl\"]." >&2
    exit 2
  fi
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/deblur_site .whl/*.whl || exit 2
  export PYTHONPATH=/tmp/deblur_site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
exec "$PYTHON" benchmarks/gpu_check.py "$@"
