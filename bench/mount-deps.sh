#!/usr/bin/env bash
# bench/mount-deps.sh: install what bench/mount.sh needs, idempotently.
#
# Debian packages: fio (read throughput), the conventional pull (docker-registry, skopeo,
# umoci, runc), fuse3, e2fsprogs (the ext4 reference image), curl, jq, zstd, time.
# Builds bench/mountbench (toxiproxy with a shared-bandwidth and a byte-count toxic, plus a
# static file server) into $BIN, rebuilt only when its sources change.
#
# Usage: bash bench/mount-deps.sh
# Environment: BIN=/var/cache/zos-bench/bin
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${BIN:-/var/cache/zos-bench/bin}

pkgs=(fio docker-registry skopeo umoci runc fuse3 e2fsprogs curl jq zstd time)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "installing ${missing[*]}" >&2
	apt-get update -qq
	# docker-registry's package starts a service on :5000; the bench runs its own.
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	if [[ " ${missing[*]} " == *" docker-registry "* ]]; then
		systemctl disable --now docker-registry >/dev/null 2>&1 || true
	fi
fi

mkdir -p "$BIN"
src="$REPO/bench/mountbench"
stamp="$BIN/mountbench.sum"
sum=$(cat "$src"/go.mod "$src"/go.sum "$src"/*.go | sha256sum | cut -d' ' -f1)
if [ ! -x "$BIN/mountbench" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$sum" ]; then
	echo "building $BIN/mountbench" >&2
	(cd "$src" && go build -o "$BIN/mountbench" .)
	echo "$sum" >"$stamp"
fi
