#!/usr/bin/env bash
# Train the reader on a lent GPU machine (the `device` tool), which has PyTorch, transformers and tokenizers
# but not this project's packages, no ../shared and no network. Three steps:
#
#   here:   bash train/gpu_run.sh pack             # .gpu/ (git-ignored, about 37 MB): the packaged model (fp16,
#                                                  # its word-piece table int8), its tokenizer, the training data
#                                                  # (train/data/written/ and next/, make_reader_data.py --with-next)
#   there:  bash train/gpu_run.sh run [MINUTES]     # trains from the packaged model (default 7 minutes) and leaves
#                                                  # the weights in $OUT as fp16 parts of 15 MiB, and the log
#           (the device tool's `run` with carry [".gpu"] and timeout_s 600; its start and copies take a minute or two)
#   here:   bash train/gpu_run.sh unpack DIR        # DIR: that run's files_at; -> train/out/gpu/reader.pt
#
# then, as for a CPU run (docs/quality.md): python train/export_reader.py --weights train/out/gpu/reader.pt
# --out train/out/gpu/final, and train/eval_reader.py for the held-back figures before shipping anything.
# EPOCHS, BATCH (questions a step), LR and HEAD_LR override the run's defaults; EXTRA adds train_reader.py options
# (e.g. EXTRA="--span-null 0.5").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
if [ -x .venv/bin/python ] && [ "${1:-}" != run ]; then PY=.venv/bin/python; fi

case "${1:-}" in
pack)
  rm -rf .gpu && mkdir -p .gpu/base
  grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
  HF_HUB_OFFLINE=1 "$PY" train/make_reader_data.py --with-next --seed 2029 --out .gpu/reader-data.jsonl
  xz -9 -f .gpu/reader-data.jsonl
  "$PY" train/gpu_weights.py pack .gpu/base
  du -sh .gpu
  ;;
run)
  minutes=${2:-7}
  out=${OUT:-/tmp/gpu-out}
  mkdir -p "$out" /tmp/gpu-train /tmp/gpu-base
  export QA_READER_BASE=/tmp/gpu-base HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
  "$PY" -c "import lzma, shutil; shutil.copyfileobj(lzma.open('.gpu/reader-data.jsonl.xz'), open('.gpu/reader-data.jsonl', 'wb'))"
  "$PY" train/gpu_weights.py base .gpu/base /tmp/gpu-base
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | tee "$out/gpu.txt" || true
  "$PY" train/train_reader.py --layers 6 --data .gpu/reader-data.jsonl --out /tmp/gpu-train --epochs "${EPOCHS:-8}" \
    --questions-per-batch "${BATCH:-32}" --lr "${LR:-2e-4}" --head-lr "${HEAD_LR:-2e-3}" --budget-min "$minutes" \
    --save-every 100000 --seed 2029 ${EXTRA:-} 2>&1 | tee "$out/train.log"
  "$PY" train/gpu_weights.py split /tmp/gpu-train/reader.pt "$out"
  ;;
unpack)
  dir=${2:?unpack DIR: the folder the files of the run came back to}
  mkdir -p train/out/gpu
  cp "$dir"/train.log "$dir"/gpu.txt train/out/gpu/ 2>/dev/null || true
  "$PY" train/gpu_weights.py join "$dir" train/out/gpu/reader.pt
  ;;
*)
  sed -n '2,15p' "$0"
  exit 2
  ;;
esac
