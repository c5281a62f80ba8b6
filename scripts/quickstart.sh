#!/usr/bin/env bash
# The quickstart of README command A: index the opencv-doc photos (minus held-out views and distractors, see
# tests/fixtures/opencv_doc_retrieval.txt) and search with the held-out views and the distractors.
# Usage: scripts/quickstart.sh [DELF_BINARY]   (default: cargo run --release)
set -euo pipefail
cd "$(dirname "$0")/.."
DELF=${1:-}
if [[ -z $DELF ]]; then
  cargo build -q --release -p delf-cli
  DELF=target/release/delf
fi
export DELF_HOME=${DELF_HOME:-$PWD/.cache/delf}
PHOTOS=$DELF_HOME/data/opencv-doc
SPLIT=tests/fixtures/opencv_doc_retrieval.txt
WORK=.cache/quickstart
rm -rf "$WORK/photos" && mkdir -p "$WORK/photos"
held_out=$(awk '$1 == "query" || $1 == "distractor" { print $2 }' "$SPLIT")
for f in "$PHOTOS"/*.jpg "$PHOTOS"/*.png; do
  name=$(basename "$f")
  grep -qxF "$name" <<<"$held_out" || ln -s "$f" "$WORK/photos/$name"
done
queries=()
for q in $(awk '$1 == "query" { print $2 }' "$SPLIT") $(awk '$1 == "distractor" { print $2 }' "$SPLIT"); do
  queries+=("$PHOTOS/$q")
done
echo "== indexing $(ls "$WORK/photos" | wc -l) photos into $WORK/index"
"$DELF" index build "$WORK/photos" --out "$WORK/index"
echo "== searching ${#queries[@]} queries: 10 held-out views (expected partner in $SPLIT), 8 distractors (expected: no match)"
"$DELF" search --index "$WORK/index" "${queries[@]}" --top 3 --html "$WORK/report.html"
