#!/usr/bin/env bash
# CFP-FF (frontal-frontal) accuracy of finished runs' last.ckpt, written to <job dir>/cfp_ff/evaluation.json
# (collect.py adds it to the table). Usage: bash experiments/sst_real/evaluate_cfp_ff.sh <job dir> [<job dir> ...]
set -euo pipefail
for job in "$@"; do
  [ -f "$job/cfp_ff/evaluation.json" ] && continue
  python -m facelearn.evaluate ckpt_path="$job/checkpoints/last.ckpt" benchmark=cfp_ff hydra.run.dir="$job/cfp_ff" \
    > "$job/cfp_ff.log" 2>&1 || { echo "failed: $job (see $job/cfp_ff.log)"; exit 1; }
done
