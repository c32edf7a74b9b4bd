#!/usr/bin/env bash
# SST vs conventional AM-softmax on LFW-shallow at 112 px, MobileFaceNet, 10,008 steps (+schedule=gpu_10k), 3 seeds
# per arm, all six runs side by side on one GPU. Not run yet: the session that wrote it was lent no GPU. Run through the `device` tool from the repository root, carrying
# .whl (hydra-core, omegaconf, antlr4, pytorch-metric-learning) and .gpu_data (experiments/sst_real/pack_for_device.py).
#   SMOKE=1 bash experiments/sst_real/device_run.sh    # one epoch of each arm on this machine's CPU, to check
set -u
OUT=${OUT:-/tmp/device_out}
mkdir -p "$OUT"
if [ -d .whl ] && ! python3 -c "import hydra" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
export FACELEARN_LFW=$PWD/.gpu_data/lfw FACELEARN_CFP=$PWD/.gpu_data/cfp FACELEARN_CACHE=/tmp/fl_cache
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore::FutureWarning
PY=${PY:-python3}
LOGS=/tmp/fl_logs
mkdir -p $LOGS
COMMON=(+schedule=gpu_10k data.train.center_crop=null benchmark.lfw_devtest.center_crop=null)
# sst_lfw's gallery (momentum ramp 0 -> 0.999, queue 128): a constant 0.999 from step 0 collapsed on CPU.
SST=(+experiment=sst_lfw ${SST_EXTRA:-})
CONV=(+experiment=conventional_lfw_shallow)
SEEDS=${SEEDS:-"1 2 3"}
if [ "${SMOKE:-0}" = 1 ]; then
  COMMON+=(trainer.max_epochs=1 trainer.accelerator=cpu trainer.precision=32-true callbacks.benchmark.every_n_epochs=1)
  SEEDS=1
fi
nvidia-smi -L 2>/dev/null
start=$(date +%s)
# One short run first, so a broken environment fails in seconds, not after the budget is spent.
$PY -m facelearn.train "${CONV[@]}" "${COMMON[@]}" seed=0 trainer.max_epochs=1 paths.log_dir=$LOGS/smoke \
  > "$OUT/smoke.log" 2>&1 || { tail -40 "$OUT/smoke.log"; exit 1; }
echo "smoke run ok after $(( $(date +%s) - start )) s"
for seed in $SEEDS; do
  for arm in conventional sst; do
    if [ $arm = sst ]; then args=("${SST[@]}"); else args=("${CONV[@]}"); fi
    timeout "${RUN_LIMIT:-500}" $PY -m facelearn.train "${args[@]}" "${COMMON[@]}" seed=$seed \
      paths.log_dir=$LOGS/${arm}_seed$seed > $LOGS/${arm}_seed$seed.log 2>&1 &
  done
done
wait
echo "all runs ended after $(( $(date +%s) - start )) s"
grep -h "images/s" $LOGS/*_seed*.log | tail -4
grep -l "benchmark metrics written" $LOGS/*_seed*.log
tar czf "$OUT/sst_gpu_runs.tgz" --exclude='*.ckpt' -C /tmp fl_logs
