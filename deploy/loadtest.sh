#!/usr/bin/env bash
# make loadtest: runs deploy/loadtest.py against a running broker (SLUICE_ADDR or
# 127.0.0.1:50051). With --smoke it starts its own broker on a temp dir first and
# keeps the counts small (used by make test so the tool cannot rot).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/python/run.sh --generate-only
ADDR="${SLUICE_ADDR:-127.0.0.1:50051}"; ADDR="${ADDR#http://}"
ARGS=()
if [ "${1:-}" = "--smoke" ]; then
  dir=$(mktemp -d)
  target/release/sluice-broker --listen 127.0.0.1:0 --data-dir "$dir" --metrics-listen "" --gateway-listen "" > "$dir/out" 2> "$dir/log" &
  pid=$!
  trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
  for _ in $(seq 1 100); do grep -q "listening on" "$dir/out" 2>/dev/null && break; sleep 0.1; done
  ADDR=$(sed -n 's/^sluice-broker listening on //p' "$dir/out")
  ARGS=(--requests 2000 --seconds 5)
fi
PYTHONPATH=target/pygen target/pyenv/bin/python deploy/loadtest.py --addr "$ADDR" "${ARGS[@]}"
