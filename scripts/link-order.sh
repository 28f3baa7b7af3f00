#!/usr/bin/env bash
# Records which functions the shipped daprd and operator run, into link-order/<binary>.txt, so
# that the next build links them side by side (link-order/link_order.rs explains why).
#
#   scripts/link-order.sh [daprd|operator|check]...    (default: daprd operator)
#
# It builds the binaries exactly as scripts/test.sh and docker/Dockerfile do (the names depend
# on the profile and target), runs them under valgrind's callgrind, and keeps the names of the
# functions that ran:
#   daprd     scripts/demo.sh with DAPRD pointing at the profiled binary: start-up, state
#             through the HTTP API, mTLS with a sentry certificate, invocation both ways.
#   operator  the streams benchmark (operator/benches/streams.rs) with 50 streams and 3 rounds:
#             start-up against a real API server, mTLS, ComponentUpdate streams, a change
#             delivered to all of them.
#   check     how many recorded names the current build still defines; exits 1 below 75 %,
#             which is when the order has gone stale (scripts/test.sh runs this after the build).
# Record again after changing Cargo.toml's [profile.dist], the toolchain or the dependencies.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() { printf 'link-order: error: %s\n' "$*" >&2; exit 1; }

MUSL_TARGET=x86_64-unknown-linux-musl
DIST="$PWD/target/$MUSL_TARGET/dist"
STALE_BELOW_PERCENT=75

# The exact command of scripts/test.sh and docker/Dockerfile: building other packages along
# would unify other features, and features are part of every symbol name.
build() {
	cargo build --profile dist --locked --target "$MUSL_TARGET" \
		-p daprs-sentry --bin sentry \
		-p daprs-operator --bin operator \
		-p daprs-injector --bin injector \
		-p daprs-sidecar --bin daprd >&2
}

# The names of the functions callgrind saw run in the profiles given (one per process), those
# that ran in more processes first: what every daprd runs (start-up) ends up in one block.
record() {
	local binary=$1
	shift
	local out="link-order/$binary.txt"
	{
		echo "# Functions $binary ran while scripts/link-order.sh profiled it (one symbol per line,"
		echo "# for rust-lld's --symbol-ordering-file). Generated: do not edit; record again instead."
		for profile in "$@"; do
			grep -oP '^c?fn=\(\d+\) \K\S+' "$profile" | grep -E '^[A-Za-z_]' | LC_ALL=C sort -u
		done | LC_ALL=C sort | uniq -c | LC_ALL=C sort -k1,1nr -k2,2 | awk '{print $2}'
	} >"$out.new"
	local count
	count=$(grep -vc '^#' "$out.new" || true)
	[ "$count" -gt 100 ] || die "only $count functions recorded for $binary: the profiled run failed (see $work)"
	mv "$out.new" "$out"
	echo "link-order: $out: $count functions" >&2
}

check() {
	local binary status=0
	for binary in daprd operator; do
		local file="link-order/$binary.txt" exe="$DIST/$binary"
		[ -f "$file" ] || die "$file is missing: run scripts/link-order.sh"
		[ -x "$exe" ] || die "$exe is missing: build it first (scripts/test.sh does)"
		local listed found percent
		listed=$(grep -v '^#' "$file" | LC_ALL=C sort -u | wc -l)
		found=$(LC_ALL=C comm -12 <(grep -v '^#' "$file" | LC_ALL=C sort -u) \
			<(nm --defined-only "$exe" | awk '{print $NF}' | LC_ALL=C sort -u) | wc -l)
		percent=$((100 * found / listed))
		echo "link-order: $binary defines $found of the $listed functions in $file ($percent %)" >&2
		if [ "$percent" -lt "$STALE_BELOW_PERCENT" ]; then
			echo "link-order: error: $file is stale (under $STALE_BELOW_PERCENT % of its names are in the build): run scripts/link-order.sh $binary and commit the file" >&2
			status=1
		fi
	done
	return $status
}

[ $# -gt 0 ] || set -- daprd operator
for what in "$@"; do
	case $what in daprd | operator | check) ;; *) die "unknown argument '$what': expected daprd, operator or check" ;; esac
done
if [ "$*" = check ]; then
	check
	exit
fi

command -v valgrind >/dev/null || die "valgrind is missing: install it (apt-get install valgrind) and rerun"
build
work=$(mktemp -d -t daprs-link-order-XXXXXX)
trap 'rm -rf "$work"' EXIT
callgrind=(valgrind -q --tool=callgrind --demangle=no)

for what in "$@"; do
	case $what in
	daprd)
		cat >"$work/daprd" <<-WRAPPER
			#!/bin/sh
			exec ${callgrind[*]} --callgrind-out-file=$work/daprd.%p.out $DIST/daprd "\$@"
		WRAPPER
		chmod +x "$work/daprd"
		DAPRD="$work/daprd" scripts/demo.sh >"$work/demo.log" 2>&1 || {
			cat "$work/demo.log" >&2
			die "the demo failed under the profiler (its output is above)"
		}
		record daprd "$work"/daprd.*.out
		;;
	operator)
		DAPRS_K8S_BIN=$(scripts/k8s-binaries.sh | tail -n 1)
		export DAPRS_K8S_BIN
		DAPRS_OPERATOR_BIN="$DIST/operator" \
			DAPRS_OPERATOR_WRAPPER="${callgrind[*]} --callgrind-out-file=$work/operator.%p.out" \
			STREAMS=50 ROUNDS=3 cargo bench --locked -p daprs-operator --bench streams >"$work/bench.log" 2>&1 || {
			cat "$work/bench.log" >&2
			die "the streams benchmark failed under the profiler (its output is above)"
		}
		record operator "$work"/operator.*.out
		;;
	check) check ;;
	esac
done
