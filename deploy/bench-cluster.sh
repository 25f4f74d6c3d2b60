#!/usr/bin/env bash
# make bench-cluster: the same produce workload against a single broker and against a
# three-broker cluster (three processes on 127.0.0.1, each with its own fresh data dir),
# in one run, so the cost of replication is read against a baseline measured minutes
# apart on the same machine. On a 2-core machine the three brokers and the load
# generator share the cores: read the cluster's figure per machine, not per broker.
# --smoke: tiny counts (make test runs it so the script cannot rot).
set -euo pipefail
cd "$(dirname "$0")/.."
SMOKE=0; [ "${1:-}" = "--smoke" ] && SMOKE=1
DATA=target/bench-cluster
rm -rf "$DATA" && mkdir -p "$DATA"
M=${SLUICE_BENCH_MESSAGES:-300000}; [ $SMOKE = 1 ] && M=3000
# shellcheck source=deploy/lib/brokers.sh
source deploy/lib/brokers.sh

# shellcheck source=deploy/lib/workloads.sh
source deploy/lib/workloads.sh

start single --listen 127.0.0.1:0
w0=$(written "${PIDS[0]}")
single=$(bench "${WORKLOAD[@]}")
single_wa=$(amplification "$w0" "$(written "${PIDS[0]}")")
single_consume=$(bench "${CONSUME[@]}")
single_unary=$(bench "${UNARY[@]}")
kill -9 "${PIDS[0]}"

# Sum of the shards' terms as broker 1 sees them: each election raises one.
terms() { "$SLUICE" --addr "$ADDR" --output json cluster status 2>/dev/null \
  | python3 -c 'import json,sys; print(sum(s["term"] for s in json.load(sys.stdin)["shards"]))' 2>/dev/null || echo 0; }

# Extra flags for the three brokers (e.g. SLUICE_CLUSTER_FLAGS="--shard-election-timeout-ms 400").
read -r -a CLUSTER_FLAGS <<< "${SLUICE_CLUSTER_FLAGS:-}"
start_cluster "${CLUSTER_FLAGS[@]}"
# Broker 1 is the seed; the client follows not_leader answers to each partition's leader.
# Leaders settle first: a move in the middle of the consume workload would end its
# Subscribe streams.
wait_spread
terms_before=$(terms)
declare -A W0
for id in 1 2 3; do W0[$id]=$(written "${BROKER_PID[$id]}"); done
cluster=$(bench "${WORKLOAD[@]}")
cluster_wa=""
for id in 1 2 3; do cluster_wa+="broker$id $(amplification "${W0[$id]}" "$(written "${BROKER_PID[$id]}")")  "; done
cluster_consume=$(bench "${CONSUME[@]}")
cluster_unary=$(bench "${UNARY[@]}")
terms_after=$(terms)
echo "shard elections during the cluster workloads (shard terms raised): $((terms_after - terms_before))${SLUICE_CLUSTER_FLAGS:+ (brokers run with $SLUICE_CLUSTER_FLAGS)}"
echo "single broker: $single"
echo "three-broker cluster (RF 3, same machine): $cluster"
echo "write amplification of the produce workload (bytes written per payload byte): single broker $single_wa; cluster, per replica: $cluster_wa"
echo "single broker, consume + ack: $single_consume"
echo "three-broker cluster, consume + ack: $cluster_consume"
echo "single broker, unary produce: $single_unary"
echo "three-broker cluster, unary produce at broker 1 (forwarded unless it leads): $cluster_unary"
# Memory after the workloads: shard logs are dropped after each snapshot, so this stays flat
# as more messages go through (before snapshots it grew with every consumed message).
for id in 1 2 3; do
  pid=${BROKER_PID[$id]}
  echo "broker$id memory after the workloads: $(awk '/^VmRSS/ { printf "%d MiB", $2 / 1024 }' "/proc/$pid/status") RSS, $(awk '/^VmHWM/ { printf "%d MiB", $2 / 1024 }' "/proc/$pid/status") peak"
done
