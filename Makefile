# Sluice — the two commands a new machine needs: `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
# One profile for everything (clippy, tests, image), so nothing is compiled twice.
PROFILE_FLAGS := --release --locked
BIN := target/release
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
# System packages the build needs: libclang for RocksDB's bindings, RocksDB itself
# (linked instead of compiling its C++ for 25 minutes), and a C/C++ toolchain.
APT_PACKAGES := libclang-dev librocksdb-dev clang pkg-config nghttp2-client python3-venv

.PHONY: deps build run test fmt-check lint unit-and-e2e failpoint-test container-test interop go-stubs image up down cluster cluster-down loadtest loadtest-smoke bench bench-smoke bench-cluster bench-scale bench-single bench-failover bench-gateway bench-push soak clean

deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo ">> installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust (rustup) first"; exit 1; }

# What `build` compiles: the binaries. `make test` compiles the tests with them, in one
# go: dev-dependencies (proptest) change the features of a few shared dependencies, so
# binaries built without the tests would be compiled again, differently, by `cargo test`.
BUILD_TARGETS := --bins
build: deps
	$(CARGO) build $(PROFILE_FLAGS) --workspace $(BUILD_TARGETS)

run: build
	$(BIN)/sluice-broker --data-dir ./data --listen 127.0.0.1:50051

fmt-check:
	$(CARGO) fmt --all -- --check

lint: deps
	$(CARGO) clippy $(PROFILE_FLAGS) --workspace --all-targets -- -D warnings

unit-and-e2e: build
	@mkdir -p target
	set -o pipefail; $(CARGO) test $(PROFILE_FLAGS) --workspace 2>&1 | tee target/test-output.log
	@awk '/^test result:/ { p += $$4; f += $$6 } END { printf "%d passed, %d failed\n", p, f; exit (p == 0 || f > 0) }' target/test-output.log

# Fault injection (a failed write or fsync poisons the store): a broker built with the
# `failpoints` feature. It is built in the shared target directory (with the same
# dependencies as the shipped build, so only the crates the feature changes compile
# again), copied aside, and the shipped binaries are put back (linked again), so no
# shipped binary carries failpoints.
FAILPOINT_BIN := target/failpoints
failpoint-test: build
	$(CARGO) build $(PROFILE_FLAGS) --workspace --bins --features sluice-broker/failpoints
	@mkdir -p $(FAILPOINT_BIN) && cp $(BIN)/sluice-broker $(FAILPOINT_BIN)/sluice-broker
	$(CARGO) build $(PROFILE_FLAGS) --workspace $(BUILD_TARGETS)
	SLUICE_BIN_DIR=$(CURDIR)/$(FAILPOINT_BIN) \
	  $(CARGO) test $(PROFILE_FLAGS) --workspace --features sluice-tests/failpoints --test failpoints

# The container image (FROM scratch, no pull) and a Compose deployment of it.
image: build
	bash deploy/build-image.sh

up: image
	cd deploy && { docker compose version >/dev/null 2>&1 && docker compose up -d || docker-compose up -d; }

down:
	cd deploy && { docker compose version >/dev/null 2>&1 && docker compose down || docker-compose down; }

# Three brokers in one cluster (deploy/cluster.yml; client ports 50051-50053 on 127.0.0.1).
cluster: image
	cd deploy && { docker compose version >/dev/null 2>&1 && docker compose -f cluster.yml up -d || docker-compose -f cluster.yml up -d; }

cluster-down:
	cd deploy && { docker compose version >/dev/null 2>&1 && docker compose -f cluster.yml down || docker-compose -f cluster.yml down; }

container-test: build
	bash deploy/test-compose.sh
	bash deploy/test-cluster-compose.sh
	bash deploy/test-cluster-tls-compose.sh

# Load test a running broker (make run in another terminal): h2load + a grpcio loop.
loadtest: build
	bash deploy/loadtest.sh

loadtest-smoke: build
	bash deploy/loadtest.sh --smoke

# The standard benchmark suite against a fresh release broker; writes docs/BENCHMARKS.md.
bench: build
	bash deploy/bench.sh

bench-smoke: build
	bash deploy/bench.sh --smoke
	bash deploy/bench-cluster.sh --smoke
	bash deploy/bench-single.sh --smoke
	bash deploy/bench-scale.sh --smoke
	$(BIN)/bench-failover --smoke
	bash deploy/bench-push.sh --smoke

# The same produce workload against one broker and a three-broker cluster, in one run.
bench-cluster: build
	bash deploy/bench-cluster.sh

# This build's single broker against the one of SLUICE_BASELINE_REV (default: before
# replication), alternating, same run.
bench-single: build
	bash deploy/bench-single.sh

# HTTP ingest through the gateway with h2load (installed from apt if missing), beside gRPC produce.
bench-gateway: build
	bash deploy/bench-gateway.sh

# Failover: kill -9 of a partition's leader to the first acknowledged produce at the new
# leader, 20 kills, with the distribution (docs/BENCHMARKS.md).
bench-failover: build
	$(BIN)/bench-failover --kills 20

# Push subscriptions: a backlog drained to the bench's own HTTP sink (100 and 1 event per
# request), HTTP publish -> handler latency at 2,000 events/s, pull baselines (docs/BENCHMARKS.md).
bench-push: build
	bash deploy/bench-push.sh

# Scale figures of a three-broker cluster: idle CPU with 1,000 partitions and 1,000 groups,
# and 10,000 partitions created and served (docs/BENCHMARKS.md).
bench-scale: build
	bash deploy/bench-scale.sh

# A Python client generated from proto/ (grpcio-tools from PyPI) against the real broker.
interop: build
	bash tests/python/run.sh

# Go stubs generated from proto/ (protoc-gen-go, protoc-gen-go-grpc and the Go libraries all
# from Debian's apt, nothing from the Go proxy) vet, build and run.
go-stubs:
	bash tests/go/run.sh

# The long reliability runs (SIGKILL chaos, model check, fuzz, overload), about 10 minutes;
# prints a summary and writes it to docs/RELIABILITY.md.
soak: build
	bash tests/soak.sh

test: BUILD_TARGETS := --bins --tests
test: deps fmt-check lint unit-and-e2e failpoint-test interop go-stubs loadtest-smoke bench-smoke container-test
	@echo ">> all checks passed"

clean:
	$(CARGO) clean
