#!/usr/bin/env bash
# make bench-push: push subscriptions (issue 13) against a fresh release broker, with the
# bench's own HTTP sink (target/release/bench-push: answers 200 at once, counts events):
#   1. drain a preloaded backlog of 1 KiB events through a push group, 100 events per request;
#   2. the same, one event per request (CloudEvents binary mode);
#   3. baseline: pull-consume the backlog of 1. again with `sluice bench consume` (a new group,
#      4 Subscribe streams acking every message);
#   4. latency: publish over HTTP (the gateway) at 2,000 events/s, push one per request,
#      publish -> handler receipt percentiles;
#   5. baseline: `sluice bench e2e` at 2,000 msg/s (gRPC publish -> Subscribe delivery).
# Topics: 8 partitions, durability `always`; groups: concurrency 8 (the default), window 0.
# Bounded in count and time. --smoke: tiny counts (checks the tool works). Prints the figures;
# docs/BENCHMARKS.md has them. SLUICE_BROKER_BIN=<binary> benchmarks another broker build.
set -euo pipefail
cd "$(dirname "$0")/.."
SMOKE=0; [ "${1:-}" = "--smoke" ] && SMOKE=1
DATA=target/bench-push
rm -rf "$DATA" && mkdir -p "$DATA"
BROKER=${SLUICE_BROKER_BIN:-target/release/sluice-broker}
SLUICE=target/release/sluice
BENCH=target/release/bench-push
"$BROKER" --listen 127.0.0.1:0 --gateway-listen 127.0.0.1:0 --push-allowed-endpoints 127.0.0.1 \
  --data-dir "$DATA/broker" --metrics-listen "" > "$DATA/out" 2> "$DATA/log" &
PID=$!
trap 'kill -9 $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 200); do grep -q "gateway on" "$DATA/out" 2>/dev/null && break; sleep 0.05; done
ADDR="http://$(sed -n 's/^sluice-broker listening on //p' "$DATA/out")"
GATEWAY="$(sed -n 's/^sluice-broker gateway on //p' "$DATA/out")"
[ -n "$GATEWAY" ] || { echo "FAIL: the broker did not start (see $DATA/log)" >&2; exit 1; }

if [ $SMOKE = 1 ]; then
  N100=2000; N1=500; RATE=200; SECONDS_=2
else
  N100=300000; N1=20000; RATE=2000; SECONDS_=20
fi
run() {  # prints the command, then runs it
  echo "\$ $*" >&2
  "$@"
}
common=(--addr "$ADDR" --gateway "$GATEWAY" --broker-pid "$PID" --size 1024 --partitions 8 --max-seconds 300)
b100=$(run "$BENCH" "${common[@]}" throughput --topic push-b100 --events "$N100" --batch-size 100)
b1=$(run "$BENCH" "${common[@]}" throughput --topic push-b1 --events "$N1" --batch-size 1)
pull=$(run "$SLUICE" --addr "$ADDR" bench consume --topic push-b100 --messages "$N100" --consumers 4 | tr '\n' ' ')
lat=$(run "$BENCH" "${common[@]}" latency --topic push-lat --rate "$RATE" --seconds "$SECONDS_")
e2e=$(run "$SLUICE" --addr "$ADDR" bench e2e --topic e2e --size 1024 --rate "$RATE" --seconds "$SECONDS_" | tr '\n' ' ')

echo "push, 100 events/request:"; echo "$b100" | sed 's/^/  /'
echo "push, 1 event/request:"; echo "$b1" | sed 's/^/  /'
echo "pull baseline (same backlog of 1 KiB events, 4 Subscribe streams): $pull"
echo "push latency, HTTP publish -> handler:"; echo "$lat" | sed 's/^/  /'
echo "gRPC e2e baseline at the same rate: $e2e"
echo "broker peak RSS: $(awk '/VmHWM/ { print $2, $3 }' /proc/$PID/status)"
