#!/usr/bin/env bash
# sentry's benchmarks, as recorded in docs/performance.md:
#  1. certificates issued per second on one core (criterion, no network);
#  2. SignCertificate over TLS on loopback with sentry-load: N clients at a fixed rate.
# Usage: scripts/bench-sentry.sh [rate] [clients] [duration]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rate=${1:-1000}
clients=${2:-16}
duration=${3:-20s}

cargo bench -p daprs-sentry --bench issue
cargo build --release -p daprs-sentry --bins

work=$(mktemp -d -t daprs-bench-XXXXXX)
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
grpc=$(port); health=$(port)
# sentry on core 0, the load tool on core 1.
taskset -c 0 target/release/sentry --issuer-credentials "$work/creds" --listen-address 127.0.0.1 --port "$grpc" \
	--healthz-listen-address 127.0.0.1 --healthz-port "$health" --enable-metrics=false --log-level warn &
pid=$!
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$health/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
taskset -c 1 target/release/sentry-load --sentry-address "127.0.0.1:$grpc" --trust-anchors "$work/creds/ca.crt" \
	--clients "$clients" --rate "$rate" --duration "$duration"
echo "sentry RSS after the run: $(awk '/VmRSS/ {print $2, $3}' /proc/$pid/status)"
