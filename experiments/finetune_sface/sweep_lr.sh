#!/usr/bin/env bash
# Learning-rate sweep of the fine-tuning recipes, one seed (0, not one of the seeded runs' 1-3), pairsDevTest only:
# conventional AM-softmax at 0.001 / 0.01 / 0.1 and SST at 0.01 / 0.1, two streams of one thread each; then the
# pretrained SFace itself on the benchmarks of the seeded runs (no fine-tuning; single pass as they are).
# Usage (from a scratch directory; FACELEARN_DATA / FACELEARN_MODELS / FACELEARN_CACHE set):
#   bash experiments/finetune_sface/sweep_lr.sh
set -euo pipefail
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
PY=${PY:-python}
here=$(cd "$(dirname "$0")" && pwd)
people=$here/lfw_shallow_people.txt
stream_a() {
  $PY -m facelearn.train -m +experiment=sface_lfw_shallow optimizer.lr=0.001,0.01,0.1 seed=0 benchmark=lfw_devtest \
    task_name=lr_sweep_conventional
  $PY -m facelearn.evaluate backbone=sface alignment=five_point flip_tta=false \
    "benchmark=[lfw_devtest,cfp_fp,cfp_ff,lfw_view2]" benchmark.lfw_view2.exclude_people="$people" \
    benchmark.lfw_view2.name=lfw_view2_unseen paths.output_dir="$PWD/pretrained"
}
stream_b() {
  $PY -m facelearn.train -m +experiment=sst_sface_lfw_shallow optimizer.lr=0.01,0.1 seed=0 benchmark=lfw_devtest \
    task_name=lr_sweep_sst
}
stream_a > stream_a.log 2>&1 &
stream_b > stream_b.log 2>&1 &
wait
