#!/usr/bin/env bash
# IDA-R / IDA-L sweeps on a fine-tuned checkpoint of experiments/finetune_sface (issue 21, item 2): LFW View-2 without
# the fine-tuning people (lfw_shallow_people.txt) with the LFW anchors, CFP-FP / CFP-FF with the CFP anchors (aligned
# folders made by run.sh's IDA jobs: anchors/anchors_lfw, anchors/anchors_cfp), and, for a conventional checkpoint,
# its classifier rows as anchors (fc-weights, IDA-R only) on all three.
# Usage (in run.sh's directory): bash experiments/ida_sface/run_finetuned.sh CKPT LABEL [conventional]
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
PY=${PY:-python}
here=$(cd "$(dirname "$0")" && pwd)
ckpt=$1 label=$2 kind=${3:-}
people=$here/../finetune_sface/lfw_shallow_people.txt
sweep() { $PY "$here/sweep.py" "$@"; }
sweep --out "ida_${label}_anchors_lfw.json" -- ckpt_path="$ckpt" benchmark=lfw_view2 \
  benchmark.lfw_view2.exclude_people="$people" ida=ida_r ida.ida_r.anchors=folder ida.ida_r.folder="$PWD/anchors/anchors_lfw" \
  paths.output_dir="$PWD/ida_${label}_anchors_lfw" > "logs_ida_${label}_anchors_lfw.log" 2>&1
sweep --out "ida_${label}_anchors_cfp.json" -- ckpt_path="$ckpt" "benchmark=[cfp_fp,cfp_ff]" \
  ida=ida_r ida.ida_r.anchors=folder ida.ida_r.folder="$PWD/anchors/anchors_cfp" \
  paths.output_dir="$PWD/ida_${label}_anchors_cfp" > "logs_ida_${label}_anchors_cfp.log" 2>&1
if [ "$kind" = conventional ]; then
  sweep --no-ida-l --out "ida_${label}_fc_weights.json" -- ckpt_path="$ckpt" "benchmark=[lfw_view2,cfp_fp,cfp_ff]" \
    benchmark.lfw_view2.exclude_people="$people" ida=ida_r ida.ida_r.anchors=fc-weights \
    paths.output_dir="$PWD/ida_${label}_fc_weights" > "logs_ida_${label}_fc_weights.log" 2>&1
fi
