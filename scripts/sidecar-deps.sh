#!/usr/bin/env bash
# Installs what the sidecar's tests need, idempotently: redis-server and PostgreSQL from Debian
# packages when missing (the tests start private instances on free ports), the official Python
# SDK (`pip install dapr`) in a virtualenv and the official JavaScript SDK
# (`npm install @dapr/dapr`) under ~/.cache/daprs. Downloads are cached in ~/.cache/pip and
# ~/.cache/npm. Prints the cache directory.
set -euo pipefail

die() { printf 'sidecar-deps: error: %s\n' "$*" >&2; exit 1; }
CACHE="${HOME}/.cache/daprs"
mkdir -p "$CACHE"

apt_install() {
	local sudo=""
	[ "$(id -u)" = 0 ] || sudo="sudo"
	command -v apt-get >/dev/null || die "$* missing and apt-get is not available: install $* with your package manager"
	if [ -z "${SIDECAR_DEPS_APT_UPDATED:-}" ]; then
		$sudo apt-get update -qq >&2 || die "apt-get update failed"
		SIDECAR_DEPS_APT_UPDATED=1
	fi
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >&2 || die "apt-get install $* failed"
}

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v curl >/dev/null || missing+=(curl)
[ "${#missing[@]}" -eq 0 ] || apt_install "${missing[@]}"

command -v curl >/dev/null || die "curl is missing (the SDK test polls daprd's healthz with it): apt-get install -y curl"
command -v python3 >/dev/null || die "python3 is missing: apt-get install -y python3 python3-venv"

VENV="$CACHE/sdk-venv"
if ! "$VENV/bin/python" -c 'import dapr.clients' >/dev/null 2>&1; then
	python3 -m venv "$VENV" || die "python3 -m venv failed: apt-get install -y python3-venv"
	"$VENV/bin/pip" install --cache-dir "${HOME}/.cache/pip" -q dapr \
		|| die "pip install dapr failed (network? proxy?); rerun when PyPI is reachable"
fi

if command -v npm >/dev/null; then
	JS="$CACHE/js"
	if [ ! -d "$JS/node_modules/@dapr/dapr" ]; then
		mkdir -p "$JS"
		[ -f "$JS/package.json" ] || echo '{"name":"daprs-sdk-tests","private":true}' >"$JS/package.json"
		(cd "$JS" && npm install --cache "${HOME}/.cache/npm" --no-audit --no-fund @dapr/dapr >/dev/null) \
			|| die "npm install @dapr/dapr failed (network? proxy?); rerun when the npm registry is reachable"
	fi
else
	die "npm is missing (the JavaScript SDK test needs node and npm): apt-get install -y nodejs npm"
fi
echo "$CACHE"
