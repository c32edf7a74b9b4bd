#!/usr/bin/env bash
# DM vs random sampling on five-point aligned LFW-deep (issue 21, item 3): the dm_lfw recipe with
# alignment=five_point, N_r = 27 (random) and 9 (DM), seeds 1-5, one run per call, in pairs of the same seed.
# As run (2-core CPU, one thread per process, two processes at a time beside the SST queue-0 runs): through
# experiments/finetune_sface/queue.sh with the job lines "bash dm.sh <N_r> <seed>" (dm.sh = this file's run()).
# Usage (from a scratch directory; FACELEARN_DATA / FACELEARN_MODELS / FACELEARN_CACHE set):
#   bash experiments/dm_real/run_aligned.sh          # all 10 runs, two at a time
set -euo pipefail
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
PY=${PY:-python}
run() {  # N_r seed
  $PY -m facelearn.train +experiment=dm_lfw alignment=five_point data.sampler.num_random=$1 seed=$2 \
    "benchmark=[lfw_oneshot,cfp_fp]" task_name=dm_lfw_aligned_nr$1 > logs_dm_nr$1_$2.log 2>&1
}
for s in 1 2 3 4 5; do run 27 $s & run 9 $s & wait; done
