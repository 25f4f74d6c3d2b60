#!/usr/bin/env bash
# Throwaway TLS material and an admin token for the Compose cluster with TLS
# (deploy/cluster-tls.yml, docs/SECURITY.md), written to DIR (default deploy/tls):
# - ca.pem, server.pem, server.key: the client ports' CA and certificate (for broker1,
#   broker2, broker3, localhost and 127.0.0.1); client.pem, client.key: a client
#   certificate (common name sluice-client) for mutual TLS;
# - cluster-ca.pem, cluster.pem, cluster.key: a second CA and the certificate brokers
#   present to each other (mutual TLS on the cluster link; no client certificate can
#   pass for a broker);
# - tokens.toml: the credentials file: the token in admin.token, and the client
#   certificate, both the superuser `admin`.
# Not for production: the CAs' keys are not kept, every broker shares one certificate,
# and the keys are readable by everyone (the brokers run as uid 10001).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${1:-deploy/tls}"
if [ ! -x target/release/make-certs ]; then
  cargo build --release --locked -q -p sluice-tests --bin make-certs
fi
target/release/make-certs "$DIR" broker1 broker2 broker3 localhost 127.0.0.1 >/dev/null
TOKEN=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
DIGEST=$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)
cat > "$DIR/tokens.toml" <<TOML
# Made by deploy/make-certs.sh: the token in admin.token and the client certificate are
# both the superuser admin (SLUICE_SUPERUSERS in cluster-tls.yml).
[[token]]
principal = "admin"
sha256 = "$DIGEST"

[[certificate]]
subject = "sluice-client"
principal = "admin"
TOML
printf %s "$TOKEN" > "$DIR/admin.token"
chmod 600 "$DIR/admin.token"
chmod 755 "$DIR"
chmod 644 "$DIR"/*.pem "$DIR"/*.key "$DIR/tokens.toml"
echo "wrote CAs, certificates, tokens.toml and admin.token to $DIR"
