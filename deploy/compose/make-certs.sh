#!/usr/bin/env bash
# A private CA and one certificate for every service of deploy/docker-compose.yml (and localhost), for
# deploy/docker-compose.tls.yml: writes ca.crt, tls.crt and tls.key into the folder given (default ./tls).
# For production use your own CA (cert-manager on Kubernetes: helm value tls.existingSecret, docs/operations.md).
set -euo pipefail
out="${1:-tls}"
mkdir -p "$out"
cd "$out"
names=(localhost coordinator-1 coordinator-2 coordinator-3 index-0 index-1 index-2 index-3 worker-0 worker-1 client)
san="subjectAltName=IP:127.0.0.1"
for n in "${names[@]}"; do san="$san,DNS:$n"; done
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
  -subj "/CN=delf compose CA" -keyout ca.key -out ca.crt 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=delf" \
  -keyout tls.key -out tls.csr 2>/dev/null
openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
  -extfile <(printf '%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$san") -out tls.crt 2>/dev/null
rm -f tls.csr ca.srl
chmod 600 ca.key tls.key
echo "wrote $(pwd)/ca.crt, tls.crt, tls.key (CA key: ca.key; keep it out of the containers)"
