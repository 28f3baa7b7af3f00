#!/usr/bin/env bash
# Builds the Kubernetes control plane the e2e harness runs (etcd, kube-apiserver,
# kube-controller-manager, kubectl) and helm from their published Go modules, into a
# cache directory keyed by the versions pinned in e2e/versions.env.
#
# Idempotent: a binary already in the cache is not built again, so a warm run takes
# about a second. Progress goes to stderr; on success the last line on stdout is the
# bin directory and nothing else, so callers can do:
#
#   export DAPRS_K8S_BIN="$(scripts/k8s-binaries.sh)"
#
# Environment:
#   DAPRS_CACHE_DIR  cache root (default: ${XDG_CACHE_HOME:-~/.cache}/daprs); the Go
#                    module and build caches live under it too, so CI can keep one dir.
#   GOPROXY          honoured as usual (default: the public Go module proxy).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../e2e/versions.env
. "$repo/e2e/versions.env"

log() { printf 'k8s-binaries: %s\n' "$*" >&2; }
die() {
	printf 'k8s-binaries: error: %s\n' "$1" >&2
	shift
	[[ $# -eq 0 ]] || printf 'k8s-binaries:   %s\n' "$@" >&2
	exit 1
}

cache_root=${DAPRS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/daprs}
bin_dir=$cache_root/k8s-$KUBERNETES_VERSION-helm-$HELM_VERSION-etcd-$ETCD_VERSION/bin

# name | module dir (under e2e/cluster) | package | pinned module | pinned version
targets=(
	"etcd|etcd|go.etcd.io/etcd/server/v3|go.etcd.io/etcd/server/v3|$ETCD_VERSION"
	"kube-apiserver|.|k8s.io/kubernetes/cmd/kube-apiserver|k8s.io/kubernetes|$KUBERNETES_VERSION"
	"kube-controller-manager|.|k8s.io/kubernetes/cmd/kube-controller-manager|k8s.io/kubernetes|$KUBERNETES_VERSION"
	"kubectl|.|k8s.io/kubernetes/cmd/kubectl|k8s.io/kubernetes|$KUBERNETES_VERSION"
	"helm|helm|helm.sh/helm/v3/cmd/helm|helm.sh/helm/v3|$HELM_VERSION"
)

missing=()
for t in "${targets[@]}"; do
	IFS='|' read -r name _ <<<"$t"
	[[ -x $bin_dir/$name ]] || missing+=("$name")
done
if [[ ${#missing[@]} -eq 0 ]]; then
	log "all binaries present in $bin_dir"
	echo "$bin_dir"
	exit 0
fi
log "to build: ${missing[*]} (Kubernetes $KUBERNETES_VERSION, helm $HELM_VERSION, etcd $ETCD_VERSION)"

command -v go >/dev/null 2>&1 ||
	die "Go is not on PATH; Go >= $GO_MIN_VERSION is needed to build the e2e Kubernetes binaries." \
		"Install it (Debian bookworm's golang package is too old: use an official Go release) and run scripts/k8s-binaries.sh again," \
		"or point DAPRS_K8S_BIN at a directory holding etcd, kube-apiserver, kube-controller-manager, kubectl and helm."
go_version=$(go env GOVERSION)
go_version=${go_version#go}
if [[ $(printf '%s\n%s\n' "$GO_MIN_VERSION" "$go_version" | sort -V | head -n1) != "$GO_MIN_VERSION" ]]; then
	die "Go $go_version is too old; Go >= $GO_MIN_VERSION is needed (helm $HELM_VERSION asks for it). Install a newer Go and run again."
fi

# The go.mod files must pin what versions.env says, or the cache key would lie.
for t in "${targets[@]}"; do
	IFS='|' read -r name dir _ module version <<<"$t"
	gomod=$repo/e2e/cluster/$dir/go.mod
	grep -Eq "^[[:space:]]*(require[[:space:]]+)?${module//./\\.}[[:space:]]+${version//./\\.}([[:space:]]|$)" "$gomod" ||
		die "$gomod does not require $module $version as e2e/versions.env says; update one to match the other."
done

export GOMODCACHE=$cache_root/go/mod
export GOCACHE=$cache_root/go/build
export GOFLAGS="-trimpath -mod=readonly -buildvcs=false"
export CGO_ENABLED=0
# Never fetch another toolchain behind the user's back; the check above explains what to do.
export GOTOOLCHAIN=local

build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
kube_minor=$(cut -d. -f2 <<<"$KUBERNETES_VERSION")
kube_ldflags=()
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	# What the release build sets (hack/lib/version.sh): kubectl version, /version and
	# the API server's binary version (feature gates, emulation) all read these.
	kube_ldflags+=(
		"-X $pkg.gitVersion=$KUBERNETES_VERSION"
		"-X $pkg.gitMajor=1"
		"-X $pkg.gitMinor=$kube_minor"
		"-X $pkg.gitTreeState=clean"
		"-X $pkg.gitCommit="
		"-X $pkg.buildDate=$build_date"
	)
done

ldflags_for() {
	local name=$1 dir=$2
	case $name in
	kube-*|kubectl) echo "-s -w ${kube_ldflags[*]}" ;;
	helm)
		# As helm's Makefile: its default Capabilities.KubeVersion follows the client-go it
		# was built with (the real cluster's version is used when it talks to one).
		local cg major minor
		cg=$(cd "$repo/e2e/cluster/$dir" && go list -m -f '{{.Version}}' k8s.io/client-go)
		major=$(($(cut -d. -f1 <<<"${cg#v}") + 1))
		minor=$(cut -d. -f2 <<<"$cg")
		echo "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
			"-X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
			"-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=$major" \
			"-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor" \
			"-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=$major" \
			"-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor"
		;;
	*) echo "-s -w" ;;
	esac
}

mkdir -p "$bin_dir" "$GOMODCACHE" "$GOCACHE"
# One build at a time (parallel test binaries may all call this); the others wait, then
# find the binaries in place.
if command -v flock >/dev/null 2>&1; then
	exec 9>"$cache_root/.build.lock"
	flock 9
fi
work=$(mktemp -d "$cache_root/build.XXXXXX")
heartbeat_pid=
cleanup() {
	[[ -n $heartbeat_pid ]] && kill "$heartbeat_pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

# Prints a line every 30 s while a build runs, so a cold build in CI never looks hung.
heartbeat() {
	local name=$1 log=$2 start=$SECONDS
	while sleep 30; do
		log "  $name: still building, $((SECONDS - start)) s, $(wc -l <"$log") packages compiled"
	done
}

total_start=$SECONDS
for t in "${targets[@]}"; do
	IFS='|' read -r name dir pkg _ <<<"$t"
	if [[ -x $bin_dir/$name ]]; then
		log "$name: cached"
		continue
	fi
	moddir=$repo/e2e/cluster/$dir
	start=$SECONDS
	log "$name: downloading modules for $pkg"
	if ! (cd "$moddir" && go list -deps "$pkg" >/dev/null 2>"$work/$name.download.log"); then
		tail -n 20 "$work/$name.download.log" >&2
		die "failed to download the Go modules for $pkg (GOPROXY=$(go env GOPROXY))." \
			"Check the network or proxy and run scripts/k8s-binaries.sh again; modules already fetched are kept in $GOMODCACHE."
	fi
	log "$name: compiling (a cold build takes minutes; later runs reuse $bin_dir)"
	: >"$work/$name.build.log"
	heartbeat "$name" "$work/$name.build.log" &
	heartbeat_pid=$!
	# nice: a developer's cargo build running beside this keeps priority; free in CI.
	if ! (cd "$moddir" && nice -n 10 go build -v -ldflags "$(ldflags_for "$name" "$dir")" \
		-o "$work/$name" "$pkg" 2>"$work/$name.build.log"); then
		kill "$heartbeat_pid" 2>/dev/null || true
		heartbeat_pid=
		grep -Ev '^[A-Za-z0-9./_~-]+$' "$work/$name.build.log" | tail -n 40 >&2 || true
		die "go build of $pkg failed (output above)."
	fi
	kill "$heartbeat_pid" 2>/dev/null || true
	wait "$heartbeat_pid" 2>/dev/null || true
	heartbeat_pid=
	mv "$work/$name" "$bin_dir/$name"
	log "$name: built in $((SECONDS - start)) s"
done
log "done in $((SECONDS - total_start)) s: $bin_dir"
echo "$bin_dir"
