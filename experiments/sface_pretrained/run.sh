#!/usr/bin/env bash
# The pretrained SFace (OpenCV Zoo's int8 file, no training) through facelearn.evaluate: aligned LFW View-2 and
# CFP-FP/FF with and without flip test-time augmentation, and the same model on the crops used before alignment.
# Then facelearn.align on all of LFW and CFP (the outcome counts), and the contact sheet.
# Usage (from a scratch directory): FACELEARN_DATA=.../shared/data FACELEARN_MODELS=.../shared/models bash run.sh
set -euo pipefail
PY=${PY:-python}
HERE=$(cd "$(dirname "$0")" && pwd)
$PY -m facelearn.evaluate backbone=sface alignment=five_point "benchmark=[lfw_view2,cfp_fp,cfp_ff]" task_name=sface_aligned_flip
$PY -m facelearn.evaluate backbone=sface alignment=five_point "benchmark=[lfw_view2,cfp_fp,cfp_ff]" flip_tta=false task_name=sface_aligned_noflip
$PY -m facelearn.evaluate backbone=sface alignment=none "benchmark=[lfw_view2,cfp_fp,cfp_ff]" task_name=sface_centrecrop_flip
$PY -m facelearn.align "$FACELEARN_DATA/lfw/lfw-deepfunneled" lfw112 --rec lfw112.rec
$PY -m facelearn.align "$FACELEARN_DATA/cfp" cfp112
$PY "$HERE/contact_sheet.py" contact_sheet.jpg
