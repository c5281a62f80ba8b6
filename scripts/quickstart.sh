#!/usr/bin/env bash
# The quickstart of README command A: index the opencv-doc photos (minus held-out views and distractors, see
# tests/fixtures/opencv_doc_retrieval.txt) and search with the held-out views and the distractors.
# Usage: scripts/quickstart.sh [DELF_BINARY]   (default: cargo run --release)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/common.sh
use_delf "${1:-}"
WORK=.cache/quickstart
rm -rf "$WORK/photos" && mkdir -p "$WORK/photos"
quickstart_database | while read -r f; do ln -s "$f" "$WORK/photos/$(basename "$f")"; done
mapfile -t queries < <(quickstart_queries query; quickstart_queries distractor)
echo "== indexing $(ls "$WORK/photos" | wc -l) photos into $WORK/index"
"$DELF" index build "$WORK/photos" --out "$WORK/index"
echo "== searching ${#queries[@]} queries: 10 held-out views (expected partner in $SPLIT), 8 distractors (expected: no match)"
"$DELF" search --index "$WORK/index" "${queries[@]}" --top 3 --html "$WORK/report.html"
