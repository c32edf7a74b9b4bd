#!/bin/bash
# facelearn-report over the committed results (tables as Markdown + numeric CSV) and the ROC example; outputs in
# experiments/results/report_examples/. Run from the repository root: bash experiments/report_all.sh
set -euo pipefail
out=experiments/results/report_examples
mkdir -p "$out"
rep() { name=$1; shift; python -m facelearn.report "$@" --csv "$out/$name.csv" --markdown "$out/$name.md" > /dev/null; }
rep sst_real_lfw_devtest experiments/results/sst_real/runs --benchmark lfw_devtest --metrics accuracy auc tar@far=0.01
rep sst_real_cfp_fp experiments/results/sst_real/runs --benchmark cfp_fp --metrics accuracy auc tar@far=0.01
rep dm_lfw_devtest experiments/results/dm_lfw/train --benchmark lfw_devtest --metrics accuracy auc tar@far=0.1 tar@far=0.01
rep dm_lfw_oneshot experiments/results/dm_lfw/reeval --benchmark oneshot --metrics novel/top1 novel/coverage@99 novel/coverage@50 base/top1
rep dp_softmax_lfw experiments/results/dp_softmax_lfw --metrics accuracy auc tar@far=0.01
rep lfw_shallow_losses experiments/results/lfw_shallow_losses --metrics accuracy auc tar@far=0.01
ls "$out"
