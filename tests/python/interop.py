"""Python client generated from proto/ against the real broker: reflection,
health, topics, produce, fetch, groups (pull, ack, nack with delay, per-id
failures with reasons), errors with their `sluice-reason`; then against a
three-broker cluster: a produce follows `not_leader` answers (the
`sluice-leader` trailer) to each partition's leader, Cluster.Metadata names
the same leaders, and every broker serves the records. Last, over TLS with
authentication (certificates from the workspace's `make-certs`): the same
suite with a bearer token, a client certificate (mTLS) standing in for a
token, and the refusals: no credentials, a wrong token, no rights, plaintext."""

import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from sluice.v1 import (admin_pb2, admin_pb2_grpc, cluster_pb2, cluster_pb2_grpc, common_pb2, consumer_pb2,
                       consumer_pb2_grpc, producer_pb2, producer_pb2_grpc)

passed = failed = 0


def check(what, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok   {what}")
    else:
        failed += 1
        print(f"FAIL {what} {detail}")


def reason(e):
    return dict(e.trailing_metadata() or ()).get("sluice-reason")


def failures(resp):
    return [(f.ack_id, f.code, f.reason) for f in resp.failures]


INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION.value[0]


def start_broker(binary, data_dir, extra=()):
    proc = subprocess.Popen(
        [binary, "--listen", "127.0.0.1:0", "--data-dir", data_dir, "--metrics-listen", "", "--gateway-listen", "", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline().strip()
    prefix = "sluice-broker listening on "
    if not line.startswith(prefix):
        proc.kill()
        raise SystemExit(f"broker did not start: {line!r}")
    return proc, line[len(prefix):]


def main(binary):
    with tempfile.TemporaryDirectory() as data_dir:
        proc, addr = start_broker(binary, data_dir)
        try:
            run(grpc.insecure_channel(addr))
        finally:
            proc.terminate()
            check("broker exits 0 on SIGTERM", proc.wait(timeout=30) == 0)
    cluster(binary)
    secure(binary)
    print(f"python interop: {passed} passed, {failed} failed")
    return 1 if failed else 0


def run(channel):
    grpc.channel_ready_future(channel).result(timeout=20)
    health = health_pb2_grpc.HealthStub(channel)
    check("health SERVING", health.Check(health_pb2.HealthCheckRequest(service="")).status == health_pb2.HealthCheckResponse.SERVING)
    check("per-service health", health.Check(health_pb2.HealthCheckRequest(service="sluice.v1.Producer")).status == health_pb2.HealthCheckResponse.SERVING)

    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    listed = list(reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    services = {s.name for s in listed[0].list_services_response.service}
    check("reflection (v1alpha) lists services without .proto files",
          {"sluice.v1.Admin", "sluice.v1.Producer", "sluice.v1.Consumer", "grpc.health.v1.Health"} <= services, services)
    by_symbol = list(reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol="sluice.v1.Producer.Produce")])))
    check("reflection answers a method symbol", len(by_symbol[0].file_descriptor_response.file_descriptor_proto) > 0)

    admin = admin_pb2_grpc.AdminStub(channel)
    producer = producer_pb2_grpc.ProducerStub(channel)
    consumer = consumer_pb2_grpc.ConsumerStub(channel)
    admin.CreateTopic(admin_pb2.CreateTopicRequest(name="py", partitions=2))
    msgs = [common_pb2.Message(key=b"k1", value=f"v{i}".encode(), headers=[common_pb2.Header(key="lang", value=b"python")]) for i in range(5)]
    resp = producer.Produce(producer_pb2.ProduceRequest(topic="py", messages=msgs))
    check("produce returns an offset per message", len(resp.offsets) == 5 and len(set(resp.partitions)) == 1)
    fetched = consumer.Fetch(consumer_pb2.FetchRequest(topic="py", partition=resp.partitions[0], offset=resp.offsets[0]))
    check("fetch reads them back with headers",
          [r.value for r in fetched.records] == [m.value for m in msgs] and fetched.records[0].headers[0].value == b"python")

    try:
        producer.Produce(producer_pb2.ProduceRequest(topic="nope", messages=msgs))
        check("unknown topic is NOT_FOUND", False)
    except grpc.RpcError as e:
        check("unknown topic is NOT_FOUND", e.code() == grpc.StatusCode.NOT_FOUND and reason(e) == "topic_not_found", e.details())
    try:
        producer.Produce(producer_pb2.ProduceRequest(topic="a/b", messages=msgs))
        check("invalid topic name is INVALID_ARGUMENT", False)
    except grpc.RpcError as e:
        check("invalid topic name is INVALID_ARGUMENT", e.code() == grpc.StatusCode.INVALID_ARGUMENT and reason(e) == "invalid_argument", e.details())

    admin.CreateGroup(admin_pb2.CreateGroupRequest(name="pyg", config=admin_pb2.GroupConfig(topic="py", ack_deadline_ms=10000)))
    pulled = consumer.Pull(consumer_pb2.PullRequest(group="pyg", consumer_id="py-1", max_messages=10, max_wait_ms=2000))
    check("pull leases every message", len(pulled.messages) == 5 and all(m.attempt == 1 for m in pulled.messages))
    ids = [m.ack_id for m in pulled.messages]
    acked = consumer.Ack(consumer_pb2.AckRequest(group="pyg", ack_ids=ids[:2] + ["not-an-id"] + ids[2:4]))
    check("ack with a malformed id applies the others and reports it",
          failures(acked) == [("not-an-id", INVALID_ARGUMENT, "malformed_ack_id")], acked)
    modified = consumer.ModifyAckDeadline(consumer_pb2.ModifyAckDeadlineRequest(group="pyg", ack_ids=ids[:1], ack_deadline_ms=5000))
    check("extending an acked message reports not_leased",
          failures(modified) == [(ids[0], FAILED_PRECONDITION, "not_leased")], modified)
    consumer.Nack(consumer_pb2.NackRequest(group="pyg", ack_ids=ids[4:], delay_ms=700, reason="try later", consumer_id="py-1"))
    nacked_at = time.monotonic()
    again = consumer.Pull(consumer_pb2.PullRequest(group="pyg", consumer_id="py-1", max_messages=10, max_wait_ms=5000))
    waited = time.monotonic() - nacked_at
    check("nacked message comes back after its delay as attempt 2",
          len(again.messages) == 1 and again.messages[0].attempt == 2 and waited >= 0.6, (len(again.messages), waited))
    consumer.Ack(consumer_pb2.AckRequest(group="pyg", ack_ids=[again.messages[0].ack_id]))
    info = admin.DescribeGroup(admin_pb2.DescribeGroupRequest(name="pyg"))
    check("group drained", info.backlog_messages == 0 and info.in_flight == 0, info)
    check("no dead letters: none dead-lettered, none stored", info.dead_lettered == 0 and info.dead_letters_stored == 0, info)
    zero = admin.CreateGroup(admin_pb2.CreateGroupRequest(name="pyz", config=admin_pb2.GroupConfig(
        topic="py", max_delivery_attempts=3, dead_letter_topic="py.dlq",
        backoff=admin_pb2.Backoff(initial_ms=0, jitter=0.0))))
    b = zero.config.backoff
    check("backoff initial_ms = 0 and jitter = 0 can be set (presence)",
          b.HasField("initial_ms") and b.initial_ms == 0 and b.HasField("jitter") and b.jitter == 0.0 and b.max_ms == 60000, b)
    unlimited = admin.UpdateGroup(admin_pb2.UpdateGroupRequest(name="pyz", config=admin_pb2.GroupConfig(max_delivery_attempts=0)))
    check("UpdateGroup with max_delivery_attempts = 0 removes the limit",
          unlimited.config.max_delivery_attempts == 0 and unlimited.config.backoff.jitter == 0.0, unlimited.config)
    only_bad = consumer.Ack(consumer_pb2.AckRequest(group="pyg", ack_ids=["not-an-id"]))
    check("an ack whose only id is malformed is OK with a per-id failure",
          failures(only_bad) == [("not-an-id", INVALID_ARGUMENT, "malformed_ack_id")], only_bad)
    try:
        consumer.Ack(consumer_pb2.AckRequest(group="nogroup", ack_ids=["0:0:1"]))
        check("ack for an unknown group is NOT_FOUND", False)
    except grpc.RpcError as e:
        check("ack for an unknown group is NOT_FOUND", e.code() == grpc.StatusCode.NOT_FOUND and reason(e) == "group_not_found", e.details())


