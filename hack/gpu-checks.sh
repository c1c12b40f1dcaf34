#!/usr/bin/env bash
# The checks that need an NVIDIA GPU, in one go; each step's output goes to OUTDIR/<step>.log and a
# line per step (exit code, seconds) to OUTDIR/summary.txt. A failing step does not stop the others.
#
#   bash hack/gpu-checks.sh OUTDIR
#
# In order: the small-data augmentation runs start in the background (two widths; without
# augmentation, with it always, and with ADA's adaptive probability; a trainer process each on the
# one GPU) while tests/gpu run (exact resume on CUDA in fp32, bf16 and fp16; the CUDA-only
# metrics); then the runs are scored; then the throughput
# benchmarks run alone on the GPU, so nothing else shares it while they are timed.
# Expects the real Fashion-MNIST in /usr/share/datasets/fashion-mnist, and the trainer's packages.
set -uo pipefail
out=${1:?usage: hack/gpu-checks.sh OUTDIR}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
SMALL_DATA_KIMG=${SMALL_DATA_KIMG:-768}
SMALL_DATA_EVERY=${SMALL_DATA_EVERY:-128}
SMALL_DATA_WIDTHS=${SMALL_DATA_WIDTHS:-128}

step() {  # step NAME TIMEOUT_SECONDS COMMAND...
  local name=$1 limit=$2 start=$SECONDS rc
  shift 2
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  rc=$?
  echo "$name rc=$rc $((SECONDS - start))s" | tee -a "$out/summary.txt"
}

nvidia-smi >"$out/nvidia-smi.txt" 2>&1
# The trainings share the GPU; each is cut at the limit (SIGTERM: the trainer checkpoints and stops).
for width in $SMALL_DATA_WIDTHS; do
  for variant in no-augmentation augmented adaptive; do
    step "small-data-train-w$width-$variant" 240 "$py" benchmarks/small_data_augment.py --device cuda \
      --width "$width" --kimg "$SMALL_DATA_KIMG" --every "$SMALL_DATA_EVERY" --work "/tmp/small-data-$width" \
      --train-only "$variant" &
  done
done
step tests-gpu 240 "$py" -m pytest --noconftest -p no:cacheprovider -v tests/gpu
wait
for width in $SMALL_DATA_WIDTHS; do
  step "small-data-score-w$width" 100 "$py" benchmarks/small_data_augment.py --device cuda --width "$width" \
    --kimg "$SMALL_DATA_KIMG" --every "$SMALL_DATA_EVERY" --rescore "/tmp/small-data-$width" \
    --cache /tmp/small-data-cache
done
step bench-trainer 300 "$py" benchmarks/trainer_throughput.py --device cuda --steps 300 --warmup 30 --rounds 2
step bench-data-parallel 200 "$py" benchmarks/data_parallel.py --device cuda --ranks 1 --steps 300 --rounds 2
