#!/usr/bin/env bash
# Cluster container test with TLS and authentication (issue 14): the three brokers of
# deploy/cluster.yml with deploy/cluster-tls.yml on top, certificates and a token from
# deploy/make-certs.sh in a temporary directory. The brokers form the cluster over mutual
# TLS; the client ports refuse plaintext and requests without credentials; a token (from
# the host) and a client certificate (the CLI inside the network) are both the admin; records
# produced inside the network reach every broker's replica; a SIGKILLed broker, started
# again, reconnects to its peers over mutual TLS and catches up. Removes everything it created.
# Without Docker: a loud skip, except under CI=true where it is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! docker info >/dev/null 2>&1; then
  if [ "${CI:-}" = "true" ]; then
    echo "FAIL: Docker is not available, and CI=true requires the TLS cluster container test" >&2
    exit 1
  fi
  echo "####################################################################" >&2
  echo "# SKIPPED: TLS cluster container test (no Docker engine reachable)  #" >&2
  echo "####################################################################" >&2
  exit 0
fi
if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); else COMPOSE=(docker-compose); fi
# Below the kernel's ephemeral range (32768+), as in test-compose.sh.
export SLUICE_GRPC_PORT_1="${SLUICE_GRPC_PORT_1:-25071}" SLUICE_GRPC_PORT_2="${SLUICE_GRPC_PORT_2:-25072}" \
  SLUICE_GRPC_PORT_3="${SLUICE_GRPC_PORT_3:-25073}"
PROJECT="sluice-cluster-tls-test-$$"
TLS=$(mktemp -d)
export SLUICE_TLS_DIR="$TLS"
DC=("${COMPOSE[@]}" -p "$PROJECT" -f deploy/cluster.yml -f deploy/cluster-tls.yml)
cleanup() {
  "${DC[@]}" --profile tools down -v --remove-orphans >/dev/null 2>&1 || true
  rm -rf "$TLS"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  "${DC[@]}" logs --tail 20 >&2 || true
  exit 1
}

docker image inspect "${SLUICE_IMAGE:-sluice:latest}" >/dev/null 2>&1 || bash deploy/build-image.sh
bash deploy/make-certs.sh "$TLS" >/dev/null
port() { local v="SLUICE_GRPC_PORT_$1"; echo "${!v}"; }
# The CLI on the host, over TLS to broker $1's published port, with the admin token.
cli() {
  local id=$1; shift
  target/release/sluice --addr "https://127.0.0.1:$(port "$id")" --tls-ca "$TLS/ca.pem" \
    --token "$(cat "$TLS/admin.token")" "$@"
}
# The CLI inside the network with the client certificate (the `status` service of cluster-tls.yml).
inside() {
  local id=$1; shift
  "${DC[@]}" --profile tools run --rm status --addr "https://broker$id:50051" "$@"
}
stored_at() { cli "$1" topic describe "$2" 2>/dev/null | awk 'p { s += $3 } /^partition/ { p = 1 } END { print s + 0 }'; }
# The metadata leader broker $1 reports once it knows of 3 registered brokers (0: not yet).
leader_seen_by() {
  cli "$1" cluster status --output json 2>/dev/null | python3 -c '
import json, sys
m = json.load(sys.stdin)
print(m["metadata_leader"] if len(m["brokers"]) == 3 else 0)' 2>/dev/null || echo 0
}

"${DC[@]}" up -d broker1 broker2 broker3
leader=0
for _ in $(seq 1 120); do
  l1=$(leader_seen_by 1); l2=$(leader_seen_by 2); l3=$(leader_seen_by 3)
  if [ "$l1" != 0 ] && [ "$l1" = "$l2" ] && [ "$l2" = "$l3" ]; then leader=$l1; break; fi
  sleep 0.5
done
[ "$leader" != 0 ] || fail "the brokers did not form a cluster over mutual TLS"
echo "cluster formed over mutual TLS: metadata leader broker$leader"

# The client ports: no credentials, no plaintext.
if out=$(target/release/sluice --addr "https://127.0.0.1:$(port 1)" --tls-ca "$TLS/ca.pem" topic list 2>&1); then
  fail "a request without credentials was served: $out"
fi
grep -qi "credentials" <<<"$out" || fail "a request without credentials got no word about credentials: $out"
if out=$(target/release/sluice --addr "http://127.0.0.1:$(port 1)" --token "$(cat "$TLS/admin.token")" topic list 2>&1); then
  fail "a plaintext request was served: $out"
fi
echo "refused: a request without credentials, and plaintext"

cli 1 topic create tls-cluster --partitions 3 >/dev/null || fail "creating a topic through broker 1 with the token"
inside 2 produce tls-cluster --count 300 --size 16 >/dev/null 2>&1 \
  || fail "producing through broker 2 inside the network with the client certificate"
for id in 1 2 3; do
  for _ in $(seq 1 100); do [ "$(stored_at "$id" tls-cluster)" = 300 ] && break; sleep 0.2; done
  [ "$(stored_at "$id" tls-cluster)" = 300 ] \
    || fail "broker$id serves $(stored_at "$id" tls-cluster) of 300 acknowledged records"
done
echo "300 records on every broker's replica"

"${DC[@]}" kill -s SIGKILL broker3 >/dev/null
inside 1 produce tls-cluster --count 100 --size 16 >/dev/null 2>&1 || fail "producing while broker3 is down"
"${DC[@]}" start broker3 >/dev/null
for _ in $(seq 1 150); do [ "$(stored_at 3 tls-cluster)" = 400 ] && break; sleep 0.2; done
[ "$(stored_at 3 tls-cluster)" = 400 ] \
  || fail "the restarted broker3 serves $(stored_at 3 tls-cluster) of 400 acknowledged records"
echo "broker3, SIGKILLed and started again, rejoined over mutual TLS and serves all 400 records"
echo "TLS cluster container test passed"
