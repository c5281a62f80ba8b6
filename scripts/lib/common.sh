# Shared by the scripts that run the delf binary on the installed photos (sourced, not run; the caller has cd'd to
# the repository root and set -euo pipefail).

# use_delf [BINARY]: sets DELF to BINARY, or builds the release binary when it is empty; exports DELF_HOME
# (default .cache/delf, where scripts/setup.sh installs models and photos).
use_delf() {
  DELF=${1:-}
  if [[ -z $DELF ]]; then
    cargo build -q --release -p delf-cli
    DELF=target/release/delf
  fi
  export DELF_HOME=${DELF_HOME:-$PWD/.cache/delf}
  PHOTOS=$DELF_HOME/data/opencv-doc
  SPLIT=tests/fixtures/opencv_doc_retrieval.txt
}

# quickstart_database: prints the paths of the quickstart's database photos, every opencv-doc photo except the
# held-out views and distractors of $SPLIT.
quickstart_database() {
  local held_out f
  held_out=$(awk '$1 == "query" || $1 == "distractor" { print $2 }' "$SPLIT")
  for f in "$PHOTOS"/*.jpg "$PHOTOS"/*.png; do
    grep -qxF "$(basename "$f")" <<<"$held_out" || echo "$f"
  done
}

# quickstart_queries KIND: prints the paths of the split's photos of KIND (query or distractor).
quickstart_queries() {
  local q
  for q in $(awk -v kind="$1" '$1 == kind { print $2 }' "$SPLIT"); do echo "$PHOTOS/$q"; done
}
