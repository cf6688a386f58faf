#!/usr/bin/env bash
# bench/convert.sh: the conversion benchmark of issue 5, side by side.
#
# A multi-layer OCI image of the corpus tree big (six gzip layers built with umoci: the base
# system without usr/lib and usr/share; usr/share; usr/lib/x86_64-linux-gnu; usr/lib/jvm; the
# rest of usr/lib; a last layer that deletes directories and files, replaces files and adds
# some) is built once, pushed with skopeo into Debian's docker-registry on loopback, and
# converted from there, REPS rounds, the tools alternated (each round starts with the next):
#
#   zos      zos flist pack docker://127.0.0.1:PORT/big:latest -o X.fl --store dir://EMPTY
#   zoshub   zos hub convert docker://... NS/big --wait --poll 100ms, on a local hub, empty data dir
#            (started with --convert-allow-private; only the convert is timed)
#   umoci    skopeo copy docker://... oci:EMPTY:big && umoci unpack --image EMPTY:big BUNDLE
#
# Every run writes to a new, empty directory (all are kept until the end, about 8 GB: deleting
# a tree right before the next run makes ext4 walk the freed inodes); a sync precedes every run
# (outside the timing); the registry's storage is read into the page cache before the first
# round, so every tool pulls from memory over loopback. Prints a markdown table
# (bench/convertreport.py).
#
# Usage: bash bench/convert.sh        (as root: umoci unpack keeps owners)
# Environment (all optional):
#   CORPUS=/var/cache/zos-corpus   the tree big (corpus/build-corpus.sh big)
#   CACHE=/var/cache/zos-bench     the image (convert-oci/) and registry storage (convert-registry/)
#   OUT=/var/tmp/zos-bench-convert scratch (wiped at the start; never in the repository)
#   ZOS=$OUT/zos  BUILD=1          build zos from this checkout into $ZOS first (BUILD=0: as is)
#   REPS=3  TOOLS="zos zoshub umoci"
#   REG_PORT=18510 HUB_PORT=18520  loopback ports
#   PREPARE_ONLY=1                 build and push the image, then stop
#   RESULTS=$OUT/results.tsv       raw measurements: tool rep wall_s pull_s unpack_s status message
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CORPUS=${CORPUS:-/var/cache/zos-corpus}
CACHE=${CACHE:-/var/cache/zos-bench}
OUT=${OUT:-/var/tmp/zos-bench-convert}
ZOS=${ZOS:-$OUT/zos}
BUILD=${BUILD:-1}
REPS=${REPS:-3}
TOOLS=${TOOLS:-"zos zoshub umoci"}
REG_PORT=${REG_PORT:-18510}
HUB_PORT=${HUB_PORT:-18520}
PREPARE_ONLY=${PREPARE_ONLY:-0}
RESULTS=${RESULTS:-$OUT/results.tsv}
LAYOUT=$CACHE/convert-oci
REGDIR=$CACHE/convert-registry
IMAGE=127.0.0.1:$REG_PORT/big:latest

log() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }
die() { printf 'convert.sh: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.3f", b - a}'; }
oneline() { grep -v '^[[:space:]]*$' "$1" 2>/dev/null | tail -n 3 | tr '\n\t|' '   ' | cut -c1-240; }

