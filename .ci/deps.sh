#!/usr/bin/env bash
# .ci/deps.sh installs what the test suite needs on a Debian machine, as root.
#
# Idempotent and non-interactive: it reads no standard input, skips apt-get when every package is
# already installed, and builds the MinIO server only when the cached binary is missing. Tests
# start their own redis-server and minio on random loopback ports (and the hub benchmark its own
# nginx), so the Debian redis-server and nginx services are stopped and disabled here to keep
# ports 6379 and 80 and their pid files out of their way. chromium runs the hub's web page test.
# libseccomp-dev is for the node's containers (zos builds with -tags seccomp: runc's libcontainer
# compiles its seccomp support only then); nftables and iproute2 for the node's networks.
#
# Environment:
#   ZOS_CI_BIN    where the MinIO binary is cached (default /var/cache/zos-ci/bin, outside the repo)
#   MINIO_VERSION module version to build when @latest is refused by the module proxy
#                 (default: the pseudo-version last built and tested with this repo)
set -euo pipefail
exec </dev/null
cd /

bin=${ZOS_CI_BIN:-/var/cache/zos-ci/bin}
apt_pkgs=(fuse3 redis-server zstd squashfs-tools casync erofs-utils debootstrap umoci skopeo docker-registry chromium nginx
	libseccomp-dev nftables iproute2)

log() { printf 'deps: %s\n' "$*" >&2; }

missing=()
for p in "${apt_pkgs[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done
if ((${#missing[@]})); then
	log "apt-get install ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	# Keep the package's own service from starting: there may be no init, and tests run their own.
	policy=/usr/sbin/policy-rc.d
	cleanup_policy=
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod +x "$policy"
		cleanup_policy=1
	fi
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	if [[ -n $cleanup_policy ]]; then rm -f "$policy"; fi
else
	log "apt packages present"
fi

# The redis-server and nginx services started by their packages (where an init runs) would hold
# ports 6379 and 80; tests and benchmarks run their own. Stop them and keep them from starting
# again, ignoring machines without an init.
for svc in redis-server nginx; do
	if command -v systemctl >/dev/null 2>&1 && systemctl is-system-running >/dev/null 2>&1; then
		systemctl disable --now "$svc" >/dev/null 2>&1 || true
	elif command -v service >/dev/null 2>&1; then
		service "$svc" stop >/dev/null 2>&1 || true
	fi
	if command -v update-rc.d >/dev/null 2>&1; then
		update-rc.d "$svc" disable >/dev/null 2>&1 || true
	fi
done

# The MinIO server: no Debian package, so build it from the Go module proxy once and cache it.
if [[ -x $bin/minio ]]; then
	log "minio present at $bin/minio"
else
	mkdir -p "$bin"
	log "building minio into $bin (takes a few minutes)"
	start=$(date +%s)
	# Build beside the cache and rename into place, so an interrupted build
	# never leaves a half-written binary that the check above would trust.
	tmp=$(mktemp -d "$bin/.build-XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	if ! GOBIN=$tmp GOFLAGS=-buildvcs=false go install github.com/minio/minio@latest; then
		# MinIO tags releases as RELEASE.<date>, not semver, so the proxy lists
		# no versions; fall back to a pseudo-version known to build here.
		v=${MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}
		log "@latest refused; retrying with github.com/minio/minio@$v"
		GOBIN=$tmp GOFLAGS=-buildvcs=false GONOSUMDB=github.com/minio/minio \
			go install "github.com/minio/minio@$v"
	fi
	mv "$tmp/minio" "$bin/minio"
	log "minio built in $(($(date +%s) - start))s"
fi
"$bin/minio" --version >/dev/null
log "ok"
