#!/usr/bin/env bash
# Builds a real Dapr daprd (github.com/dapr/dapr, the version pinned below) from its published
# Go module, for the interoperability tests (sidecar/tests/dapr_interop.rs and
# kubernetes.rs), into ${DAPRS_CACHE_DIR:-~/.cache/daprs}/dapr-daprd-<version>-<set>/daprd.
#
# Dapr's daprd needs the build tag 'stablecomponents' or 'allcomponents', which compile in every
# component of components-contrib (cloud SDKs and all). The tests need only a few, so the
# module's source is copied to a work directory and the file that is compiled when no such tag
# is set (it only panics with advice) is replaced by our own registration of the mDNS, SQLite
# and Kubernetes name resolvers and the in-memory state store (COMPONENT_SET names this set:
# change it with the set, so a cached binary with another set is not used). Everything else is Dapr's code at that version, built with Dapr's
# own go.mod and go.sum (so its replace directives apply; 'go install' refuses modules with
# replace directives).
#
# Idempotent: when the binary is in the cache nothing is built (about a second). Progress goes
# to stderr; on success the last line on stdout is the binary's path and nothing else:
#
#   export DAPRS_DAPR_DAPRD="$(scripts/dapr-daprd.sh | tail -n 1)"
#
# Environment:
#   DAPRS_CACHE_DIR  cache root (default: ${XDG_CACHE_HOME:-~/.cache}/daprs); the Go module
#                    and build caches live under it too (shared with scripts/k8s-binaries.sh).
#   GOPROXY          honoured as usual (default: the public Go module proxy).
set -euo pipefail

# The Dapr release the interop test runs against (the one place it is pinned).
DAPR_VERSION=v1.16.0
COMPONENT_SET=nr-state-memory

