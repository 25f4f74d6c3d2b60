#!/usr/bin/env bash
# make bench-single: the single broker of this build against the single broker of an older
# build (issue 12: "the single broker within 5% of its figures before this issue, in the
# same run"). The workloads are bench-cluster's single-broker ones (produce, consume + ack,
# unary produce), driven by this build's load generator against both, so only the broker
# differs; the two brokers alternate, SLUICE_BENCH_ROUNDS times each (default 3), each run
# on a fresh data dir. Prints every run and, per workload, the median of each build and the
# difference.
#
# The baseline is SLUICE_BASELINE_BROKER (a sluice-broker binary), or else the broker built
# from git revision SLUICE_BASELINE_REV (default 761c107, the last commit before
# replication) in a worktree under target/baseline (a cold release build: minutes).
# --smoke: tiny counts, one run each, this build's broker as its own baseline (make test
# runs it so the script cannot rot).
set -euo pipefail
cd "$(dirname "$0")/.."
SMOKE=0; [ "${1:-}" = "--smoke" ] && SMOKE=1
DATA=target/bench-single
rm -rf "$DATA" && mkdir -p "$DATA"
M=${SLUICE_BENCH_MESSAGES:-300000}
ROUNDS=${SLUICE_BENCH_ROUNDS:-3}
[ $SMOKE = 1 ] && M=3000 && ROUNDS=1
REV=${SLUICE_BASELINE_REV:-761c107}
# shellcheck source=deploy/lib/brokers.sh
source deploy/lib/brokers.sh
# shellcheck source=deploy/lib/workloads.sh
source deploy/lib/workloads.sh

baseline=${SLUICE_BASELINE_BROKER:-}
[ $SMOKE = 1 ] && baseline=$BROKER
if [ -z "$baseline" ]; then
  src=target/baseline/$REV
  [ -d "$src" ] || git worktree add --detach "$src" "$REV" >&2
  echo "building the broker of $REV in $src" >&2
  (cd "$src" && CARGO_TARGET_DIR="$PWD/target" cargo build --release --locked -p sluice-broker --bin sluice-broker >&2)
  baseline=$src/target/release/sluice-broker
fi
current=$BROKER

# Which flags a broker binary knows: the baseline may predate the HTTP gateway.
quiet_flags() {
  if "$1" --help 2>/dev/null | grep -q -- --gateway-listen; then
    BROKER_QUIET=(--metrics-listen "" --gateway-listen "")
  else
    BROKER_QUIET=(--metrics-listen "")
  fi
}
# The msg/s figure of a `sluice bench` line.
rate() { sed -n 's/.* = \([0-9]*\) msg\/s.*/\1/p' <<< "$1"; }

declare -A RATES
run() {
  local label=$1 binary=$2 round=$3 produce consume unary
  BROKER=$binary; quiet_flags "$binary"
  start "$label-$round" --listen 127.0.0.1:0
  produce=$(bench "${WORKLOAD[@]}")
  consume=$(bench "${CONSUME[@]}")
  unary=$(bench "${UNARY[@]}")
  kill -9 "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true
  rm -rf "${DATA:?}/$label-$round"
  echo "$label, run $round: produce $(rate "$produce") msg/s, consume + ack $(rate "$consume") msg/s, unary produce $(rate "$unary") msg/s"
  RATES[$label produce]+="$(rate "$produce") "
  RATES[$label consume]+="$(rate "$consume") "
  RATES[$label unary]+="$(rate "$unary") "
}

echo "baseline: $baseline; this build: $current; $M messages, $ROUNDS runs each, alternating"
for round in $(seq 1 "$ROUNDS"); do
  run baseline "$baseline" "$round"
  run current "$current" "$round"
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
for w in produce consume unary; do
  b=$(median <<< "${RATES[baseline $w]}"); c=$(median <<< "${RATES[current $w]}")
  echo "median $w: baseline $b msg/s, this build $c msg/s ($(awk -v b="$b" -v c="$c" 'BEGIN { printf "%+.1f%%", (c - b) * 100 / b }'))"
done
