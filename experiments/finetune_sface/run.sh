#!/usr/bin/env bash
# Fine-tuning the pretrained SFace on LFW-shallow, conventional vs SST (issue 21), and IDA on the pretrained SFace:
# one job queue, two jobs at a time, one thread each, in priority order (the AM-softmax pair of arms first).
# Every fine-tuning run: the recipe as committed (frozen through body.22, 2 epochs, batch 64, single-pass
# evaluation) at the lr chosen by sweep_lr.sh, evaluated after its last epoch on pairsDevTest, CFP-FP, CFP-FF and
# LFW View-2 without the pairs of anyone trained on (lfw_shallow_people.txt: the 1,165 LFW-shallow people; the
# datamodule's hard disjointness check fails the run if a trained person were left in); reported as "lfw".
# Usage (from a scratch directory; FACELEARN_DATA / FACELEARN_MODELS / FACELEARN_CACHE set):
#   LR_CONV=... LR_SST=... bash experiments/finetune_sface/run.sh
set -euo pipefail
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
export PY=${PY:-python} HERE=$(cd "$(dirname "$0")" && pwd) LR_CONV=${LR_CONV:?} LR_SST=${LR_SST:?}
export DATA=${FACELEARN_DATA:?}

train() {  # experiment lr seed task [overrides...]
  local exp=$1 lr=$2 seed=$3 task=$4; shift 4
  $PY -m facelearn.train +experiment=$exp optimizer.lr=$lr seed=$seed task_name=$task \
    "benchmark=[lfw_devtest,cfp_fp,cfp_ff,lfw_view2]" benchmark.lfw_view2.exclude_people="$HERE/lfw_shallow_people.txt" \
    "$@" > logs_${task}_$seed.log 2>&1
}
pretrained() {
  $PY -m facelearn.evaluate backbone=sface alignment=five_point flip_tta=false \
    "benchmark=[lfw_devtest,cfp_fp,cfp_ff,lfw_view2]" benchmark.lfw_view2.exclude_people="$HERE/lfw_shallow_people.txt" \
    paths.output_dir="$PWD/pretrained" > logs_pretrained.log 2>&1
}
ida_pretrained() {  # benchmark-group anchors-list
  local bench=$1 list=$2
  [ -f "logs_ida_pretrained_$list.log" ] && return 0  # started already (e.g. by hand before the queue)
  [ -d "anchors/$list" ] || $PY -m facelearn.align "$DATA" "anchors/$list" --list "anchors/$list.txt" --workers 1 \
    > logs_align_$list.log 2>&1
  $PY "$HERE/../ida_sface/sweep.py" --out "ida_pretrained_$list.json" -- backbone=sface alignment=five_point \
    flip_tta=false "benchmark=$bench" ida=ida_r ida.ida_r.anchors=folder ida.ida_r.folder="$PWD/anchors/$list" \
    paths.output_dir="$PWD/ida_pretrained_$list" > logs_ida_pretrained_$list.log 2>&1
}
export -f train pretrained ida_pretrained
mkdir -p anchors
$PY "$HERE/../ida_sface/anchor_lists.py" "$DATA" anchors
{
  for s in 1 2 3; do
    echo "train sface_lfw_shallow $LR_CONV $s conventional_am"
    echo "train sst_sface_lfw_shallow $LR_SST $s sst_am"
    [ $s = 1 ] && echo "ida_pretrained lfw_view2 anchors_lfw"
    [ $s = 2 ] && echo "pretrained"
    [ $s = 3 ] && echo "ida_pretrained [cfp_fp,cfp_ff] anchors_cfp"
  done
  for s in 1 2 3; do echo "train sface_lfw_shallow $LR_CONV $s conventional_arc head=arcface"; done
  for s in 1 2 3; do echo "train sst_sface_lfw_shallow $LR_SST $s sst_arc head=arcface"; done
  for s in 1 2 3; do echo "train sst_sface_lfw_shallow $LR_SST $s sst_am_queue0 method.queue_size=0"; done
} > jobs.txt
xargs -P 2 -L 1 bash -c '"$@" || echo "FAILED: $*" >> failed.txt' _ < jobs.txt
