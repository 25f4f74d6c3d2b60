#!/usr/bin/env bash
# make bench-scale: the cluster's scale figures (issue 12): three brokers on 127.0.0.1
# with 1,000 partitions and 1,000 consumer groups, each broker's CPU while idle (target:
# below 10% of a core); then 10,000 more partitions created, and how long until every
# broker describes them and a message produced to the last partition of each topic is
# stored (target: within a minute). On a 2-core machine the three brokers share the
# cores. --smoke: tiny counts (make test runs it so the script cannot rot).
set -euo pipefail
cd "$(dirname "$0")/.."
SMOKE=0; [ "${1:-}" = "--smoke" ] && SMOKE=1
PARTITIONS=1000; NGROUPS=1000; BIG_TOPICS=10; BIG_PARTITIONS=1000; IDLE_SECS=30
[ $SMOKE = 1 ] && { PARTITIONS=20; NGROUPS=10; BIG_TOPICS=2; BIG_PARTITIONS=50; IDLE_SECS=2; }
DATA=target/bench-scale
rm -rf "$DATA" && mkdir -p "$DATA"
# shellcheck source=deploy/lib/brokers.sh
source deploy/lib/brokers.sh

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
# cpu_ticks PID: user + system CPU of a process so far, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

start_cluster --max-partitions 20000
wait_spread

t0=$(now)
"$SLUICE" --addr "$ADDR" topic create idle --partitions "$PARTITIONS" > /dev/null
for i in $(seq 1 "$NGROUPS"); do
  "$SLUICE" --addr "$ADDR" group create --topic idle "idle-$i" > /dev/null
done
echo "created $PARTITIONS partitions and $NGROUPS groups in $(since "$t0") s"

# Settle (elections, leader moves, the groups' first state), then measure idle CPU.
sleep 5
hz=$(getconf CLK_TCK)
declare -A before
for id in 1 2 3; do before[$id]=$(cpu_ticks "${BROKER_PID[$id]}"); done
sleep "$IDLE_SECS"
for id in 1 2 3; do
  used=$(( $(cpu_ticks "${BROKER_PID[$id]}") - ${before[$id]} ))
  echo "broker$id idle with $PARTITIONS partitions and $NGROUPS groups: $(awk -v u="$used" -v hz="$hz" -v s="$IDLE_SECS" 'BEGIN { printf "%.1f", 100 * u / hz / s }')% of a core, $(awk '/^VmRSS/ { printf "%d MiB", $2 / 1024 }' "/proc/${BROKER_PID[$id]}/status") RSS"
done

t0=$(now)
for t in $(seq 1 "$BIG_TOPICS"); do
  "$SLUICE" --addr "$ADDR" topic create "big-$t" --partitions "$BIG_PARTITIONS" > /dev/null
done
created=$(since "$t0")
for id in 1 2 3; do
  addr="http://$(sed -n 's/^sluice-broker listening on //p' "$DATA/broker$id.out")"
  for t in $(seq 1 "$BIG_TOPICS"); do
    for _ in $(seq 1 600); do
      "$SLUICE" --addr "$addr" topic describe "big-$t" > /dev/null 2>&1 && break
      sleep 0.1
    done
  done
done
described=$(since "$t0")
last="http://$(sed -n 's/^sluice-broker listening on //p' "$DATA/broker3.out")"
total=0
for t in $(seq 1 "$BIG_TOPICS"); do
  n=$("$SLUICE" --addr "$last" --output json topic describe "big-$t" | python3 -c 'import json, sys; print(len(json.load(sys.stdin)["partition_details"]))')
  total=$((total + n))
done
[ "$total" = $((BIG_TOPICS * BIG_PARTITIONS)) ] || { echo "broker 3 describes $total partitions, not $((BIG_TOPICS * BIG_PARTITIONS))" >&2; exit 1; }
for t in $(seq 1 "$BIG_TOPICS"); do
  "$SLUICE" --addr "$ADDR" produce "big-$t" --partition $((BIG_PARTITIONS - 1)) --count 1 > /dev/null 2>&1
done
echo "$((BIG_TOPICS * BIG_PARTITIONS)) partitions: created in $created s, described by all three brokers after $described s, a message stored in the last partition of each topic after $(since "$t0") s"
