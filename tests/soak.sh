#!/usr/bin/env bash
# `make soak`: the long versions of the reliability tests, each bounded: about
# forty minutes on a 2-core machine, plus the long-timer test's period (an hour by
# default; SLUICE_SOAK_TIMER_SECS sets it, e.g. 600 to fit a working session).
# Prints a summary (crashes survived, messages checked, faults injected, inputs
# tried, peak memory, anything lost) and writes it to docs/RELIABILITY.md. Scale
# with SLUICE_SOAK_SCALE (default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
scale=${SLUICE_SOAK_SCALE:-1}
log=target/soak.log
mkdir -p target
: >"$log"
started=$(date +%s)

# One test target with extra environment; its output is appended to the log.
run() {
  local what=$1
  shift
  echo ">> $what"
  local t0 rc step=target/soak-step.log
  t0=$(date +%s)
  set +e
  env "$@" >"$step" 2>&1
  rc=$?
  set -e
  cat "$step" >>"$log"
  grep -E "^test result:" "$step" | sed 's/^/   /'
  if [ "$rc" -ne 0 ]; then
    tail -n 60 "$step"
    echo "soak: $what FAILED (exit $rc; full output in $log)"
    exit 1
  fi
  echo "   $(( $(date +%s) - t0 )) s"
}

test_cmd=(cargo test --release --locked --workspace)
cargo build --release --locked --workspace --bins --tests >/dev/null

run "randomized SIGKILL chaos ($((120 * scale)) kills)" \
  SLUICE_CHAOS_KILLS=$((120 * scale)) timeout 1200 "${test_cmd[@]}" --test chaos -- --nocapture
run "produce crash consistency ($((40 * scale)) kills)" \
  SLUICE_CRASH_ROUNDS=$((40 * scale)) timeout 900 "${test_cmd[@]}" --test crash -- --nocapture
run "group acks across SIGKILL ($((300000 * scale)) messages)" \
  SLUICE_GROUP_CRASH_MESSAGES=$((300000 * scale)) timeout 900 "${test_cmd[@]}" --test group_crash -- --nocapture
# Explicit case counts only: proptest lets PROPTEST_CASES override every test's own count, so
# setting it here would also run thousands of RocksDB model-check cases (each opening a DB).
run "model check and storage contract" \
  SLUICE_MODEL_CASES=$((10000 * scale)) SLUICE_MODEL_ROCKSDB_CASES=$((100 * scale)) \
  SLUICE_CONTRACT_CASES=$((5000 * scale)) SLUICE_CONTRACT_ROCKSDB_CASES=$((50 * scale)) \
  timeout 900 "${test_cmd[@]}" --lib --test contract
run "decoder fuzz" \
  SLUICE_DECODE_CASES=$((5000 * scale)) PROPTEST_CASES=$((5000 * scale)) \
  timeout 900 "${test_cmd[@]}" --lib -- decode_fuzz record::tests keys::tests
run "hostile input ($((2000000 * scale)) inputs)" \
  SLUICE_FUZZ_INPUTS=$((2000000 * scale)) timeout 900 "${test_cmd[@]}" --test hostile_input -- --nocapture
run "metadata group: $((20 * scale)) leader SIGKILLs and $((20 * scale)) partition rounds across three brokers" \
  SLUICE_CLUSTER_ROUNDS=$((20 * scale)) timeout 600 "${test_cmd[@]}" --test cluster -- --nocapture
run "push subscriptions: $((20 * scale)) SIGKILLs while pushing, a handler down for a minute" \
  SLUICE_PUSH_KILLS=$((20 * scale)) SLUICE_PUSH_DOWN_SECS=60 timeout 600 "${test_cmd[@]}" --test push -- --nocapture \
  killed_while_pushing handler_that_was_down
run "schedules: $((30 * scale)) SIGKILLs at random moments, every tick stored once" \
  SLUICE_SCHEDULE_KILLS=$((30 * scale)) timeout 900 "${test_cmd[@]}" --test schedules -- --nocapture \
  ticks_are_fired_exactly_once_across_sigkill
timer=${SLUICE_SOAK_TIMER_SECS:-3600}
run "long timers: a message delayed ${timer} s and a schedule of that period across three SIGKILLs" \
  SLUICE_LONG_TIMER_SECS="$timer" timeout $((timer + 600)) "${test_cmd[@]}" --test long_timers -- --nocapture
run "consumer group: $((20 * scale)) SIGKILLs of the group's leader across three brokers" \
  SLUICE_CLUSTER_GROUP_ROUNDS=$((20 * scale)) timeout 600 "${test_cmd[@]}" --test cluster_groups -- --nocapture \
  acknowledged_messages_stay_acknowledged
run "cluster kill loop: $((290 * scale)) rounds (about 200 SIGKILLs, the rest network faults) under produce, consume, ack, nack and dead-lettering" \
  SLUICE_CLUSTER_KILLS=$((290 * scale)) timeout 1800 "${test_cmd[@]}" --test cluster_chaos -- --nocapture
run "overload, disk faults, corruption, client ride-through" \
  timeout 900 "${test_cmd[@]}" --test overload --test disk_full --test corruption --test client_resilience \
  -- --nocapture --test-threads 1

elapsed=$(( $(date +%s) - started ))
tests_passed=$(awk '/^test result:/ { p += $4 } END { print p }' "$log")
summary=$(
  echo "Run $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, ${elapsed} s, scale ${scale}: ${tests_passed} tests passed, 0 failed."
  echo
  grep -hE "^chaos summary:|^crash test seed|^sent [0-9]+, acked|messages, [0-9]+ acked before SIGKILL|^hostile_input:|^overload |^acked [0-9]+ messages before the disk reserve|^produce resumed|^cluster: |^start refused|messages: stored once each|^created 10,000|^restart with 10,000|^good client|^probe served|^cluster kill loop summary:|SIGKILLs while pushing|^handler down" "$log" \
    | sed -E 's/; log:.*//; s/^/- /'
  echo "- model check: $((10000 * scale)) random histories of produce/pull/ack/nack/expiry/seek/restart over the in-memory engine and $((100 * scale)) over RocksDB (reopened at every restart), against the reference model, all equal"
  echo "- storage contract: $((5000 * scale)) random append/rewind/reopen histories of a partition log over the in-memory engine and $((50 * scale)) over RocksDB, checked against a list of batches"
  echo "- decoders: $((5000 * scale)) arbitrary inputs per pure decoder property, $((5000 * scale)) stores reopened over arbitrary metadata"
)
echo
echo "== soak summary =="
echo "$summary"
python3 deploy/write-section.py docs/RELIABILITY.md soak "$summary"
