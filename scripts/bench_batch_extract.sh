#!/usr/bin/env bash
# Batch extraction throughput on real photos: `delf extract --list` over a CSV list of the opencv-doc photos
# (each listed REPEAT times under distinct image ids), then `delf features inspect`. Prints images/s (from the
# worker's summary), Parquet bytes per image, and peak RSS. Used for docs/benchmarks.md on CPU and by
# scripts/gpu/device_checks.sh on a lent GPU machine.
#
#   scripts/bench_batch_extract.sh [BIN] [DEVICE] [REPEAT] [MAX_SIDE] [EXTRA delf ARGS...]
#   e.g. scripts/bench_batch_extract.sh ./target/release/delf cpu 1 1024
#        scripts/bench_batch_extract.sh target-cuda/delf cuda 4 1024 --batch 8
set -euo pipefail
BIN=${1:-./target/release/delf}
DEVICE=${2:-cpu}
REPEAT=${3:-1}
MAX_SIDE=${4:-1024}
shift $(( $# < 4 ? $# : 4 ))
export DELF_HOME=${DELF_HOME:-$PWD/.cache/delf}
PHOTOS="$DELF_HOME/data/opencv-doc"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
PCA="$WORK/pca.safetensors"
# A PCA fitted on a few photos (the throughput does not depend on which).
"$BIN" -q pca fit --device "$DEVICE" --out "$PCA" "$PHOTOS"/graf1.png "$PHOTOS"/aero1.jpg "$PHOTOS"/leuvenA.jpg >/dev/null
{
  echo "image_id,uri"
  for r in $(seq 1 "$REPEAT"); do
    find "$PHOTOS" -maxdepth 1 -type f \( -name '*.jpg' -o -name '*.png' \) | sort | while read -r p; do
      echo "copy$r/$(basename "$p"),$p"
    done
  done
} > "$WORK/list.csv"
echo "list: $(($(wc -l < "$WORK/list.csv") - 1)) images (opencv-doc x $REPEAT), device $DEVICE, max side $MAX_SIDE, $(nproc) cores"
TIMER=()
[[ -x /usr/bin/time ]] && TIMER=(/usr/bin/time -f "wall %e s, peak RSS %M KiB")
"${TIMER[@]}" "$BIN" -q extract --list "$WORK/list.csv" --out "$WORK/job" \
  --device "$DEVICE" --max-side "$MAX_SIDE" --pca "$PCA" --unit-size 100 "$@"
"$BIN" -q features inspect "$WORK/job" | sed -n '2,7p'