def secure(binary):
    """The broker over TLS with tokens, client certificates and permission rules."""
    admin_token, reader_token = "py-admin-" + os.urandom(16).hex(), "py-reader-" + os.urandom(16).hex()
    digest = lambda t: hashlib.sha256(t.encode()).hexdigest()
    with tempfile.TemporaryDirectory() as tls, tempfile.TemporaryDirectory() as data_dir:
        make_certs = os.path.join(os.path.dirname(binary), "make-certs")
        subprocess.run([make_certs, tls, "127.0.0.1", "localhost"], check=True, stdout=subprocess.DEVNULL)
        tokens = os.path.join(tls, "tokens.toml")
        with open(tokens, "w") as f:
            f.write(f'[[token]]\nprincipal = "py-admin"\nsha256 = "{digest(admin_token)}"\n\n'
                    f'[[token]]\nprincipal = "py-reader"\nsha256 = "{digest(reader_token)}"\n\n'
                    f'[[certificate]]\nsubject = "sluice-client"\nprincipal = "py-admin"\n')
        read = lambda name: open(os.path.join(tls, name), "rb").read()
        path = lambda name: os.path.join(tls, name)
        proc, addr = start_broker(binary, data_dir, [
            "--tls-cert", path("server.pem"), "--tls-key", path("server.key"), "--tls-client-ca", path("ca.pem"),
            "--auth-tokens", tokens, "--superusers", "py-admin"])
        try:
            tls_only = grpc.ssl_channel_credentials(root_certificates=read("ca.pem"))
            with_token = lambda token: grpc.composite_channel_credentials(
                tls_only, grpc.access_token_call_credentials(token))
            print("---- over TLS with a bearer token")
            run(grpc.secure_channel(addr, with_token(admin_token)))
            produce = producer_pb2.ProduceRequest(topic="py", messages=[common_pb2.Message(value=b"secure")])

            def produce_with(credentials):
                with grpc.secure_channel(addr, credentials) as ch:
                    return producer_pb2_grpc.ProducerStub(ch).Produce(produce, timeout=10)

            def refused(credentials):
                try:
                    produce_with(credentials)
                    return None
                except grpc.RpcError as e:
                    return e.code()

            mtls = grpc.ssl_channel_credentials(
                root_certificates=read("ca.pem"), private_key=read("client.key"), certificate_chain=read("client.pem"))
            check("tls: a client certificate (mTLS) authenticates without a token", len(produce_with(mtls).offsets) == 1)
            check("tls: no credentials is UNAUTHENTICATED", refused(tls_only) == grpc.StatusCode.UNAUTHENTICATED)
            check("tls: a wrong token is UNAUTHENTICATED",
                  refused(with_token("py-wrong-" + os.urandom(16).hex())) == grpc.StatusCode.UNAUTHENTICATED)
            check("tls: a principal without the right is PERMISSION_DENIED",
                  refused(with_token(reader_token)) == grpc.StatusCode.PERMISSION_DENIED)
            with grpc.insecure_channel(addr) as ch:
                try:
                    producer_pb2_grpc.ProducerStub(ch).Produce(produce, timeout=10)
                    plaintext = None
                except grpc.RpcError as e:
                    plaintext = e.code()
            check("tls: plaintext to the TLS port is not served", plaintext == grpc.StatusCode.UNAVAILABLE, plaintext)
        finally:
            proc.terminate()
            check("tls: broker exits 0 on SIGTERM", proc.wait(timeout=30) == 0)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def produce_following_leaders(first, request, deadline_s=20.0):
    """Sends `request` to `first`, following not_leader answers to the broker named by
    the sluice-leader trailer; returns (response, address that answered, redirects)."""
    # sluice-redirect: this client follows not_leader itself, so brokers answer it
    # instead of forwarding the produce to the leader.
    return call_following_leaders(
        first,
        lambda ch: producer_pb2_grpc.ProducerStub(ch).Produce(request, timeout=10, metadata=(("sluice-redirect", "1"),)),
        deadline_s)


