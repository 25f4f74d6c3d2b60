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
BROKER=target/release/sluice-broker
SLUICE=target/release/sluice
M=${SLUICE_BENCH_MESSAGES:-300000}; [ $SMOKE = 1 ] && M=3000
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start NAME ARGS...: starts a broker, waits until it prints its address, sets ADDR.
start() {
  local name=$1; shift
  "$BROKER" --data-dir "$DATA/$name" --metrics-listen "" "$@" > "$DATA/$name.out" 2> "$DATA/$name.log" &
  PIDS+=($!)
  for _ in $(seq 1 200); do grep -q "listening on" "$DATA/$name.out" 2>/dev/null && break; sleep 0.05; done
  ADDR="http://$(sed -n 's/^sluice-broker listening on //p' "$DATA/$name.out")"
}

bench() {
  echo "\$ sluice bench $*" >&2
  "$SLUICE" --addr "$ADDR" bench "$@"
}
WORKLOAD=(produce --topic p1k --messages "$M" --size 1024 --producers 4 --partitions 8 --in-flight 5000)
# Then a fresh group consumes and acks what was produced (Subscribe streams, at the broker
# that serves the group in a cluster: the benchmark follows not_leader).
CONSUME=(consume --topic p1k --messages "$M" --size 1024 --consumers 4)
# Unary Produce without sluice-redirect, as ghz sends it: in the cluster, broker 1 forwards
# what it does not lead (about two partitions in three) to the leader.
UNARY=(produce --topic u1k --messages "$((M / 10))" --size 1024 --producers 4 --partitions 8 --mode unary --in-flight 32)

start single --listen 127.0.0.1:0
single=$(bench "${WORKLOAD[@]}")
single_consume=$(bench "${CONSUME[@]}")
single_unary=$(bench "${UNARY[@]}")
kill -9 "${PIDS[0]}"

c1=$(free_port); c2=$(free_port); c3=$(free_port)
PEERS="1=127.0.0.1:$c1,2=127.0.0.1:$c2,3=127.0.0.1:$c3"
for id in 3 2 1; do
  port_var="c$id"
  start "broker$id" --listen 127.0.0.1:0 --node-id "$id" --peers "$PEERS" --cluster-listen "127.0.0.1:${!port_var}"
done
# Broker 1 is the seed; the client follows not_leader answers to each partition's leader.
# Wait (bounded) until every shard is led by its preferred broker (shard s by broker
# (s - 1) mod 3 + 1): leaders move there once, soon after start, and a move in the middle
# of the consume workload would end its Subscribe streams.
for _ in $(seq 1 300); do
  status=$("$SLUICE" --addr "$ADDR" cluster status 2>/dev/null || true)
  echo "$status" | awk '/^shard/ { s = 1; n = 0; next } s { n++; if ($2 != ($1 - 1) % 3 + 1) bad = 1 } END { exit !(s && n > 0 && !bad) }' && break
  sleep 0.1
done
cluster=$(bench "${WORKLOAD[@]}")
cluster_consume=$(bench "${CONSUME[@]}")
cluster_unary=$(bench "${UNARY[@]}")
echo "single broker: $single"
echo "three-broker cluster (RF 3, same machine): $cluster"
echo "single broker, consume + ack: $single_consume"
echo "three-broker cluster, consume + ack: $cluster_consume"
echo "single broker, unary produce: $single_unary"
echo "three-broker cluster, unary produce at broker 1 (forwarded unless it leads): $cluster_unary"
# Memory after the workloads: shard logs are dropped after each snapshot, so this stays flat
# as more messages go through (before snapshots it grew with every consumed message).
for id in 1 2 3; do
  pid=${PIDS[$((4 - id))]}  # started 3, 2, 1 after the single broker
  echo "broker$id memory after the workloads: $(awk '/^VmRSS/ { printf "%d MiB", $2 / 1024 }' "/proc/$pid/status") RSS, $(awk '/^VmHWM/ { printf "%d MiB", $2 / 1024 }' "/proc/$pid/status") peak"
done
