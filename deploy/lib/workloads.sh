# Shared by bench-cluster.sh and bench-single.sh: the workloads that compare brokers, as
# arguments of `sluice bench`. Set M (messages) before sourcing.

# bench ARGS...: this build's load generator against the broker at $ADDR.
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

# Bytes a broker process has had written to disk (WAL, tables, compactions).
written() { awk '/^write_bytes/ { print $2 }' "/proc/$1/io"; }
# Write amplification of the produce workload at one broker: bytes it wrote per payload byte.
amplification() { awk -v a="$1" -v b="$2" -v n="$M" 'BEGIN { printf "%.2f", (b - a) / (n * 1024) }'; }
