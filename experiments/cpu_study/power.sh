#!/usr/bin/env bash
# The CPU-scale study with the power to see the adversarial term (issue 19): every run of
# experiments/cpu_study/power.md, in order, into $RUNS (default runs/power). Idempotent: a
# finished run is skipped when relaunched (deblur.runs), so a cut-short study continues.
#   bash experiments/cpu_study/power.sh            # then: python experiments/cpu_study/power.py runs/power
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-runs/power}
SEEDS=${SEEDS:-0,1,2}
STAGES=${STAGES:-"judge control shares table4_1 classifiers table4_3"}
W_LSGAN=${W_LSGAN:-0.3}     # chosen from the control (the weight with a 20-30 % share)
gan() { "$PY" -m deblur.train -m experiment=cpu_power runs_dir="$RUNS" \
  model.judge_checkpoint="'$JUDGE'" "$@"; }
# Table 4.2's NLayer at the width of this study's D, at the demo's classifier scale (deblur.demo)
clf="experiment=table4_2 debug=demo backbone=nlayer backbone.ndf=32 backbone.patch_head_channels=64
  trainer.max_epochs=32 trainer.limit_train_batches=null trainer.check_val_every_n_epoch=4
  data.crop_size=128 data.batch_size=16"

for stage in $STAGES; do
  echo "=== $stage $(date -u +%FT%TZ)"
  case $stage in
  judge)  # a blur classifier of seed 100: judges every GAN's outputs, never a discriminator
    "$PY" -m deblur.train_classifier -m $clf seed=100 runs_dir="$RUNS" ;;
  classifiers)  # Table 4.2 (NLayer): the discriminators of Tables 4.3 / 4.4, one per seed
    "$PY" -m deblur.train_classifier -m $clf seed="$SEEDS" runs_dir="$RUNS" ;;
  esac
  JUDGE=$(ls "$RUNS"/table4_2/*seed=100*/checkpoints/best.ckpt | head -1)
  case $stage in
  control)  # the positive control: lsgan/patch at w = 0, 0.1, 0.3, 1, and loss=none, paired
    gan sweep_name=power_control model.adv_weight=0,0.1,0.3,1 seed="$SEEDS"
    gan sweep_name=power_control loss=none seed="$SEEDS" ;;
  shares)  # each loss's share of G's gradient at w = 0.1 (seed 0, 100 iterations)
    gan sweep_name=power_shares loss=gan,lsgan,ragan,ragan_ls,wgangp model.adv_weight=0.1 \
      trainer.max_epochs=10 trainer.check_val_every_n_epoch=10 seed=0 ;;
  table4_1)  # every loss at the weight that gives it lsgan's share at W_LSGAN (power.py --weights)
    while read -r loss w; do
      gan sweep_name=power_table4_1 loss="$loss" model.adv_weight="$w" seed="$SEEDS"
    done < <("$PY" experiments/cpu_study/power.py "$RUNS" --weights "$W_LSGAN")
    gan sweep_name=power_table4_1 loss=none seed="$SEEDS" ;;
  table4_3)  # Tables 4.3/4.4: single D (lsgan) fresh / pretrained / pretrained + frozen
    w=$("$PY" experiments/cpu_study/power.py "$RUNS" --weights "$W_LSGAN" | awk '$1=="lsgan"{print $2}')
    gan sweep_name=power_table4_3 loss=lsgan disc=single model.adv_weight="$w" seed="$SEEDS" \
      disc.checkpoint=null,auto
    gan sweep_name=power_table4_3 loss=lsgan disc=single model.adv_weight="$w" seed="$SEEDS" \
      disc.checkpoint=auto disc.frozen=true ;;
  esac
done
echo "=== done $(date -u +%FT%TZ)"
