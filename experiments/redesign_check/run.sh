#!/bin/bash
# Fixed-seed reproduction check for refactors (issue 12): one conventional, one SST and one doppelganger-mining run
# on tiny synthetic data; prints every final number (benchmark metrics, last training row) as JSON.
#   bash experiments/redesign_check/run.sh OUT_DIR [SRC_DIR]     # SRC_DIR: another checkout's src/ (e.g. a worktree
#                                                                # of the commit before the change) to compare with
set -euo pipefail
out=$(realpath -m "$1"); src=${2:-}
here=$(cd "$(dirname "$0")/../.." && pwd)
py=${PYTHON:-$here/.venv/bin/python}
mkdir -p "$out"
tiny=(data.image_size=32 data.batch_size=32 data.train.num_identities=96 "data.train.images_per_identity=[2,3]"
      "backbone.widths=[8,16,32,64]" backbone.embedding_size=64 trainer.max_epochs=3 optimizer.lr=0.05 seed=7
      logger=csv)
declare -A arms=(
  [conventional]="+experiment=conventional_shallow benchmark.synthetic.num_identities=60 benchmark.synthetic.num_pairs=200"
  [sst]="+experiment=sst_shallow method.queue_size=32 benchmark.synthetic.num_identities=60 benchmark.synthetic.num_pairs=200"
  [dm]="+experiment=dm_joint data.batch_size=27 data.sampler.num_random=3 data.train.images_per_identity=[3,5] benchmark.oneshot.num_novel=20"
)
for arm in conventional sst dm; do
  (cd "$out" && PYTHONPATH=$src FACELEARN_CACHE="$out/cache" OMP_NUM_THREADS=1 "$py" -m facelearn.train \
     ${arms[$arm]} "${tiny[@]}" paths.log_dir="$out/$arm" > "$out/$arm.log" 2>&1) || { tail -20 "$out/$arm.log"; exit 1; }
done
"$py" - "$out" <<'PY'
import csv, json, sys
from pathlib import Path
out = Path(sys.argv[1]); result = {}
for arm in ("conventional", "sst", "dm"):
    bench = next((out / arm).rglob("benchmark_metrics.json"))
    rows = list(csv.DictReader(next((out / arm).rglob("metrics.csv")).open()))
    last = {k: v for r in rows for k, v in r.items() if v not in ("", None) and k.startswith(("train/", "dm/")) and "images_per_sec" not in k}
    result[arm] = {"bench": json.loads(bench.read_text())["metrics"], "train_last": last}
(out / "result.json").write_text(json.dumps(result, indent=1, sort_keys=True))
print(json.dumps(result, sort_keys=True)[:2000])
PY