def call_following_leaders(first, call, deadline_s=20.0):
    """Runs `call` on a channel to `first`, following not_leader answers (partitions and
    consumer groups alike); returns (response, address that answered, redirects)."""
    at, redirects, deadline = first, 0, time.monotonic() + deadline_s
    while True:
        try:
            with grpc.insecure_channel(at) as ch:
                return call(ch), at, redirects
        except grpc.RpcError as e:
            trailers = dict(e.trailing_metadata() or ())
            if e.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            leader = trailers.get("sluice-leader")
            if trailers.get("sluice-reason") == "not_leader" and leader and leader != at:
                at, redirects = leader, redirects + 1
            else:
                time.sleep(0.05)
                at = first


def cluster(binary):
    ports = [free_port() for _ in range(3)]
    peers = ",".join(f"{i + 1}=127.0.0.1:{p}" for i, p in enumerate(ports))
    with tempfile.TemporaryDirectory() as root:
        brokers = []
        try:
            for i, port in enumerate(ports):
                extra = ["--node-id", str(i + 1), "--peers", peers, "--cluster-listen", f"127.0.0.1:{port}"]
                brokers.append(start_broker(binary, f"{root}/b{i + 1}", extra))
            addrs = [addr for _, addr in brokers]
            first = grpc.insecure_channel(addrs[0])
            meta = cluster_pb2_grpc.ClusterStub(first)
            deadline = time.monotonic() + 30
            while True:
                m = meta.Metadata(cluster_pb2.MetadataRequest())
                # Every shard elected, and at its preferred broker (leaders move there once,
                # soon after start), so the leaders found below stay where they are.
                if len(m.brokers) == 3 and m.shards and all(
                        s.status.leader == (s.id - 1) % 3 + 1 for s in m.shards):
                    break
                if time.monotonic() > deadline:
                    check("cluster: three brokers register and every shard elects its preferred leader", False, m)
                    return
                time.sleep(0.1)
            check("cluster: Metadata lists three brokers and the shards", m.clustered and len(m.shards) == 6, m)
            admin_pb2_grpc.AdminStub(first).CreateTopic(admin_pb2.CreateTopicRequest(name="pyc", partitions=3))
            leaders, total_redirects = {}, 0
            for p in range(3):
                msgs = [common_pb2.Message(value=f"p{p}-{i}".encode()) for i in range(4)]
                resp, at, redirects = produce_following_leaders(
                    addrs[0], producer_pb2.ProduceRequest(topic="pyc", partition=p, messages=msgs))
                leaders[p] = at
                total_redirects += redirects
                check(f"cluster: partition {p} stored at its leader from offset 0", list(resp.offsets) == [0, 1, 2, 3], resp)
            named = meta.Metadata(cluster_pb2.MetadataRequest(topics=["pyc"])).partitions
            check("cluster: Metadata names the brokers that took the produces",
                  {x.partition: x.leader_endpoint for x in named} == leaders, (named, leaders))
            print(f"     (followed {total_redirects} not_leader redirects)")
            for i, addr in enumerate(addrs):
                with grpc.insecure_channel(addr) as ch:
                    stub = consumer_pb2_grpc.ConsumerStub(ch)
                    deadline, got = time.monotonic() + 10, []
                    while time.monotonic() < deadline:
                        got = [r.value for p in range(3) for r in stub.Fetch(consumer_pb2.FetchRequest(
                            topic="pyc", partition=p, offset=0, max_messages=100)).records]
                        if len(got) == 12:
                            break
                        time.sleep(0.05)
                    check(f"cluster: broker {i + 1} serves every record from its replica", sorted(got) == sorted(
                        f"p{p}-{j}".encode() for p in range(3) for j in range(4)), got)
            cluster_group(addrs)
            # A client that does not follow not_leader (no sluice-redirect, like ghz) is
            # served by any broker: the produce is forwarded to the partition's leader.
            other = next(a for a in addrs if a != leaders[0])
            with grpc.insecure_channel(other) as ch:
                resp = producer_pb2_grpc.ProducerStub(ch).Produce(producer_pb2.ProduceRequest(
                    topic="pyc", partition=0, messages=[common_pb2.Message(value=b"forwarded")]), timeout=10)
            check("cluster: a produce at a follower is forwarded to the leader (offset 4)", list(resp.offsets) == [4],
                  resp)
            with grpc.insecure_channel(leaders[0]) as ch:
                got = consumer_pb2_grpc.ConsumerStub(ch).Fetch(consumer_pb2.FetchRequest(
                    topic="pyc", partition=0, offset=4, max_messages=10)).records
            check("cluster: the leader stored the forwarded message", [r.value for r in got] == [b"forwarded"], got)
        finally:
            for proc, _ in brokers:
                proc.terminate()
            for proc, _ in brokers:
                check("cluster: broker exits 0 on SIGTERM", proc.wait(timeout=30) == 0)


