#!/bin/bash
# Pretrain, then fine-tune on shallow data, conventional vs SST (the SST supplementary's §1.3 setting), on CPU with
# LFW: no published arcface_torch weights can be downloaded here, so the "pretrained model" is our own, trained on
# the LFW people with >= 5 images (deep data) and loaded with init_from=; the fine-tuning data are 2 images of each
# person with 2-4 images (shallow data, disjoint people). pairsDevTest and CFP people are excluded from both, both
# are benchmarks. Arms on the same shallow set, seeds 1-3 (one pretrained model, seed 0):
#   conventional AM-softmax from the pretrained backbone (lr 0.01) | SST from it (lr 0.01) |
#   both from scratch (the recipes' lr 0.1), for reference.
#   bash experiments/finetune_lfw/run.sh OUT_DIR          (~25 min on an idle 2-core machine)
set -euo pipefail
out=$(realpath -m "$1"); mkdir -p "$out"
py=${PYTHON:-python}
cd "$out"
export FACELEARN_CACHE=${FACELEARN_CACHE:-$out/cache}
"$py" -m facelearn.train +experiment=conventional_lfw "benchmark=[lfw_devtest,cfp_fp]" \
  data.split.min_images_per_identity=5 seed=0 task_name=pretrain paths.log_dir="$out/pretrain" > pretrain.log 2>&1
ckpt=$(ls "$out"/pretrain/pretrain/runs/*/checkpoints/last.ckpt)
shallow=(data.split.max_images_per_identity=4)
for seed in 1 2 3; do
  for arm in conventional_lfw_shallow sst_lfw; do
    "$py" -m facelearn.train +experiment=$arm "${shallow[@]}" init_from="$ckpt" optimizer.lr=0.01 seed=$seed \
      task_name=${arm}_finetuned paths.log_dir="$out/finetuned" > ${arm}_finetuned_$seed.log 2>&1
    "$py" -m facelearn.train +experiment=$arm "${shallow[@]}" seed=$seed task_name=${arm}_scratch \
      paths.log_dir="$out/scratch" > ${arm}_scratch_$seed.log 2>&1
  done
done
