"""Load test against a running broker with tools installable here (ghz is not):
h2load for raw HTTP/2 unary Produce (its statuses are checked separately, since
h2load counts HTTP 200 as success even when grpc-status is an error), and a
grpcio loop for Produce latency and Pull+Ack throughput. Every loop is bounded
in count and time. Writes deploy/ghz/produce.bin (the binary payload ghz takes).

    python deploy/loadtest.py --addr 127.0.0.1:50051 [--requests 20000] [--seconds 20]
"""

import argparse
import re
import shutil
import statistics
import struct
import subprocess
import sys
import threading
import time

import grpc

from sluice.v1 import admin_pb2, admin_pb2_grpc, common_pb2, consumer_pb2, consumer_pb2_grpc, producer_pb2, producer_pb2_grpc

TOPIC, GROUP = "loadtest", "loadtest"


def ensure_topic_and_group(channel):
    admin = admin_pb2_grpc.AdminStub(channel)
    try:
        admin.CreateTopic(admin_pb2.CreateTopicRequest(name=TOPIC, partitions=4))
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
    try:
        admin.CreateGroup(admin_pb2.CreateGroupRequest(name=GROUP, config=admin_pb2.GroupConfig(topic=TOPIC)))
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise


def total_latest(channel):
    consumer = consumer_pb2_grpc.ConsumerStub(channel)
    return sum(consumer.GetOffsets(consumer_pb2.GetOffsetsRequest(topic=TOPIC, partition=p)).latest_offset for p in range(4))


def request(value_size=100):
    return producer_pb2.ProduceRequest(topic=TOPIC, messages=[common_pb2.Message(value=b"x" * value_size)])


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0


def run_h2load(addr, requests, seconds):
    if not shutil.which("h2load"):
        print("h2load: not installed (apt-get install nghttp2-client); skipped")
        return None
    body = request().SerializeToString()
    with open("deploy/ghz/produce.bin", "wb") as f:
        f.write(body)
    framed = "target/h2load-produce.bin"
    with open(framed, "wb") as f:
        f.write(b"\x00" + struct.pack(">I", len(body)) + body)
    cmd = ["h2load", "-n", str(requests), "-c", "4", "-m", "16", "-T", str(seconds),
           "-H", "content-type: application/grpc", "-H", "te: trailers", "-d", framed,
           f"http://{addr}/sluice.v1.Producer/Produce"]
    print("$ " + " ".join(cmd))
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30).stdout
    rps = re.search(r"finished in ([\d.]+)(\w+), ([\d.]+) req/s", out)
    lat = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", out)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    print(f"h2load unary Produce: {rps.group(3) if rps else '?'} req/s; request time min {lat.group(1) if lat else '?'}, "
          f"max {lat.group(2) if lat else '?'}, mean {lat.group(3) if lat else '?'}; HTTP-level succeeded {done.group(2) if done else '?'}")
    return int(done.group(2)) if done else 0


def grpc_produce_loop(addr, requests, seconds, threads=8):
    latencies, errors, lock = [], [0], threading.Lock()
    deadline = time.monotonic() + seconds
    per_thread = max(1, requests // threads)

    def worker():
        stub = producer_pb2_grpc.ProducerStub(grpc.insecure_channel(addr))
        req = request()
        mine = []
        for _ in range(per_thread):
            if time.monotonic() > deadline:
                break
            t = time.perf_counter()
            try:
                stub.Produce(req, timeout=10)
                mine.append(time.perf_counter() - t)
            except grpc.RpcError:
                with lock:
                    errors[0] += 1
        with lock:
            latencies.extend(mine)

    started = time.monotonic()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.monotonic() - started
    ms = [x * 1000 for x in latencies]
    print(f"grpcio unary Produce ({threads} threads): {len(ms) / elapsed:.0f} req/s, p50 {percentile(ms, .5):.2f} ms, "
          f"p90 {percentile(ms, .9):.2f} ms, p99 {percentile(ms, .99):.2f} ms, errors {errors[0]}")
    return errors[0]


def grpc_pull_ack_loop(addr, seconds, max_messages=500):
    consumer = consumer_pb2_grpc.ConsumerStub(grpc.insecure_channel(addr))
    deadline, acked, rounds = time.monotonic() + seconds, 0, []
    started = time.monotonic()
    while time.monotonic() < deadline:
        t = time.perf_counter()
        got = consumer.Pull(consumer_pb2.PullRequest(group=GROUP, consumer_id="loadtest", max_messages=max_messages, max_wait_ms=200))
        if not got.messages:
            break
        consumer.Ack(consumer_pb2.AckRequest(group=GROUP, ack_ids=[m.ack_id for m in got.messages]))
        rounds.append((time.perf_counter() - t) * 1000)
        acked += len(got.messages)
    elapsed = time.monotonic() - started
    print(f"grpcio Pull+Ack: {acked / max(elapsed, 1e-9):.0f} msgs/s acked ({acked} messages), "
          f"pull+ack round p50 {percentile(rounds, .5):.2f} ms, p99 {percentile(rounds, .99):.2f} ms")
    return acked


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", default="127.0.0.1:50051")
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--seconds", type=int, default=20)
    args = ap.parse_args()
    channel = grpc.insecure_channel(args.addr)
    grpc.channel_ready_future(channel).result(timeout=10)
    ensure_topic_and_group(channel)
    failures = 0
    before = total_latest(channel)
    succeeded = run_h2load(args.addr, args.requests, args.seconds)
    if succeeded is not None:
        stored = total_latest(channel) - before
        ok = stored == succeeded
        print(f"h2load grpc-status check: {stored} messages stored for {succeeded} HTTP successes -> {'ok' if ok else 'MISMATCH'}")
        failures += 0 if ok else 1
    failures += grpc_produce_loop(args.addr, args.requests // 4, args.seconds)
    grpc_pull_ack_loop(args.addr, args.seconds)
    print(f"loadtest: {'0 failed' if failures == 0 else f'{failures} failed'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
