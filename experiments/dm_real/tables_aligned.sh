#!/usr/bin/env bash
# Tables of experiments/results/dm_lfw_aligned/ from the runs of run_aligned.sh (LOGS: its logs/ folder).
# Usage: bash experiments/dm_real/tables_aligned.sh LOGS
set -euo pipefail
OUT=experiments/results/dm_lfw_aligned
REF="data.sampler.num_random=27 task_name=dm_lfw_aligned_nr27"
python experiments/dm_real/collect.py --out $OUT/runs "$1/dm_lfw_aligned_nr27" "$1/dm_lfw_aligned_nr9"
for b in lfw_devtest cfp_fp; do
  python -m facelearn.report $OUT/runs --benchmark $b --metrics accuracy auc tar@far=0.1 tar@far=0.01 \
    --reference "$REF" --csv $OUT/$b.csv --markdown $OUT/$b.md
done
python -m facelearn.report $OUT/runs --benchmark oneshot --metrics novel/top1 novel/coverage@99 novel/coverage@90 \
  novel/coverage@50 base/top1 base/coverage@50 --reference "$REF" --csv $OUT/oneshot.csv --markdown $OUT/oneshot.md
