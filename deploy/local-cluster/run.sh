#!/usr/bin/env bash
# The docker-compose topology of deploy/ as plain processes on loopback (no container engine needed):
# an S3-compatible store (moto), 3 coordinators keeping the metadata under Raft, 4 index nodes and 2 workers.
# It builds an index of the photos in the store (extraction, train, encode workers, finalize), registers and activates
# it, queries, prints the status.
#
#   deploy/local-cluster/run.sh [--keep] [DELF_BINARY]
#
# --keep leaves the cluster running until Ctrl-C (then `delf --config .cache/local-cluster/delf.toml query ...`
# works from another shell). Environment: PHOTO_LIST (a file of photo paths to index; default: the quickstart
# database), QUERIES (photo paths, space-separated; default: three held-out views and a distractor), BASE_PORT
# (default 17700), WORK (default .cache/local-cluster), TLS (1, the default: every connection with mutual TLS and
# a private CA made by deploy/compose/make-certs.sh, as deploy/docker-compose.tls.yml runs; 0: plaintext), and any
# DELF_* setting (e.g. DELF_EXTRACT__MAX_SIDE=640).
set -euo pipefail
cd "$(dirname "$0")/../.."
KEEP=0
if [[ ${1:-} == --keep ]]; then KEEP=1; shift; fi
source scripts/lib/common.sh
use_delf "${1:-}"
DELF=$(realpath "$DELF")
WORK=$(realpath -m "${WORK:-.cache/local-cluster}")
BASE_PORT=${BASE_PORT:-17700}
MOTO=${DELFRS_MOTO_SERVER:-$PWD/.cache/venv/bin/moto_server}
[[ -x $MOTO ]] || { echo "error: $MOTO not found: run scripts/setup.sh" >&2; exit 1; }

rm -rf "$WORK" && mkdir -p "$WORK/logs"
PIDS=()
stop_all() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop_all EXIT
trap 'exit 130' INT TERM

# The object store, as the cluster sees it (object_store reads these).
S3=127.0.0.1:$((BASE_PORT + 30))
export AWS_ENDPOINT=http://$S3 AWS_ALLOW_HTTP=true AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local \
  AWS_REGION=us-east-1 AWS_VIRTUAL_HOSTED_STYLE_REQUEST=false
"$MOTO" -H 127.0.0.1 -p $((BASE_PORT + 30)) >"$WORK/logs/s3.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do curl -sf "http://$S3/" >/dev/null && break; sleep 0.2; done
curl -sf -X PUT "http://$S3/delf" >/dev/null

# Index v1, built as the Helm chart's jobs build it, straight into the store: an extraction job (2 units), then
# train, two encode workers in parallel (one shard each), finalize (docs/operations.md, "Re-indexing").
if [[ -z ${PHOTO_LIST:-} ]]; then
  PHOTO_LIST=$WORK/photos.txt
  quickstart_database >"$PHOTO_LIST"
fi
PHOTOS_N=$(grep -c . "$PHOTO_LIST")
echo "== extracting $PHOTOS_N photos into s3://delf/features-v1"
"$DELF" -q extract --list "$PHOTO_LIST" --out s3://delf/features-v1 --unit-size $(((PHOTOS_N + 1) / 2)) >/dev/null
echo "== building s3://delf/index-v1 as parallel jobs: train, 2 encode workers, finalize"
"$DELF" -q index train --features s3://delf/features-v1 --index s3://delf/index-v1 --shards 2 >/dev/null
ENCODERS=()
for i in 0 1; do
  "$DELF" -q index encode --index s3://delf/index-v1 --worker $i --workers 2 &
  ENCODERS+=($!)
done
for pid in "${ENCODERS[@]}"; do wait "$pid"; done
"$DELF" -q index finalize s3://delf/index-v1

