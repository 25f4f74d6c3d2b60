#!/usr/bin/env bash
# Any-language check: generates a Python client from proto/ with grpcio-tools and
# runs interop.py against the real broker binary. Installs what it needs into
# target/pyenv (from PyPI) on first use.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=target/pyenv
if [ ! -x "$VENV/bin/python" ] || ! cmp -s tests/python/requirements.txt "$VENV/requirements.txt"; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r tests/python/requirements.txt
  cp tests/python/requirements.txt "$VENV/requirements.txt"
fi
OUT=target/pygen
rm -rf "$OUT" && mkdir -p "$OUT"
"$VENV/bin/python" -m grpc_tools.protoc -I proto --python_out="$OUT" --grpc_python_out="$OUT" proto/sluice/v1/*.proto
touch "$OUT/sluice/__init__.py" "$OUT/sluice/v1/__init__.py"
[ "${1:-}" = "--generate-only" ] && exit 0
PYTHONPATH="$OUT" "$VENV/bin/python" tests/python/interop.py "${1:-target/release/sluice-broker}"
