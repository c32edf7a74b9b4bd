#!/bin/bash
# Partial FC on real faces (issue 15): conventional_lfw (CosFace, small CNN, 25 epochs) with the full classifier vs
# Partial FC at sample rate 0.1 (each step's softmax over the batch's classes + random others, 479 of 4,786 columns)
# in one process; then the same two on 2 gloo ranks (64 images per rank = the same global batch of 128; same
# per-rank batches and BatchNorm in both), seeds 1-3.  Seeds are interleaved so a cut-short run holds paired seeds.
#   bash experiments/partial_fc/run.sh OUT_DIR      (~4 min per 1-process run, ~7 per 2-rank run, idle 2 cores)
set -euo pipefail
out=$(realpath -m "$1"); mkdir -p "$out"
py=${PYTHON:-python}
cd "$out"
export FACELEARN_CACHE=${FACELEARN_CACHE:-$out/cache}
recipe=(+experiment=conventional_lfw)
pfc=(classifier=partial_fc classifier.sample_rate=0.1)
for seed in 1 2 3; do
  "$py" -m facelearn.train "${recipe[@]}" seed=$seed paths.log_dir="$out/full" > full_$seed.log 2>&1
  "$py" -m facelearn.train "${recipe[@]}" "${pfc[@]}" seed=$seed paths.log_dir="$out/pfc" > pfc_$seed.log 2>&1
  OMP_NUM_THREADS=1 "$py" -m facelearn.train "${recipe[@]}" "${pfc[@]}" trainer=ddp data.batch_size=64 seed=$seed \
    paths.log_dir="$out/pfc_ddp" > pfc_ddp_$seed.log 2>&1
  OMP_NUM_THREADS=1 "$py" -m facelearn.train "${recipe[@]}" trainer=ddp data.batch_size=64 seed=$seed \
    paths.log_dir="$out/full_ddp" > full_ddp_$seed.log 2>&1
done
