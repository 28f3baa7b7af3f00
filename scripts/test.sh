#!/usr/bin/env bash
# Runs every test daprs has, on a fresh machine too: it installs or builds what is missing
# (the Kubernetes binaries for the real-cluster tests are built from Go modules and cached
# under ~/.cache/daprs), then runs formatting checks and the whole Cargo test suite, including
# the end-to-end tests against a real kube-apiserver.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'test: error: %s\n' "$*" >&2; exit 1; }

command -v cargo >/dev/null || die "cargo is not installed; install Rust (https://rustup.rs) and rerun"
command -v go >/dev/null || die "go is not installed; the real-cluster tests build Kubernetes from Go modules: install Go >= 1.26 and rerun"

step "Kubernetes binaries for the e2e tests (cached after the first run)"
DAPRS_K8S_BIN=$(scripts/k8s-binaries.sh | tail -n 1)
[ -x "$DAPRS_K8S_BIN/kube-apiserver" ] || die "scripts/k8s-binaries.sh did not produce kube-apiserver in '$DAPRS_K8S_BIN'"
export DAPRS_K8S_BIN

step "Dapr's daprd for the interoperability test (built from Dapr's Go module, cached after the first run)"
DAPRS_DAPR_DAPRD=$(scripts/dapr-daprd.sh | tail -n 1)
[ -x "$DAPRS_DAPR_DAPRD" ] || die "scripts/dapr-daprd.sh did not produce Dapr's daprd at '$DAPRS_DAPR_DAPRD'"
export DAPRS_DAPR_DAPRD

step "formatting and lints"
if ! cargo fmt --version >/dev/null 2>&1; then
	rustup component add rustfmt clippy >&2 || die "rustfmt is missing and 'rustup component add rustfmt clippy' failed"
fi
cargo fmt --all -- --check || die "code is not formatted: run 'cargo fmt --all'"
cargo clippy --workspace --all-targets --locked -- -D warnings || die "clippy found problems (above)"

step "sidecar test dependencies (redis-server, PostgreSQL, the Python and JavaScript Dapr SDKs; cached in ~/.cache)"
scripts/sidecar-deps.sh >/dev/null || die "scripts/sidecar-deps.sh failed (above)"

step "tests (unit, integration, real TLS, real Kubernetes API server, real Redis and PostgreSQL, the official SDKs)"
cargo test --workspace --all-targets --locked

# The images' build stage (docker/Dockerfile) cannot run here (no Docker); the same cargo
# command, for the same static target, can. Keep the two commands identical.
step "static (musl) dist-profile build of sentry, operator, injector and daprd, as docker/Dockerfile builds them"
MUSL_TARGET=x86_64-unknown-linux-musl
if ! rustup target list --installed 2>/dev/null | grep -qx "$MUSL_TARGET"; then
	command -v rustup >/dev/null || die "rustup is not installed, so the $MUSL_TARGET target cannot be added: install Rust with rustup (https://rustup.rs) and rerun"
	rustup target add "$MUSL_TARGET" >&2 || die "'rustup target add $MUSL_TARGET' failed (the Dockerfiles' static builds need it): fix the error above and rerun"
fi
if ! command -v musl-gcc >/dev/null; then
	sudo=""
	[ "$(id -u)" = 0 ] || sudo="sudo"
	command -v apt-get >/dev/null || die "musl-gcc is missing (ring compiles C for the musl target): install musl-tools with your package manager"
	{ $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq musl-tools; } >&2 \
		|| die "apt-get install musl-tools failed (musl-gcc is needed for the musl target)"
fi
cargo build --profile dist --locked --target "$MUSL_TARGET" \
	-p daprs-sentry --bin sentry \
	-p daprs-operator --bin operator \
	-p daprs-injector --bin injector \
	-p daprs-sidecar --bin daprd
for bin in sentry operator injector daprd; do
	ldd "target/$MUSL_TARGET/dist/$bin" 2>&1 | grep -qE 'not a dynamic executable|statically linked' \
		|| die "target/$MUSL_TARGET/dist/$bin is not statically linked (the distroless/static image has no libc)"
done

step "the recorded link order (link-order/*.txt) still names the functions of this build"
scripts/link-order.sh check || die "a link order is stale: record it again with scripts/link-order.sh (above)"
