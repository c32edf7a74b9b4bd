#!/bin/bash
# IDA-R / IDA-L vs cosine on the final checkpoints of training runs (issue 13): CFP-FP and LFW pairsDevTest, real-db
# anchors (IDA-R and IDA-L) and fc-weights anchors (IDA-R), k = 10, tau = 1. Each evaluation writes its own run dir
# under logs/evaluate/runs/ (evaluation.json, roc.json); facelearn-report groups them by the training overrides.
#   bash experiments/ida_real/evaluate_checkpoints.sh <job dir> [<job dir> ...]
set -euo pipefail
for job in "$@"; do
  ckpt="$job/checkpoints/last.ckpt"
  for bench in cfp_fp lfw_devtest; do
    python -m facelearn.evaluate ckpt_path="$ckpt" benchmark=$bench ida=both "fars=[0.1,0.01,0.001]" > /dev/null
    python -m facelearn.evaluate ckpt_path="$ckpt" benchmark=$bench ida=ida_r ida.ida_r.anchors=fc-weights \
      "fars=[0.1,0.01,0.001]" output_file=evaluation.json > /dev/null
  done
done
