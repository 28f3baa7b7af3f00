#!/usr/bin/env bash
# The main job: build daprs and run a self-hosted demo on embedded defaults.
#
# 1. The sidecar: daprd starts with an in-memory state store, and a tiny app
#    (examples/hello-state) saves, reads, guards with ETags and transacts state through it.
# 2. The certificate authority: sentry starts with no configuration, generates its CA, and the
#    repo's client (`sentry-client`) obtains a workload certificate from it over TLS the way a
#    sidecar does, verifies it, and prints it.
# 3. Service invocation over mutual TLS: two daprd sidecars (apps `orders` and `payments`,
#    examples/hello-invoke) get their certificates from that sentry; each app calls the other
#    through its own daprd, sidecar to sidecar over mTLS, and sees who called.
# Everything runs on 127.0.0.1 (free ports) and in temporary folders removed at the end.
# DAPRD=<command> runs another daprd than the release build (scripts/link-order.sh runs it
# under a profiler).
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
other_pids=()
cleanup() {
	# `|| true`: under `set -e` a failing kill or wait would end the clean-up early.
	for pid in "${other_pids[@]}"; do
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
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

say "two apps, orders and payments, each with a daprd using mutual TLS with certificates from sentry"
declare -A http_port app_port metrics_port_of
for app in orders payments; do
	http_port[$app]=$(free_port)
	app_port[$app]=$(free_port)
	metrics_port_of[$app]=$(free_port)
done
for app in orders payments; do
	peer=$([ "$app" = orders ] && echo payments || echo orders)
	python3 examples/hello-invoke/app.py "$app" "${app_port[$app]}" "${http_port[$app]}" "$peer" &
	other_pids+=($!)
	DAPR_TRUST_ANCHORS_FILE="$work/creds/ca.crt" "${DAPRD:-target/release/daprd}" \
		--app-id "$app" --app-port "${app_port[$app]}" \
		--dapr-listen-addresses 127.0.0.1 --dapr-http-port "${http_port[$app]}" --dapr-grpc-port "$(free_port)" \
		--dapr-internal-grpc-port "$(free_port)" --dapr-internal-grpc-listen-address 127.0.0.1 \
		--metrics-listen-address 127.0.0.1 --metrics-port "${metrics_port_of[$app]}" \
		--enable-mtls --sentry-address "127.0.0.1:$grpc_port" \
		--registry-dir "$work/registry" >"$work/daprd-$app.log" 2>&1 &
	other_pids+=($!)
done
for app in orders payments; do
	for _ in $(seq 100); do
		if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${http_port[$app]}/v1.0/healthz")" = 204 ]; then break; fi
		sleep 0.1
	done
	if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${http_port[$app]}/v1.0/healthz")" != 204 ]; then
		echo "demo: daprd for $app did not become ready; its log:" >&2
		cat "$work/daprd-$app.log" >&2
		exit 1
	fi
	echo "  daprd for $app is ready (mTLS, certificate from sentry)"
done

say "orders calls payments (orders -> its daprd -> mTLS -> payments' daprd -> payments)"
curl -fsS "http://127.0.0.1:${http_port[orders]}/v1.0/invoke/orders/method/ping" | python3 -m json.tool | sed 's/^/  /'
say "payments calls orders"
curl -fsS "http://127.0.0.1:${http_port[payments]}/v1.0/invoke/payments/method/ping" | python3 -m json.tool | sed 's/^/  /'

say "the sidecars' mTLS and invocation metrics"
for app in orders payments; do
	curl -fsS "http://127.0.0.1:${metrics_port_of[$app]}/metrics" |
		grep -E '^dapr_runtime_(mtls_init_total|service_invocation_req_(sent|recv)_total)' | sed "s/^/  $app: /"
done

say "sentry's log"
sed 's/^/  /' "$work/sentry.log"
echo
echo "demo finished: the app kept state through daprd, sentry issued a SPIFFE certificate the client verified,"
echo "and two apps invoked each other through their sidecars over mutual TLS."