case "$OUT" in "$REPO" | "$REPO"/*) die "OUT=$OUT is inside the repository; use a scratch directory" ;; esac
case "$CACHE" in "$REPO" | "$REPO"/*) die "CACHE=$CACHE is inside the repository" ;; esac
[ "$(id -u)" = 0 ] || die "run as root (umoci unpack keeps owners)"
[ -d "$CORPUS/big/usr" ] || die "no $CORPUS/big: corpus/build-corpus.sh big"
for t in skopeo umoci docker-registry jq; do
	command -v "$t" >/dev/null || die "$t missing (apt-get install skopeo umoci docker-registry jq)"
done

PIDS=()
cleanup() {
	set +e
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
	wait "${PIDS[@]}" 2>/dev/null
	PIDS=()
}
trap cleanup EXIT

wait_port() {
	local i
	for i in $(seq 1 100); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.1
	done
	die "nothing listens on 127.0.0.1:$1"
}

# copy PATH...: copy paths of big (relative) into the bundle's rootfs, owners and times kept.
copy() { tar -C "$CORPUS/big" --numeric-owner -cf - "$@" | tar -C "$BUNDLE/rootfs" --numeric-owner -xpf -; }
# layer: commit what changed in the bundle as a new layer (umoci writes gzip layers).
layer() {
	umoci repack --refresh-bundle --image "$LAYOUT:big" "$BUNDLE"
	log "  layer $(jq '.layers | length' <"$LAYOUT/blobs/sha256/$(jq -r '.manifests[0].digest' <"$LAYOUT/index.json" | cut -d: -f2)"): $*"
}

# The image, built once (the stamp is big's mtime).
prepare_image() {
	local stamp=$CACHE/convert-oci.stamp want
	want=$(stat -c %Y "$CORPUS/big")
	if [ -d "$LAYOUT" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
		return 0
	fi
	log "building the multi-layer OCI image of big with umoci (once; a few minutes)"
	rm -rf "$LAYOUT" "$REGDIR" "$stamp"
	BUNDLE=$CACHE/convert-bundle
	rm -rf "$BUNDLE"
	umoci init --layout "$LAYOUT"
	umoci new --image "$LAYOUT:big"
	umoci config --image "$LAYOUT:big" --config.cmd /bin/bash --config.env LANG=C.UTF-8 --config.workingdir /root
	umoci unpack --image "$LAYOUT:big" "$BUNDLE" >/dev/null
	local base=()
	for p in $(cd "$CORPUS/big" && ls -A); do
		[ "$p" = usr ] || [ "$p" = .done ] || base+=("$p")
	done
	for p in $(cd "$CORPUS/big" && ls -A usr); do
		case "$p" in lib | share) ;; *) base+=("usr/$p") ;; esac
	done
	copy "${base[@]}"
	layer "base system without usr/lib and usr/share"
	copy usr/share
	layer "usr/share"
	copy usr/lib/x86_64-linux-gnu
	layer "usr/lib/x86_64-linux-gnu"
	copy usr/lib/jvm
	layer "usr/lib/jvm"
	local rest=()
	for p in $(cd "$CORPUS/big" && ls -A usr/lib); do
		case "$p" in x86_64-linux-gnu | jvm) ;; *) rest+=("usr/lib/$p") ;; esac
	done
	copy "${rest[@]}"
	layer "the rest of usr/lib"
	# Deletions (directories and files), replacements (small and large files, a file
	# becoming a symlink, a directory becoming a file), permission changes, new files.
	local R=$BUNDLE/rootfs
	rm -rf "$R/usr/share/doc" "$R/usr/include/linux" "$R/usr/share/man/man3"
	find "$R/usr/bin" -maxdepth 1 -type f -name 'g*' -print0 | head -z -n 20 | xargs -0 rm -f
	echo 'PRETTY_NAME="zos bench image"' >"$R/usr/lib/os-release"
	local big
	big=$(find "$R/usr/lib/x86_64-linux-gnu" -type f -size +8M | sort | head -n 3)
	for f in $big; do
		head -c "$(( $(stat -c %s "$f") / 2 ))" "$f" >"$f.new" && cat "$f" >>"$f.new" && mv "$f.new" "$f"
	done
	rm -f "$R/etc/hostname" && ln -s /proc/sys/kernel/hostname "$R/etc/hostname"
	rm -rf "$R/usr/share/zoneinfo/right" && echo "was a directory" >"$R/usr/share/zoneinfo/right"
	chmod 0700 "$R/usr/bin/"[a-c]* 2>/dev/null || true
	mkdir -p "$R/opt/app" && head -c 50000000 /dev/urandom >"$R/opt/app/data.bin" && echo "#!/bin/sh" >"$R/opt/app/run"
	layer "deletions, replacements and additions"
	rm -rf "$BUNDLE"
	umoci gc --layout "$LAYOUT"
	echo "$want" >"$stamp"
}

start_registry() {
	mkdir -p "$REGDIR"
	cat >"$OUT/registry.yml" <<-EOF
		version: 0.1
		log:
		  level: error
		  accesslog:
		    disabled: true
		storage:
		  filesystem:
		    rootdirectory: $REGDIR
		http:
		  addr: 127.0.0.1:$REG_PORT
	EOF
	docker-registry serve "$OUT/registry.yml" >"$OUT/registry.log" 2>&1 &
	PIDS+=($!)
	wait_port "$REG_PORT"
	if ! skopeo inspect --tls-verify=false "docker://$IMAGE" >/dev/null 2>&1; then
		log "pushing the image into the local registry (once)"
		skopeo copy -q --dest-tls-verify=false "oci:$LAYOUT:big" "docker://$IMAGE"
	fi
}

rm -rf "$OUT"
mkdir -p "$OUT/run"
: >"$RESULTS"
prepare_image
start_registry
[ "$PREPARE_ONLY" = 1 ] && { log "image ready: docker://$IMAGE"; exit 0; }

if [ "$BUILD" = 1 ]; then
	log "building zos into $ZOS"
	(cd "$REPO" && go build -o "$ZOS" ./cmd/zos) || die "zos build failed"
fi
"$ZOS" key gen "$OUT/user.key" >/dev/null

# The image's sizes, for MB/s: compressed layers (what is pulled) and uncompressed tars.
MANIFEST=$(skopeo inspect --raw --tls-verify=false "docker://$IMAGE")
LAYERS_GZ=$(jq '[.layers[].size] | add' <<<"$MANIFEST")
NLAYERS=$(jq '.layers | length' <<<"$MANIFEST")

# rec TOOL REP WALL PULL UNPACK STATUS MSG
rec() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RESULTS"; }

run_zos() {
	local rep=$1 w=$OUT/run/zos-$1 t0 wall st=ok msg=""
	rm -rf "$w" && mkdir -p "$w/store"
	t0=$(now)
	if ! "$ZOS" flist pack "docker://$IMAGE" -o "$w/big.fl" --store "dir://$w/store" --json >"$w/out.json" 2>"$w/err"; then
		st=FAIL msg="$(oneline "$w/err")"
	fi
	wall=$(since "$t0")
	[ "$st" = ok ] && TAR_BYTES=$(jq .layer_bytes <"$w/out.json") && DIGEST_LOCAL=$(jq -r .digest <"$w/out.json")
	rec zos "$rep" "$wall" 0 0 "$st" "$msg"
	log "zos flist pack: $st ${wall}s $msg"
}

run_zoshub() {
	local rep=$1 w=$OUT/run/zoshub-$1 t0 wall st=ok msg="" pid
	rm -rf "$w" && mkdir -p "$w/data"
	"$ZOS" hub serve --listen "127.0.0.1:$HUB_PORT" --data "$w/data" --convert-allow-private --log-level warn 2>"$w/hub.log" &
	pid=$!
	wait_port "$HUB_PORT"
	"$ZOS" hub register bench --hub "http://127.0.0.1:$HUB_PORT" --key "$OUT/user.key" >/dev/null
	t0=$(now)
	if ! "$ZOS" hub convert "docker://$IMAGE" bench/big:latest --hub "http://127.0.0.1:$HUB_PORT" --key "$OUT/user.key" \
		--wait --poll 100ms --json >"$w/out.json" 2>"$w/err"; then
		st=FAIL msg="$(oneline "$w/err")"
	fi
	wall=$(since "$t0")
	kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
	[ "$st" = ok ] && DIGEST_HUB=$(jq -r .result.digest <"$w/out.json")
	rec zoshub "$rep" "$wall" 0 0 "$st" "$msg"
	log "zos hub convert: $st ${wall}s $msg"
}

run_umoci() {
	local rep=$1 w=$OUT/run/umoci-$1 t0 t1 wall tp tu st=ok msg=""
	rm -rf "$w" && mkdir -p "$w"
	t0=$(now)
	if ! skopeo copy -q --src-tls-verify=false "docker://$IMAGE" "oci:$w/oci:big" >"$w/err" 2>&1; then
		st=FAIL msg="skopeo: $(oneline "$w/err")"
	fi
	tp=$(since "$t0")
	t1=$(now)
	if [ "$st" = ok ] && ! umoci unpack --image "$w/oci:big" "$w/bundle" >"$w/err" 2>&1; then
		st=FAIL msg="umoci: $(oneline "$w/err")"
	fi
	tu=$(since "$t1")
	wall=$(since "$t0")
	rec umoci "$rep" "$wall" "$tp" "$tu" "$st" "$msg"
	log "skopeo copy + umoci unpack: $st ${wall}s (pull ${tp}s, unpack ${tu}s) $msg"
}

# The registry's blobs in the page cache for every round alike (the first tool of the first
# round would otherwise pay for reading them from disk).
find "$REGDIR" -type f -name data -exec cat {} + >/dev/null
read -r -a tools <<<"$TOOLS"
TAR_BYTES=0 DIGEST_LOCAL="" DIGEST_HUB=""
for rep in $(seq 1 "$REPS"); do
	n=${#tools[@]}
	for i in $(seq 0 $((n - 1))); do
		t=${tools[$(((i + rep - 1) % n))]}
		sync # outside the timing: no tool pays for the previous one's dirty pages
		"run_$t" "$rep"
	done
done
if [ -n "$DIGEST_LOCAL" ] && [ -n "$DIGEST_HUB" ] && [ "$DIGEST_LOCAL" != "$DIGEST_HUB" ]; then
	log "note: the hub's flist digest differs from the local pack's (the recorded store URLs differ)"
fi
rm -rf "$OUT/run"
python3 "$REPO/bench/convertreport.py" "$RESULTS" --layers "$NLAYERS" --gz-bytes "$LAYERS_GZ" --tar-bytes "${TAR_BYTES:-0}"
