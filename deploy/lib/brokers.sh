# Shared by the benchmark scripts: start brokers on 127.0.0.1 with fresh data dirs under
# $DATA, form a three-broker cluster, wait for its shard leaders to settle. Source it after
# setting DATA; it sets BROKER, SLUICE, PIDS (killed on exit) and ADDR.
BROKER=target/release/sluice-broker
SLUICE=target/release/sluice
PIDS=()
# Flags every started broker gets: no metrics or gateway listener (an older build without a
# gateway is started with BROKER_QUIET=(--metrics-listen "")).
BROKER_QUIET=(--metrics-listen "" --gateway-listen "")
trap 'for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start NAME ARGS...: starts a broker, waits until it prints its address, sets ADDR.
start() {
  local name=$1; shift
  "$BROKER" --data-dir "$DATA/$name" "${BROKER_QUIET[@]}" "$@" > "$DATA/$name.out" 2> "$DATA/$name.log" &
  PIDS+=($!)
  for _ in $(seq 1 200); do grep -q "listening on" "$DATA/$name.out" 2>/dev/null && break; sleep 0.05; done
  ADDR="http://$(sed -n 's/^sluice-broker listening on //p' "$DATA/$name.out")"
}

# start_cluster ARGS...: three brokers (ids 3, 2, 1, in that order, so ADDR is broker 1's)
# with ARGS each; BROKER_PID[id] holds each one's pid.
declare -A BROKER_PID
start_cluster() {
  local c1 c2 c3 peers id port_var
  c1=$(free_port); c2=$(free_port); c3=$(free_port)
  peers="1=127.0.0.1:$c1,2=127.0.0.1:$c2,3=127.0.0.1:$c3"
  for id in 3 2 1; do
    port_var="c$id"
    start "broker$id" --listen 127.0.0.1:0 --node-id "$id" --peers "$peers" --cluster-listen "127.0.0.1:${!port_var}" "$@"
    BROKER_PID[$id]=${PIDS[-1]}
  done
}

# wait_spread: waits (bounded, 30 s) until every shard is led by its preferred broker
# (shard s by broker (s - 1) mod 3 + 1): leaders move there once, soon after start.
wait_spread() {
  local status
  for _ in $(seq 1 300); do
    status=$("$SLUICE" --addr "$ADDR" cluster status 2>/dev/null || true)
    echo "$status" | awk '/^shard/ { s = 1; n = 0; next } s { n++; if ($2 != ($1 - 1) % 3 + 1) bad = 1 } END { exit !(s && n > 0 && !bad) }' && return 0
    sleep 0.1
  done
}
