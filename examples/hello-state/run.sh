#!/usr/bin/env bash
# The self-hosted demo: builds daprd and the tiny app, starts daprd with the in-memory state
# store from ./components, runs the app against it, then stops daprd with SIGTERM.
# DAPRD=<command> runs another daprd (scripts/link-order.sh runs it under a profiler).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

HTTP_PORT="${DAPR_HTTP_PORT:-3500}"
GRPC_PORT="${DAPR_GRPC_PORT:-50001}"
METRICS_PORT="${DAPR_METRICS_PORT:-9090}"

cargo build -q --release -p daprs-sidecar --bin daprd --example hello_state
"${DAPRD:-target/release/daprd}" --app-id hello-state \
	--dapr-http-port "$HTTP_PORT" --dapr-grpc-port "$GRPC_PORT" --metrics-port "$METRICS_PORT" \
	--dapr-listen-addresses 127.0.0.1 --metrics-listen-address 127.0.0.1 \
	--resources-path examples/hello-state/components &
DAPRD=$!
trap 'kill -TERM $DAPRD 2>/dev/null; wait $DAPRD 2>/dev/null || true' EXIT

for _ in $(seq 1 100); do
	if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HTTP_PORT/v1.0/healthz")" = 204 ]; then
		break
	fi
	sleep 0.05
done
DAPR_HTTP_PORT="$HTTP_PORT" target/release/examples/hello_state
