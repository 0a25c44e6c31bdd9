#!/usr/bin/env bash
# Issue 19 item 5: the CPU recipes re-measured with the deep branch live (no residual gate, an
# identity start by a zero last convolution), into $RUNS (default runs/deep). Results and the
# reading: experiments/cpu_study/deep_recipes.md. A relaunch skips finished runs.
#   bash experiments/cpu_study/deep_recipes.sh        # STAGES="ten control eval" (measured)
#   STAGES=thirty bash experiments/cpu_study/deep_recipes.sh   # measured; STAGES=grid: not measured
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-runs/deep}
STAGES=${STAGES:-"ten control eval"}
# the recipes' iteration counts decide the length (max_time raised so that a busy CPU does not cut
# a run short: "10 min" = 3200 iterations, "30 min" = 15000, as on the idle 2-core CPU)
deep="gen.residual_gate=false gen.identity_init=true gen.deep_branch=true
  data.embedded.train_blur=fresh model.ema_decay=0.999 trainer.max_time=00:02:00:00"
for stage in $STAGES; do
  echo "=== $stage $(date -u +%FT%TZ)"
  case $stage in
  control)  # the published recipe (linear filter behind the gate), seed 0, as the paired control
    "$PY" -m deblur.train experiment=cpu_10min runs_dir="$RUNS" sweep_name=control_10min \
      trainer.max_time=00:02:00:00
    ckpt=$(ls -d "$RUNS"/control_10min/*/checkpoints/last.ckpt | head -1)
    "$PY" -m deblur.evaluate ckpt="'$ckpt'" runs_dir="$RUNS/eval" sweep_name=val_control device=cpu
    "$PY" -m deblur.evaluate ckpt="'$ckpt'" runs_dir="$RUNS/eval" sweep_name=newk_control \
      data.embedded.seed=7 split=all device=cpu ;;
  ten)  # cpu_10min with the deep branch, no norm, lr_g 1e-4: seed 0, then seeds 1 and 2
    "$PY" -m deblur.train -m experiment=cpu_10min $deep runs_dir="$RUNS" sweep_name=deep_10min \
      gen.norm=none optim.lr_g=1e-4
    "$PY" -m deblur.train -m experiment=cpu_10min $deep runs_dir="$RUNS" sweep_name=deep_10min \
      gen.norm=none optim.lr_g=1e-4 seed=1,2 ;;
  eval)  # each final checkpoint: the validation photos, and every photo with new kernels
    for ckpt in "$RUNS"/deep_10min/*gen.norm=none*optim.lr_g=0.0001,*/checkpoints/last.ckpt; do
      tag=$(echo "$ckpt" | grep -o "seed=[0-9]*" | tr -d = || echo seed0)
      "$PY" -m deblur.evaluate ckpt="'$ckpt'" runs_dir="$RUNS/eval" sweep_name="val_$tag" \
        device=cpu
      "$PY" -m deblur.evaluate ckpt="'$ckpt'" runs_dir="$RUNS/eval" sweep_name="newk_$tag" \
        data.embedded.seed=7 split=all device=cpu
    done
    "$PY" experiments/cpu_study/per_length.py "$RUNS"/eval/* ;;
  grid)  # the other cells of norm x lr (run 2 started, stopped for time: not reported)
    "$PY" -m deblur.train -m experiment=cpu_10min $deep runs_dir="$RUNS" sweep_name=deep_10min \
      gen.norm=none,instance optim.lr_g=1e-4,4e-4 ;;
  thirty)  # cpu_30min with the deep branch back on: ~50 min on the CPU (measured, see the .md)
    "$PY" -m deblur.train -m experiment=cpu_30min $deep runs_dir="$RUNS" sweep_name=deep_30min \
      gen.norm=none optim.lr_g=1e-4 ;;
  esac
done
echo "=== done $(date -u +%FT%TZ)"
