#!/usr/bin/env bash
# Issue 19 item 5: the CPU recipes re-measured with the deep branch live (no residual gate, an
# identity start by a zero last convolution), into $RUNS (default runs/deep). Results and the
# reading: experiments/cpu_study/deep_recipes.md. A relaunch skips finished runs.
#   bash experiments/cpu_study/deep_recipes.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-runs/deep}
STAGES=${STAGES:-"ten thirty"}
# the recipes' iteration counts decide the length (max_time raised so that a busy CPU does not cut
# a run short: "10 min" = 3200 iterations, "30 min" = 15000, as on the idle 2-core CPU)
deep="gen.residual_gate=false gen.identity_init=true gen.deep_branch=true
  data.embedded.train_blur=fresh model.ema_decay=0.999 trainer.max_time=00:02:00:00"
for stage in $STAGES; do
  echo "=== $stage $(date -u +%FT%TZ)"
  case $stage in
  ten)  # cpu_10min with the deep branch: no norm (the recipe's) and instance norm, lr_g 1e-4 / 4e-4
    "$PY" -m deblur.train -m experiment=cpu_10min $deep runs_dir="$RUNS" sweep_name=deep_10min \
      gen.norm=none,instance optim.lr_g=1e-4,4e-4 ;;
  thirty)  # cpu_30min with the deep branch back on (the recipe itself trains the filter only)
    "$PY" -m deblur.train -m experiment=cpu_30min $deep runs_dir="$RUNS" sweep_name=deep_30min \
      gen.norm="${NORM30:-none}" optim.lr_g="${LR30:-1e-4}" ;;
  esac
done
echo "=== done $(date -u +%FT%TZ)"
