#!/usr/bin/env bash
# Trains the attention head that ships with delf-rs (crates/delf-model/weights/
# attention-efficientnet-lite0-block10.safetensors): stage 2 of the paper on the frozen EfficientNet-Lite0 ImageNet
# backbone, instance-level labels (each training photo its own class, the two motorcycle views one class), on the
# photos of tests/fixtures/default_head_labels.csv that scripts/setup.sh installs in $DELF_HOME/data/train-photos.
# None of them is among the evaluation photos ($DELF_HOME/data/opencv-doc). About 5 minutes on 2 CPU cores.
#
# Usage: scripts/train_default_head.sh [DELF_BINARY]   (default: cargo build --release)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/common.sh
use_delf "${1:-}"
OUT=${DELFRS_TRAIN_OUT:-.cache/train/default-head}
rm -rf "$OUT"
"$DELF" train attention --labels "$DELF_HOME/data/train-photos/labels.csv" --out "$OUT" \
  --recipe instance --epochs 40 --repeats 4 --batch-size 32 --input-size 320 --min-input-scale 0.5 \
  --lr 1.0 --warmup-steps 20 --seed 1 --device cpu --log-every 20
cp "$OUT/attention.safetensors" crates/delf-model/weights/attention-efficientnet-lite0-block10.safetensors
echo "shipped head updated from $OUT (metrics: $OUT/metrics.jsonl)"
