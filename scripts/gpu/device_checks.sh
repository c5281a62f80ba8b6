#!/usr/bin/env bash
# Device checks for a lent GPU machine (no cargo, no network there). Build here first:
#   scripts/gpu/build_cuda.sh            # release binary linked against the full torch 2.11.0 wheel
# then run this script on the device with the binary, the Lite0 weights and the photos carried:
#   carry: target-cuda/delf, .cache/delf/models, .cache/delf/data
# It points LD_LIBRARY_PATH at the machine's preinstalled PyTorch (torch/lib + nvidia/*/lib), checks the device,
# and runs the extraction benchmark on CUDA (fp32, fp16 autocast, bf16) and on the CPU cores for comparison.
# SKIP_EXTRACT=1 / SKIP_HALF=1 (fp16 and bf16) / SKIP_FP16=1 / SKIP_CPU=1 leave those parts out; BATCH=N
# (default 8) sets the batched comparison; QUICKSTART=1 adds the quickstart (index + search) on CUDA; BATCH_JOB=1
# adds a batch extraction job (`delf extract --list`, scripts/bench_batch_extract.sh) on CUDA; VIEWS=1 adds the
# robustness benchmark (`delf eval views --seed 1 --device cuda --python none`: the default query, rotated passes
# included, extracted on the GPU; needs .cache/delf/data/views-photos carried too), its answers saved as
# $OUT/views-answers.jsonl.
# Output: $OUT/device-report.md (or stdout when OUT is unset).
set -euo pipefail
BIN=${BIN:-target-cuda/delf}
OUT=${OUT:-}
export DELF_HOME=${DELF_HOME:-$PWD/.cache/delf}
PY=$(command -v python3 || command -v python)
TORCH_LIB=$("$PY" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
NV=$("$PY" -c 'import glob, os, nvidia; print(":".join(sorted(glob.glob(os.path.join(list(nvidia.__path__)[0], "*", "lib")) + glob.glob(os.path.join(list(nvidia.__path__)[0], "*", "*", "lib")))))' 2>/dev/null || true)
export LD_LIBRARY_PATH="$TORCH_LIB:$NV:${LD_LIBRARY_PATH:-}"
report() { if [[ -n "$OUT" ]]; then tee -a "$OUT/device-report.md"; else cat; fi; }
{
  echo "# device checks $(date -u +%FT%TZ)"
  echo; echo '```'; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; echo '```'
  echo; echo "## doctor (cuda)"; echo '```'; "$BIN" doctor --device cuda 2>&1; echo '```'
  if [[ ${VIEWS:-0} == 1 ]]; then
    echo; echo "## robustness benchmark (delf eval views --seed 1), extraction on cuda"; echo '```'
    VIEWS_OUT=$(mktemp -d)
    (time "$BIN" -q eval views --seed 1 --device cuda --python none --out "$VIEWS_OUT") 2>&1 || echo "eval views failed: $?"
    if [[ -n "$OUT" ]]; then cp "$VIEWS_OUT/answers-delf.jsonl" "$OUT/views-answers.jsonl" || true; fi
    echo '```'
  fi
  if [[ ${SKIP_EXTRACT:-0} != 1 ]]; then
  echo; echo "## bench extract, cuda fp32"; "$BIN" bench extract --device cuda --sizes 512,1024 --runs 3 --decode-threads 8 --batch "${BATCH:-8}" 2>&1
  if [[ ${SKIP_HALF:-0} != 1 ]]; then
    # libtorch prints a deprecation warning per autocast toggle (tch uses the old API); keep the report readable.
    [[ ${SKIP_FP16:-0} == 1 ]] || { echo; echo "## bench extract, cuda fp16 autocast"; "$BIN" bench extract --device cuda --precision fp16 --sizes 512,1024 --runs 3 --decode-threads 8 2>&1 | grep -v 'autocast_mode.h'; }
    echo; echo "## bench extract, cuda bf16 (weights and activations)"; "$BIN" bench extract --device cuda --precision bf16 --sizes 512,1024 --runs 3 --decode-threads 8 --batch "${BATCH:-8}" 2>&1
  fi
  fi
  if [[ ${QUICKSTART:-0} == 1 ]]; then
    echo; echo "## quickstart (index build + search) with extraction on cuda"; echo '```'
    (time DELF_DEVICE=cuda bash scripts/quickstart.sh "$PWD/$BIN") 2>&1 | grep -v '"level":"INFO"\|INFO' ; echo '```'
  fi
  if [[ ${BATCH_JOB:-0} == 1 ]]; then
    echo; echo "## batch extraction job (extract --list), cuda, batch ${BATCH:-8}"; echo '```'
    bash scripts/bench_batch_extract.sh "$BIN" cuda 4 1024 --batch "${BATCH:-8}" --decode-threads 8 2>&1; echo '```'
  fi
  if [[ ${SKIP_CPU:-0} != 1 ]]; then
    echo; echo "## bench extract, cpu ($(nproc) cores)"; "$BIN" bench extract --device cpu --sizes 512,1024 --runs 1 --decode-threads 4 2>&1
  fi
} 2>&1 | report
