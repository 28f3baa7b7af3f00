#!/usr/bin/env bash
# The main job: build daprs and run a self-hosted demo on embedded defaults.
#
# 1. The sidecar: daprd starts with an in-memory state store, and a tiny app
#    (examples/hello-state) saves, reads, guards with ETags and transacts state through it.
# 2. The certificate authority: sentry starts with no configuration, generates its CA, and the
#    repo's client (`sentry-client`) obtains a workload certificate from it over TLS the way a
#    sidecar does, verifies it, and prints it.
# Everything runs on 127.0.0.1 (free ports) and in temporary folders removed at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '\n== %s\n' "$*"; }

if ! command -v cargo >/dev/null; then
	echo "demo: cargo is not installed; install Rust from rustup.rs first" >&2
	exit 1
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

say "the sidecar: daprd with an in-memory state store, and a tiny app using it (release build)"
DAPR_HTTP_PORT=$(free_port) DAPR_GRPC_PORT=$(free_port) DAPR_METRICS_PORT=$(free_port) \
	examples/hello-state/run.sh

say "building sentry and sentry-client"
cargo build --quiet -p daprs-sentry --bins

work=$(mktemp -d -t daprs-demo-XXXXXX)
sentry_pid=""
cleanup() {
	[ -n "$sentry_pid" ] && kill "$sentry_pid" 2>/dev/null && wait "$sentry_pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

grpc_port=$(free_port)
healthz_port=$(free_port)
metrics_port=$(free_port)

say "starting sentry (standalone mode, CA in $work/creds)"
target/debug/sentry \
	--issuer-credentials "$work/creds" \
	--listen-address 127.0.0.1 --port "$grpc_port" \
	--healthz-listen-address 127.0.0.1 --healthz-port "$healthz_port" \
	--metrics-listen-address 127.0.0.1 --metrics-port "$metrics_port" \
	>"$work/sentry.log" 2>&1 &
sentry_pid=$!

for _ in $(seq 100); do
	if curl -fsS "http://127.0.0.1:$healthz_port/healthz" >/dev/null 2>&1; then break; fi
	if ! kill -0 "$sentry_pid" 2>/dev/null; then
		echo "demo: sentry exited; its log:" >&2
		cat "$work/sentry.log" >&2
		exit 1
	fi
	sleep 0.1
done
curl -fsS "http://127.0.0.1:$healthz_port/healthz" >/dev/null || { cat "$work/sentry.log" >&2; exit 1; }
echo "sentry is ready on 127.0.0.1:$grpc_port; it generated:"
ls -l "$work/creds" | sed 's/^/  /'

say "asking sentry for a certificate for app 'orders' in namespace 'shop'"
target/debug/sentry-client \
	--sentry-address "127.0.0.1:$grpc_port" \
	--trust-anchors "$work/creds/ca.crt" \
	--app-id orders --namespace shop \
	--out-dir "$work/orders"

say "the certificate, as openssl sees it"
if command -v openssl >/dev/null; then
	openssl x509 -in "$work/orders/cert.pem" -noout -subject -ext subjectAltName,extendedKeyUsage -dates | sed 's/^/  /'
fi

say "sentry's metrics"
curl -fsS "http://127.0.0.1:$metrics_port/metrics" | grep -E '^dapr_sentry_(cert_sign_(request_received|success)_total|issuercert_expiry_timestamp)' | sed 's/^/  /'

say "sentry's log"
sed 's/^/  /' "$work/sentry.log"
echo
echo "demo finished: the app kept state through daprd, and sentry issued a SPIFFE certificate the client verified."