log() { printf 'dapr-daprd: %s\n' "$*" >&2; }
die() {
	printf 'dapr-daprd: error: %s\n' "$1" >&2
	shift
	[[ $# -eq 0 ]] || printf 'dapr-daprd:   %s\n' "$@" >&2
	exit 1
}

cache_root=${DAPRS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/daprs}
out_dir=$cache_root/dapr-daprd-$DAPR_VERSION-$COMPONENT_SET
bin=$out_dir/daprd

if [[ -x $bin ]]; then
	log "Dapr daprd $DAPR_VERSION present: $bin"
	echo "$bin"
	exit 0
fi

command -v go >/dev/null 2>&1 ||
	die "Go is not on PATH; it is needed to build Dapr's daprd $DAPR_VERSION for the interoperability test." \
		"Install an official Go release (>= the 'go' line of Dapr's go.mod) and run scripts/dapr-daprd.sh again."

export GOMODCACHE=$cache_root/go/mod
export GOCACHE=$cache_root/go/build
export GOFLAGS="-trimpath -mod=readonly -buildvcs=false"
export CGO_ENABLED=0
# Never fetch another toolchain behind the user's back.
export GOTOOLCHAIN=local

mkdir -p "$out_dir" "$GOMODCACHE" "$GOCACHE"
# One build at a time (parallel test binaries may call this); the others wait, then find the
# binary in place.
if command -v flock >/dev/null 2>&1; then
	exec 9>"$cache_root/.dapr-daprd.lock"
	flock 9
	if [[ -x $bin ]]; then
		echo "$bin"
		exit 0
	fi
fi

work=$(mktemp -d "$cache_root/dapr-build.XXXXXX")
heartbeat_pid=
cleanup() {
	[[ -n $heartbeat_pid ]] && kill "$heartbeat_pid" 2>/dev/null
	chmod -R u+w "$work" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

start=$SECONDS
log "downloading github.com/dapr/dapr@$DAPR_VERSION"
# An empty module as the working directory: 'go mod download' of a module@version needs none,
# and must not read the caller's go.mod.
(cd "$work" && go mod download -json "github.com/dapr/dapr@$DAPR_VERSION" >"$work/download.json" 2>"$work/download.log") || {
	tail -n 20 "$work/download.log" >&2
	die "failed to download github.com/dapr/dapr@$DAPR_VERSION (GOPROXY=$(go env GOPROXY))." \
		"Check the network or proxy and run scripts/dapr-daprd.sh again."
}
src=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' "$work/download.json")
[[ -n $src && -f $src/go.mod ]] || die "go mod download did not report the module's directory (see $work/download.json)"

want_go=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$src/go.mod")
have_go=$(go env GOVERSION)
have_go=${have_go#go}
if [[ -n $want_go && $(printf '%s\n%s\n' "$want_go" "$have_go" | sort -V | head -n1) != "$want_go" ]]; then
	die "Go $have_go is too old; Dapr $DAPR_VERSION's go.mod asks for Go >= $want_go. Install a newer Go and run again."
fi

cp -R "$src" "$work/dapr"
chmod -R u+w "$work/dapr"
notag=$work/dapr/cmd/daprd/components/zz_notag.go
grep -q 'must use either' "$notag" 2>/dev/null ||
	die "$notag is not the file Dapr compiles without component build tags; this script knows Dapr's v1.16 layout: check cmd/daprd/components of $DAPR_VERSION and update the script."
cat >"$notag" <<'EOF'
package components

// Written by daprs' scripts/dapr-daprd.sh: this daprd, built for interoperability tests,
// has only the name resolvers (mDNS, SQLite, Kubernetes) and the in-memory state store among
// the components.

import (
	"github.com/dapr/components-contrib/nameresolution/kubernetes"
	"github.com/dapr/components-contrib/nameresolution/mdns"
	"github.com/dapr/components-contrib/nameresolution/sqlite"
	inmemory "github.com/dapr/components-contrib/state/in-memory"
	nr "github.com/dapr/dapr/pkg/components/nameresolution"
	state "github.com/dapr/dapr/pkg/components/state"
)

func init() {
	nr.DefaultRegistry.RegisterComponent(mdns.NewResolver, "mdns")
	nr.DefaultRegistry.RegisterComponent(sqlite.NewResolver, "sqlite")
	nr.DefaultRegistry.RegisterComponent(kubernetes.NewResolver, "kubernetes")
	state.DefaultRegistry.RegisterComponent(inmemory.NewInMemoryStateStore, "in-memory")
}
EOF

log "downloading the modules daprd needs"
if ! (cd "$work/dapr" && go list -deps ./cmd/daprd >/dev/null 2>"$work/deps.log"); then
	tail -n 20 "$work/deps.log" >&2
	die "failed to download the Go modules for Dapr's daprd (GOPROXY=$(go env GOPROXY))." \
		"Modules already fetched are kept in $GOMODCACHE; run scripts/dapr-daprd.sh again."
fi

log "compiling Dapr's daprd $DAPR_VERSION (a cold build takes minutes; later runs reuse $bin)"
: >"$work/build.log"
(
	while sleep 30; do
		log "  still building, $((SECONDS - start)) s, $(wc -l <"$work/build.log") packages compiled"
	done
) &
heartbeat_pid=$!
ldflags="-s -w -X github.com/dapr/dapr/pkg/buildinfo.version=${DAPR_VERSION#v} -X github.com/dapr/dapr/pkg/buildinfo.gitversion=$DAPR_VERSION"
# nice: a developer's cargo build running beside this keeps priority; free in CI.
if ! (cd "$work/dapr" && nice -n 10 go build -v -ldflags "$ldflags" -o "$work/daprd" ./cmd/daprd 2>"$work/build.log"); then
	grep -Ev '^[A-Za-z0-9./_~-]+$' "$work/build.log" | tail -n 40 >&2 || true
	die "go build of Dapr's daprd $DAPR_VERSION failed (output above)."
fi
kill "$heartbeat_pid" 2>/dev/null || true
wait "$heartbeat_pid" 2>/dev/null || true
heartbeat_pid=
mv "$work/daprd" "$bin"
log "built in $((SECONDS - start)) s: $bin"
echo "$bin"
