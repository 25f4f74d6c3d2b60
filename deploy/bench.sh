#!/usr/bin/env bash
# make bench: starts a release broker on a fresh data dir, measures the disk (dd:
# sequential write bandwidth, fsync latency), runs the standard suite with
# `sluice bench`, and writes the figures, machine and commands to docs/BENCHMARKS.md.
# --smoke: tiny counts, nothing written (make test runs it so the tool cannot rot).
set -euo pipefail
cd "$(dirname "$0")/.."
SMOKE=0; [ "${1:-}" = "--smoke" ] && SMOKE=1
DATA=target/bench-data
rm -rf "$DATA" && mkdir -p "$DATA"
BROKER=target/release/sluice-broker
SLUICE=target/release/sluice

start_broker() {
  "$BROKER" --listen 127.0.0.1:0 --data-dir "$DATA/broker" --metrics-listen "" --gateway-listen "" > "$DATA/out" 2>> "$DATA/log" &
  PID=$!
  for _ in $(seq 1 200); do grep -q "listening on" "$DATA/out" 2>/dev/null && break; sleep 0.05; done
  ADDR="http://$(sed -n 's/^sluice-broker listening on //p' "$DATA/out")"
}
start_broker
trap 'kill -9 $PID 2>/dev/null || true' EXIT

if [ $SMOKE = 1 ]; then
  M=2000; E2E=(--rate 1000 --seconds 1)
else
  M=1000000; E2E=(--rate 20000 --seconds 10)
  seq_mb=$(dd if=/dev/zero of="$DATA/dd" bs=1M count=1024 oflag=direct conv=fdatasync 2>&1 | awk '/copied/ { print $(NF-1), $NF }')
  fsync=$(dd if=/dev/zero of="$DATA/dd" bs=4k count=1000 oflag=dsync 2>&1 | awk '/copied/ { printf "%.3f ms", $(NF-3) * 1000 / 1000 }')
  rm -f "$DATA/dd"
fi

RESULTS=()
run() {
  echo "\$ sluice bench $*" >&2
  out=$("$SLUICE" --addr "$ADDR" bench "$@")
  echo "$out" >&2
  RESULTS+=("| \`sluice bench $*\` | $(echo "$out" | tr '\n' ' ' | sed 's/  */ /g') |")
}
run produce --topic p1k --messages $M --size 1024 --producers 4 --partitions 8 --in-flight 5000
run produce --topic p100 --messages $((M * 2)) --size 100 --producers 4 --partitions 8 --in-flight 5000
run produce --topic punary --mode unary --messages $((M / 20)) --size 1024 --producers 1 --in-flight 64
run consume --topic p1k --messages $M --consumers 4
run e2e --topic e2e --size 1024 "${E2E[@]}"
rss=$(awk '/VmHWM/ { print $2, $3 }' /proc/$PID/status)
# Bytes the suite produced (message values), to set against what the broker wrote to disk.
produced=$(( M * 1024 + M * 2 * 100 + M / 20 * 1024 + ${E2E[1]} * ${E2E[3]} * 1024 ))
if [ $SMOKE = 0 ]; then
  # Fill to more than 5 GiB so the restart below shows recovery does not scan the data.
  run produce --topic fill --messages 84000 --size 65536 --producers 2 --partitions 8 --in-flight 64
  produced=$(( produced + 84000 * 65536 ))
fi
written=$(awk '/^write_bytes/ { print $2 }' /proc/$PID/io)
write_amp=$(python3 -c "print(f'{$written / $produced:.2f}')")
kill -9 $PID; wait $PID 2>/dev/null || true
stored=$(du -sh "$DATA/broker" | cut -f1)
t0=$(date +%s%N); : > "$DATA/out"; start_broker; t1=$(date +%s%N)
restart_ms=$(( (t1 - t0) / 1000000 ))
echo "broker peak RSS $rss; write amplification $write_amp ($written bytes written for $produced produced); restart after kill -9 with $stored stored: serving in $restart_ms ms (includes process start)" >&2

# TLS + token authentication against plaintext: two fresh brokers, the same 1 KiB produce run on each.
kill -9 $PID; wait $PID 2>/dev/null || true
rm -rf "$DATA/broker"; : > "$DATA/out"; start_broker
PLAIN=$ADDR
target/release/make-certs "$DATA/tls" 127.0.0.1 localhost > /dev/null
TOKEN=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
ADMIN_TOKEN=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
digest() { printf %s "$1" | sha256sum | cut -d' ' -f1; }
printf '[[token]]\nprincipal = "bench"\nsha256 = "%s"\n\n[[token]]\nprincipal = "admin"\nsha256 = "%s"\n' \
  "$(digest "$TOKEN")" "$(digest "$ADMIN_TOKEN")" > "$DATA/tls/tokens.toml"
"$BROKER" --listen 127.0.0.1:0 --data-dir "$DATA/secure" --metrics-listen "" --gateway-listen "" --superusers admin \
  --tls-cert "$DATA/tls/server.pem" --tls-key "$DATA/tls/server.key" --auth-tokens "$DATA/tls/tokens.toml" > "$DATA/out-tls" 2>> "$DATA/log" &
TLS_PID=$!
trap 'kill -9 $PID $TLS_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 200); do grep -q "listening on" "$DATA/out-tls" 2>/dev/null && break; sleep 0.05; done
SECURE="https://$(sed -n 's/^sluice-broker listening on //p' "$DATA/out-tls")"
# The bench principal is no superuser: its requests go through the permission rules.
"$SLUICE" --addr "$SECURE" --tls-ca "$DATA/tls/ca.pem" --token "$ADMIN_TOKEN" acl add principal:bench all topic 'cmp-*' > /dev/null
CMP=(produce --messages $M --size 1024 --producers 4 --partitions 8 --in-flight 5000)
run "${CMP[@]}" --topic cmp-plain
echo "\$ sluice --tls-ca ca.pem --token \$TOKEN bench ${CMP[*]} --topic cmp-tls" >&2
tls_out=$("$SLUICE" --addr "$SECURE" --tls-ca "$DATA/tls/ca.pem" --token "$TOKEN" bench "${CMP[@]}" --topic cmp-tls)
echo "$tls_out" >&2
RESULTS+=("| \`sluice --tls-ca ca.pem --token \$TOKEN bench ${CMP[*]} --topic cmp-tls\` (TLS 1.3 + bearer token + permission rules) | $(echo "$tls_out" | tr '\n' ' ' | sed 's/  */ /g') |")
kill -9 $TLS_PID 2>/dev/null || true
[ $SMOKE = 1 ] && { echo "bench smoke: 7 workloads ran (TLS + token included)"; exit 0; }

section=$(
  echo "Written by \`make bench\` on $(date -u +%Y-%m-%d). Machine: $(nproc) cores, $(free -g | awk '/Mem/ {print $2}') GiB,"
  echo "broker and load generator on the same machine. Disk (same run): sequential write $seq_mb (dd, O_DIRECT),"
  echo "fsync'd 4 KiB write $fsync each (dd oflag=dsync)."
  echo
  echo "| command | result |"
  echo "|---|---|"
  printf '%s\n' "${RESULTS[@]}"
  echo
  echo "Broker peak RSS during the suite: $rss. Write amplification over the suite and the fill: $write_amp"
  echo "($written bytes written to disk by the broker, from /proc/PID/io, for $produced bytes of message values)."
  echo "Restart after kill -9 with $stored stored: listening in $restart_ms ms, process start included."
)
python3 deploy/write-section.py docs/BENCHMARKS.md bench "$section"