# One configuration for every process; each gets its id, name and folders from the environment and flags.
TOKEN=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
export DELF_CLUSTER__TOKEN=$TOKEN DELF_CONFIG=$WORK/delf.toml
if [[ ${TLS:-1} == 1 ]]; then
  echo "== mutual TLS: a private CA and one certificate for 127.0.0.1 in $WORK/tls"
  bash deploy/compose/make-certs.sh "$WORK/tls" >/dev/null
  export DELF_CLUSTER__TLS__CERT=$WORK/tls/tls.crt DELF_CLUSTER__TLS__KEY=$WORK/tls/tls.key \
    DELF_CLUSTER__TLS__CA=$WORK/tls/ca.crt DELF_CLUSTER__TLS__REQUIRE_CLIENT_CERT=true
fi
cat >"$DELF_CONFIG" <<TOML
[cluster]
index = "s3://delf/index-v1"       # workers: the model settings and PCA of the index
coordinator = "127.0.0.1:$((BASE_PORT + 1))"
# Every process shares this machine's CPU: a photo searched again at its rotations takes two extractions.
deadline_ms = 120000

[meta]
coordinators = [
  { id = 1, address = "127.0.0.1:$((BASE_PORT + 1))" },
  { id = 2, address = "127.0.0.1:$((BASE_PORT + 2))" },
  { id = 3, address = "127.0.0.1:$((BASE_PORT + 3))" },
]
heartbeat_ms = 500
node_timeout_ms = 5000
retire_grace_ms = 120000            # at least cluster.deadline_ms: queries started on a retired version finish
TOML
start() { # name, then the `delf serve` arguments
  local name=$1
  shift
  DELF_CLUSTER__CACHE_DIR="$WORK/cache/$name" "$DELF" serve "$@" >"$WORK/logs/$name.log" 2>&1 &
  PIDS+=($!)
}
for id in 1 2 3; do
  DELF_META__ID=$id DELF_META__DATA_DIR="$WORK/meta/$id" start "coordinator-$id" coordinator \
    --listen "127.0.0.1:$((BASE_PORT + id))" --metrics-listen "127.0.0.1:$((BASE_PORT + 40 + id))"
done
for i in 0 1 2 3; do
  start "index-$i" index-node --listen "127.0.0.1:$((BASE_PORT + 10 + i))" --node "index-$i"
done
for i in 0 1; do
  start "worker-$i" worker --listen "127.0.0.1:$((BASE_PORT + 20 + i))" --node "worker-$i"
done

echo "== registering and activating index-v1 (2 replicas per shard)"
"$DELF" -q cluster register v1 --index s3://delf/index-v1 --replicas 2
"$DELF" -q cluster activate v1 --wait-secs 300

if [[ -z ${QUERIES:-} ]]; then
  QUERIES="$PHOTOS/graf3.png $PHOTOS/leuvenB.jpg $PHOTOS/box_in_scene.png $PHOTOS/squirrel_cls.jpg"
fi
read -r -a queries <<<"$QUERIES"
for _ in $(seq 300); do
  "$DELF" -q health "127.0.0.1:$((BASE_PORT + 20))" >/dev/null 2>&1 && \
    "$DELF" -q health "127.0.0.1:$((BASE_PORT + 21))" >/dev/null 2>&1 && \
    "$DELF" -q cluster status >/dev/null 2>&1 && break
  sleep 1
done
echo "== cluster"
"$DELF" -q cluster meta
"$DELF" -q cluster status
if [[ ${TLS:-1} == 1 ]]; then
  if env -u DELF_CLUSTER__TLS__CERT -u DELF_CLUSTER__TLS__KEY -u DELF_CLUSTER__TLS__CA \
    -u DELF_CLUSTER__TLS__REQUIRE_CLIENT_CERT "$DELF" -q health "127.0.0.1:$((BASE_PORT + 1))" >/dev/null 2>&1; then
    echo "error: a plaintext client reached coordinator 1" >&2
    exit 1
  fi
  echo "== a plaintext client is refused"
fi
echo "== queries (through coordinator 2)"
"$DELF" -q query --json --coordinator "127.0.0.1:$((BASE_PORT + 2))" "${queries[@]}"
if [[ $KEEP == 1 ]]; then
  echo "== running; logs in $WORK/logs; DELF_CONFIG=$DELF_CONFIG DELF_CLUSTER__TOKEN=$TOKEN; Ctrl-C stops"
  wait
fi
