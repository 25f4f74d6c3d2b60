#!/usr/bin/env bash
# Cluster container test: three brokers from deploy/cluster.yml on their own Compose
# network and volumes. They elect a metadata leader and register their advertised
# endpoints; a topic created through broker 1 is listed by broker 3; `sluice cluster
# status` runs inside the network; records produced inside the network through broker 1
# reach each partition's leader (the CLI follows not_leader to the advertised endpoints);
# the leader's container is SIGKILLed, the other two elect a new leader and accept a change
# and more records, and the killed broker, started again, catches up on topics and records.
# A broker whose volume is lost is replaced (`sluice cluster replace`) and then serves as
# part of the quorum. A partition's leader is SIGKILLed under produce load: the producer
# carries on and the broker rejoins. Removes everything it created.
# Without Docker: a loud skip, except under CI=true where it is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! docker info >/dev/null 2>&1; then
  if [ "${CI:-}" = "true" ]; then
    echo "FAIL: Docker is not available, and CI=true requires the cluster container test" >&2
    exit 1
  fi
  echo "################################################################" >&2
  echo "# SKIPPED: cluster container test (no Docker engine reachable)  #" >&2
  echo "################################################################" >&2
  exit 0
fi
if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); else COMPOSE=(docker-compose); fi
# Below the kernel's ephemeral range (32768+), as in test-compose.sh.
export SLUICE_GRPC_PORT_1="${SLUICE_GRPC_PORT_1:-25061}" SLUICE_GRPC_PORT_2="${SLUICE_GRPC_PORT_2:-25062}" \
  SLUICE_GRPC_PORT_3="${SLUICE_GRPC_PORT_3:-25063}"
PROJECT="sluice-cluster-test-$$"
DC=("${COMPOSE[@]}" -p "$PROJECT" -f deploy/cluster.yml)
port() { local v="SLUICE_GRPC_PORT_$1"; echo "${!v}"; }
cli() { local id=$1; shift; target/release/sluice --addr "http://127.0.0.1:$(port "$id")" "$@"; }
# The CLI inside the Compose network, given broker $1 (leaders are reached by their advertised names).
inside() {
  local id=$1; shift
  "${DC[@]}" --profile tools run --rm --entrypoint /usr/local/bin/sluice status --addr "http://broker$id:50051" "$@"
}
# Records broker $1 serves for topic $2 (the sum of its partitions' committed ends).
stored_at() { cli "$1" topic describe "$2" 2>/dev/null | awk 'p { s += $3 } /^partition/ { p = 1 } END { print s + 0 }'; }
cleanup() { "${DC[@]}" --profile tools down -v --remove-orphans >/dev/null 2>&1 || true; }
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  "${DC[@]}" logs --tail 20 >&2 || true
  exit 1
}

docker image inspect "${SLUICE_IMAGE:-sluice:latest}" >/dev/null 2>&1 || bash deploy/build-image.sh

# The metadata leader broker $1 reports, once it knows of 3 registered brokers (0: not yet).
leader_seen_by() {
  cli "$1" cluster status --output json 2>/dev/null | python3 -c '
import json, sys
m = json.load(sys.stdin)
ok = len(m["brokers"]) == 3 and all(b["endpoint"] == "broker%d:50051" % b["id"] for b in m["brokers"])
print(m["metadata_leader"] if ok else 0)' 2>/dev/null || echo 0
}

# Waits (at most 60 s) until the brokers in "$@" agree on a leader other than $NOT; prints it.
agreed_leader() {
  local first seen all
  for _ in $(seq 1 120); do
    all=1; first=""
    for id in "$@"; do
      seen=$(leader_seen_by "$id")
      [ -z "$first" ] && first=$seen
      if [ "$seen" = 0 ] || [ "$seen" != "$first" ] || [ "$seen" = "${NOT:-none}" ]; then all=0; fi
    done
    [ $all = 1 ] && { echo "$first"; return 0; }
    sleep 0.5
  done
  return 1
}

# Waits (at most 30 s) until broker $1 lists topic $2.
lists_topic() {
  for _ in $(seq 1 60); do
    cli "$1" topic list 2>/dev/null | cut -f1 | grep -x "$2" >/dev/null && return 0
    sleep 0.5
  done
  return 1
}

"${DC[@]}" up -d broker1 broker2 broker3
leader=$(agreed_leader 1 2 3) || fail "the three brokers did not agree on a metadata leader with every endpoint registered"
echo "cluster formed: metadata leader broker$leader"

cli 1 topic create compose-cluster --partitions 2 >/dev/null || fail "creating a topic through broker 1"
lists_topic 3 compose-cluster || fail "broker 3 does not list the topic created through broker 1"
# Written to a file and then searched: `grep -q` at the end of a pipe exits at its first
# match, and the writer (tee) then dies of SIGPIPE, failing the pipeline under pipefail.
"${DC[@]}" --profile tools run --rm status > /tmp/sluice-cluster-status.$$ \
  && grep -q "metadata leader" /tmp/sluice-cluster-status.$$ \
  || { cat /tmp/sluice-cluster-status.$$ >&2; fail "sluice cluster status inside the network"; }
cat /tmp/sluice-cluster-status.$$
rm -f /tmp/sluice-cluster-status.$$
inside 1 produce compose-cluster --count 200 --size 16 >/dev/null 2>&1 \
  || fail "producing through broker 1 inside the network (following leaders)"

"${DC[@]}" kill -s SIGKILL "broker$leader" >/dev/null
survivors=()
for id in 1 2 3; do [ "$id" != "$leader" ] && survivors+=("$id"); done
new=$(NOT=$leader agreed_leader "${survivors[@]}") || fail "the survivors did not elect a new leader"
cli "${survivors[0]}" topic create after-failover >/dev/null || fail "creating a topic after the failover"
inside "${survivors[0]}" produce compose-cluster --count 200 --size 16 >/dev/null 2>&1 \
  || fail "producing after the failover"
