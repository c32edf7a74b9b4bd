#!/usr/bin/env bash
# Run the lines of a job file (run.sh's job syntax: "train EXPERIMENT LR SEED TASK [overrides...]" | "pretrained")
# one after another, starting each only while fewer than 2 facelearn.train / facelearn.evaluate processes run on
# this machine (so it can take over from a queue already running). Used to reorder run.sh's remaining jobs into
# seed-interleaved pairs (conventional s, SST s, ...): a queue cut short then still leaves paired seeds.
# Usage (in run.sh's directory, same environment as run.sh): bash experiments/finetune_sface/queue.sh JOBS_FILE
set -euo pipefail
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
export PY=${PY:-python} HERE=$(cd "$(dirname "$0")" && pwd) DATA=${FACELEARN_DATA:?}
source <(sed -n '/^train() {/,/^}/p; /^pretrained() {/,/^}/p' "$HERE/run.sh")
export -f train pretrained
while read -r line; do
  [ -z "$line" ] && continue
  while [ "$(pgrep -fc -- '-m facelearn\.(train|evaluate)' || true)" -ge 2 ]; do sleep 15; done
  bash -c "$line || echo \"FAILED: $line\" >> failed.txt" &
  sleep 20  # let it start before counting again
done < "$1"
wait
