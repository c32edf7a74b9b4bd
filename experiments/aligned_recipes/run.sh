#!/usr/bin/env bash
# The CPU recipes with five-point aligned crops vs today's centre crops, 3 seeds each, from one commit (only the
# crops differ: alignment=five_point aligns the LFW training images, pairsDevTest and CFP-FP; alignment=none keeps
# the 150 px centre crop / CFP fiducial box). Two streams at a time, one thread each.
# Usage: FACELEARN_DATA=... FACELEARN_MODELS=... bash experiments/aligned_recipes/run.sh  (from a scratch directory)
set -euo pipefail
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
PY=${PY:-python}
stream_a() {
  $PY -m facelearn.train -m +experiment=conventional_lfw_shallow alignment=none,five_point seed=1,2,3
  $PY -m facelearn.train -m +experiment=conventional_lfw alignment=none seed=1,2,3
}
stream_b() {
  $PY -m facelearn.train -m +experiment=sst_lfw alignment=none,five_point seed=1,2,3
  $PY -m facelearn.train -m +experiment=conventional_lfw alignment=five_point seed=1,2,3
}
stream_a > stream_a.log 2>&1 &
stream_b > stream_b.log 2>&1 &
wait