"${DC[@]}" start "broker$leader" >/dev/null
lists_topic "$leader" after-failover || fail "the restarted broker$leader did not catch up"
lists_topic "$leader" compose-cluster || fail "the restarted broker$leader lost a topic"
for _ in $(seq 1 100); do [ "$(stored_at "$leader" compose-cluster)" = 400 ] && break; sleep 0.2; done
[ "$(stored_at "$leader" compose-cluster)" = 400 ] \
  || fail "the restarted broker$leader serves $(stored_at "$leader" compose-cluster) of 400 acknowledged records"
# A consumer group in the cluster: consumed inside the network through broker 1 (the CLI
# follows not_leader to the broker that serves the group), every record once, and every
# broker's replica of the group's state, the restarted one's too, shows all acknowledged.
cli 1 group create compose-readers --topic compose-cluster >/dev/null || fail "creating a group through broker 1"
consumed=$(inside 1 consume compose-cluster --group compose-readers --max 400 2>/dev/null | wc -l)
[ "$consumed" = 400 ] || fail "the group delivered $consumed of 400 records"
backlog_at() { cli "$1" --output json group describe compose-readers 2>/dev/null \
  | python3 -c 'import json,sys; print(json.load(sys.stdin).get("backlog", -1))' 2>/dev/null || echo -1; }
for id in 1 2 3; do
  for _ in $(seq 1 100); do [ "$(backlog_at "$id")" = 0 ] && break; sleep 0.2; done
  [ "$(backlog_at "$id")" = 0 ] || fail "broker$id's replica of the group's state shows backlog $(backlog_at "$id")"
done
# A lost volume: broker3's container and volume are removed, it starts again empty, and
# `sluice cluster replace 3` inside the network makes it a replica of every group again;
# then, with broker1 SIGKILLed, brokers 2 and 3 are the quorum that takes more records.
"${DC[@]}" kill -s SIGKILL broker3 >/dev/null
"${DC[@]}" rm -f broker3 >/dev/null
docker volume rm "${PROJECT}_broker3-data" >/dev/null || fail "removing broker3's volume"
"${DC[@]}" up -d broker3 >/dev/null
inside 1 cluster replace 3 > /tmp/sluice-replace.$$ 2>&1 \
  || { cat /tmp/sluice-replace.$$ >&2; fail "sluice cluster replace 3 inside the network"; }
tail -n 1 /tmp/sluice-replace.$$
rm -f /tmp/sluice-replace.$$
for _ in $(seq 1 150); do [ "$(stored_at 3 compose-cluster)" = 400 ] && break; sleep 0.2; done
[ "$(stored_at 3 compose-cluster)" = 400 ] \
  || fail "the replaced broker3 serves $(stored_at 3 compose-cluster) of 400 acknowledged records"
"${DC[@]}" kill -s SIGKILL broker1 >/dev/null
inside 2 produce compose-cluster --count 100 --size 16 >/dev/null 2>&1 \
  || fail "producing through broker 2 with broker1 down (brokers 2 and 3 must be a quorum)"
for _ in $(seq 1 100); do [ "$(stored_at 3 compose-cluster)" = 500 ] && break; sleep 0.2; done
[ "$(stored_at 3 compose-cluster)" = 500 ] || fail "broker3 serves $(stored_at 3 compose-cluster) of 500 records"
# Under produce load: a producer inside the network (seeded with broker2) sends 3,000
# records while the leader of a partition (another broker) is SIGKILLed; the producer
# carries on and acknowledges every record, and the killed broker, started again, rejoins
# and serves all of them.
"${DC[@]}" start broker1 >/dev/null
for _ in $(seq 1 150); do [ "$(stored_at 1 compose-cluster)" = 500 ] && break; sleep 0.2; done
inside 2 produce compose-cluster --count 3000 --size 16 > /tmp/sluice-load.$$ 2>&1 &
load=$!
for _ in $(seq 1 100); do [ "$(stored_at 2 compose-cluster)" -gt 600 ] && break; sleep 0.1; done
# Broker1 gets its shards back by the spreading (a few seconds after it rejoined).
victim=0
for _ in $(seq 1 60); do
  victim=$(cli 2 --output json cluster status --topic compose-cluster 2>/dev/null | python3 -c '
import json, sys
leaders = [p["leader"] for p in json.load(sys.stdin)["partitions"] if p["leader"] not in (0, 2)]
print(leaders[0] if leaders else 0)' || echo 0)
  [ "$victim" != 0 ] && break
  sleep 0.25
done
[ "$victim" != 0 ] || fail "no partition led by a broker other than broker2 within 15 s"
"${DC[@]}" kill -s SIGKILL "broker$victim" >/dev/null
wait "$load" || { cat /tmp/sluice-load.$$ >&2; fail "the producer did not carry on when broker$victim (a partition leader) was killed"; }
rm -f /tmp/sluice-load.$$
"${DC[@]}" start "broker$victim" >/dev/null
for _ in $(seq 1 150); do [ "$(stored_at "$victim" compose-cluster)" = 3500 ] && break; sleep 0.2; done
[ "$(stored_at "$victim" compose-cluster)" = 3500 ] \
  || fail "broker$victim, killed under load and restarted, serves $(stored_at "$victim" compose-cluster) of 3500 records"
echo "cluster container test passed: leader broker$leader SIGKILLed, broker$new elected, broker$leader caught up (400 records), a group consumed all 400 and every replica shows them acknowledged; broker3 replaced on an empty volume and a quorum with broker2 (500 records); broker$victim killed under produce load, every record acknowledged, and it rejoined (3500 records)"
