#!/usr/bin/env bash
# Any-language check, Go side: the .proto files generate Go stubs (protoc-gen-go and
# protoc-gen-go-grpc) that build, vet and run. Everything comes from Debian's apt; the
# Go libraries are Debian's (/usr/share/gocode), used in GOPATH mode with GOPROXY=off,
# so nothing is fetched from the Go module proxy. Output goes to target/gogen.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

# golang-go rather than the `golang` metapackage: the compiler without its documentation.
PACKAGES="golang-go protobuf-compiler protoc-gen-go protoc-gen-go-grpc golang-google-protobuf-dev golang-google-grpc-dev"
missing=""
for p in $PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  echo ">> installing:$missing"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing
fi

OUT=target/gogen
rm -rf "$OUT" && mkdir -p "$OUT/src"
# Without a module option protoc-gen-go writes each file under its full go_package path,
# which is the GOPATH layout.
protoc -I proto --go_out="$OUT/src" --go-grpc_out="$OUT/src" \
  proto/sluice/v1/*.proto proto/externalscaler/externalscaler.proto proto/io/cloudevents/v1/cloudevents.proto
PKG=github.com/sluice-mq/sluice/gen/go
for f in sluice/v1/admin.pb.go sluice/v1/admin_grpc.pb.go sluice/v1/consumer_grpc.pb.go externalscaler/externalscaler_grpc.pb.go; do
  [ -f "$OUT/src/$PKG/$f" ] || { echo "protoc did not write $PKG/$f: is go_package set?"; exit 1; }
done

# A tiny program using the stubs: a server registration (the generated service
# interfaces against Debian's grpc), a client, and proto3 presence (jitter = 0 is sent).
mkdir -p "$OUT/src/sluicecheck"
cp tests/go/main.go "$OUT/src/sluicecheck/main.go"

export GO111MODULE=off GOPROXY=off GOFLAGS= GOPATH="$ROOT/$OUT:/usr/share/gocode" GOCACHE="$ROOT/$OUT/cache"
cd "$OUT/src"
go vet "$PKG/..." sluicecheck
go build -o "$ROOT/$OUT/sluicecheck" sluicecheck
"$ROOT/$OUT/sluicecheck"
