#!/usr/bin/env bash
# make bench-gateway: HTTP ingest through the gateway with h2load (HTTP/1.1, keep-alive),
# against gRPC produce of the same payload in the same run as the baseline:
#   1. one 1 KiB event per request (binary mode), 64 connections;
#   2. batch mode, 100 events of 1 KiB per request, 16 connections;
#   3. baseline: `sluice bench produce --mode unary`, one 1 KiB message per request, 64 in flight.
# Every topic: 8 partitions, durability `always` (fsync before the answer). Bounded in count.
# --smoke: tiny counts (checks the tool works). Prints the figures; docs/BENCHMARKS.md has them.
set -euo pipefail
cd "$(dirname "$0")/.."
SMOKE=0; [ "${1:-}" = "--smoke" ] && SMOKE=1
if ! command -v h2load >/dev/null; then
  echo "installing h2load (Debian's nghttp2-client)" >&2
  if [ "$(id -u)" = 0 ]; then apt-get install -y -q nghttp2-client >/dev/null; else sudo apt-get install -y -q nghttp2-client >/dev/null; fi
fi
DATA=target/bench-gateway
rm -rf "$DATA" && mkdir -p "$DATA"
BROKER=${SLUICE_BROKER_BIN:-target/release/sluice-broker}
SLUICE=target/release/sluice
"$BROKER" --listen 127.0.0.1:0 --gateway-listen 127.0.0.1:0 --data-dir "$DATA/broker" --metrics-listen "" \
  > "$DATA/out" 2> "$DATA/log" &
PID=$!
trap 'kill -9 $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 200); do grep -q "listening on" "$DATA/out" 2>/dev/null && break; sleep 0.05; done
ADDR="http://$(sed -n 's/^sluice-broker listening on //p' "$DATA/out")"
GATEWAY="http://$(sed -n 's/^sluice-broker gateway on //p' "$DATA/out")"
for t in single batch; do "$SLUICE" --addr "$ADDR" topic create "$t" --partitions 8 >/dev/null; done

if [ $SMOKE = 1 ]; then N1=2000; NB=50; NG=2000; else N1=300000; NB=6000; NG=300000; fi
head -c 1024 /dev/urandom | base64 -w0 | head -c 1024 > "$DATA/event.bin"
python3 - "$DATA/batch.json" <<'PY'
import json, sys
data = "x" * 1024
events = [{"specversion": "1.0", "id": str(i), "source": "/bench", "type": "bench", "datacontenttype": "text/plain", "data": data} for i in range(100)]
open(sys.argv[1], "w").write(json.dumps(events))
PY

h2() {  # name, requests, connections, h2load args...
  local name=$1 n=$2 c=$3; shift 3
  echo "\$ h2load --h1 -n $n -c $c $*" >&2
  out=$(h2load --h1 -n "$n" -c "$c" "$@" 2>&1)
  echo "$out" | grep -E "finished in|requests:|status codes:|time for request:" >&2
  failed=$(echo "$out" | awk '/^requests:/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^failed/) print $i }')
  non2xx=$(echo "$out" | tr -d ',' | awk '/^status codes:/ { print $5 + $7 + $9 }')
  [ "${failed:-1}" = 0 ] && [ "${non2xx:-1}" = 0 ] || { echo "FAIL: $name had failed or non-2xx requests" >&2; exit 1; }
  echo "$out" | awk -v name="$name" '/finished in/ { print name ": " $4 " req/s" }' | tr -d ','
}
single=$(h2 "gateway, 1 event/request" "$N1" 64 -d "$DATA/event.bin" \
  -H 'ce-specversion: 1.0' -H 'ce-id: 1' -H 'ce-source: /bench' -H 'ce-type: bench' -H 'content-type: text/plain' \
  "$GATEWAY/v1/topics/single/events")
batch=$(h2 "gateway, 100 events/request" "$NB" 16 -d "$DATA/batch.json" \
  -H 'content-type: application/cloudevents-batch+json' "$GATEWAY/v1/topics/batch/events")
echo "\$ sluice bench produce --topic grpc --mode unary --messages $NG --size 1024 --producers 4 --partitions 8 --in-flight 64" >&2
grpc=$("$SLUICE" --addr "$ADDR" bench produce --topic grpc --mode unary --messages "$NG" --size 1024 --producers 4 \
  --partitions 8 --in-flight 64 | tr '\n' ' ')
rate=$(echo "$batch" | awk "{ print \$(NF-1) }")
echo "$single"
echo "$batch (= $(awk -v r="$rate" 'BEGIN { printf "%.0f", r * 100 }') events/s)"
echo "gRPC unary produce baseline: $grpc"
echo "broker peak RSS: $(awk '/VmHWM/ { print $2, $3 }' /proc/$PID/status)"
