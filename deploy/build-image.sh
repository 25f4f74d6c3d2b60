#!/usr/bin/env bash
# Builds sluice:latest without pulling anything: the release binaries (stripped),
# exactly the shared libraries they load (from ldd), and a passwd entry for a
# non-root user, laid out in a directory that a FROM-scratch Dockerfile copies.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release
TAG="${SLUICE_IMAGE:-sluice:latest}"
if [ ! -x "$BIN/sluice-broker" ] || [ ! -x "$BIN/sluice" ] || [ ! -x "$BIN/sluice-example-handler" ]; then
  cargo build --release --locked --workspace --bins
fi
STAGE=target/image-root
rm -rf "$STAGE"
mkdir -p "$STAGE/root/usr/local/bin" "$STAGE/root/etc" "$STAGE/data"
# The example push handler rides along (the Compose events demo runs it from this image).
for b in sluice-broker sluice sluice-example-handler; do
  strip -o "$STAGE/root/usr/local/bin/$b" "$BIN/$b"
done
for lib in $(ldd "$BIN/sluice-broker" "$BIN/sluice" "$BIN/sluice-example-handler" | awk '/=>/ { print $3 } /ld-linux/ { print $1 }' | grep '^/' | sort -u); do
  cp -L --parents "$lib" "$STAGE/root/"
done
echo "sluice:x:10001:10001:sluice:/var/lib/sluice:/sbin/nologin" > "$STAGE/root/etc/passwd"
echo "sluice:x:10001:" > "$STAGE/root/etc/group"
cp deploy/Dockerfile "$STAGE/Dockerfile"
docker build -q -t "$TAG" "$STAGE" >/dev/null
size=$(docker image inspect "$TAG" --format '{{.Size}}')
echo "built $TAG: $((size / 1024 / 1024)) MiB"