def cluster_group(addrs):
    """A consumer group in the cluster: pulled and acked at the broker that serves it
    (found by following not_leader from any broker); every broker's replica of the
    group's state then shows all acknowledged."""
    admin_pb2_grpc.AdminStub(grpc.insecure_channel(addrs[1])).CreateGroup(admin_pb2.CreateGroupRequest(
        name="pyg", config=admin_pb2.GroupConfig(topic="pyc", ack_deadline_ms=30000)))
    pulled, served_by, deadline = [], set(), time.monotonic() + 20
    while len(pulled) < 12 and time.monotonic() < deadline:
        pull = consumer_pb2.PullRequest(group="pyg", consumer_id="py", max_messages=100, max_wait_ms=200)
        resp, at, _ = call_following_leaders(addrs[2], lambda ch: consumer_pb2_grpc.ConsumerStub(ch).Pull(pull, timeout=10))
        served_by.add(at)
        ids = [m.ack_id for m in resp.messages]
        pulled += [m.record.value for m in resp.messages]
        if ids:
            ack = consumer_pb2.AckRequest(group="pyg", ack_ids=ids)
            acked, at, _ = call_following_leaders(addrs[2], lambda ch: consumer_pb2_grpc.ConsumerStub(ch).Ack(ack, timeout=10))
            check("cluster: acks at the group's broker all taken", not failures(acked), acked)
            served_by.add(at)
    print(f"     (the group was served by {sorted(served_by)})")
    named, deadline = set(), time.monotonic() + 10
    while not named and time.monotonic() < deadline:
        for addr in addrs:
            try:
                with grpc.insecure_channel(addr) as ch:
                    consumer_pb2_grpc.ConsumerStub(ch).Pull(consumer_pb2.PullRequest(
                        group="pyg", consumer_id="py", max_messages=1, max_wait_ms=0), timeout=10)
            except grpc.RpcError as e:
                trailers = dict(e.trailing_metadata() or ())
                if trailers.get("sluice-reason") == "not_leader" and trailers.get("sluice-leader") in addrs:
                    named.add(trailers["sluice-leader"])
        time.sleep(0.05)
    check("cluster: a broker that does not serve the group names the one that does", len(named) >= 1, named)
    check("cluster: the group delivers every record once", sorted(pulled) == sorted(
        f"p{p}-{j}".encode() for p in range(3) for j in range(4)), pulled)
    for i, addr in enumerate(addrs):
        with grpc.insecure_channel(addr) as ch:
            deadline = time.monotonic() + 10
            while True:
                g = admin_pb2_grpc.AdminStub(ch).DescribeGroup(admin_pb2.DescribeGroupRequest(name="pyg"))
                if g.backlog_messages == 0 and sum(p.committed_offset for p in g.partitions) == 12:
                    break
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            check(f"cluster: broker {i + 1}'s replica of the group's state shows all acknowledged",
                  g.backlog_messages == 0, g)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
