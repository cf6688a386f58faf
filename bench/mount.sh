#!/usr/bin/env bash
# bench/mount.sh: the lazy-mount benchmark of issue 4, in one run, side by side.
#
# The flists and tarballs are served over HTTP on loopback (bench/mountbench serve), the chunk
# store by `zos hub serve` as a node would fetch it (CHUNKS=static: by the same static server),
# each behind toxiproxy (bench/mountbench proxy: toxiproxy with a bandwidth limit shared by all
# connections and a byte counter), on two links: "100M" = 100 Mbit/s with 20 ms added to every
# response, and "fast" = no toxics (loopback through the proxy). Three parts:
#
#   start  cold start on big, from nothing on the node to the end of python3 -c 'import json',
#          gcc --version, node -e 1, java -version (chroot, /proc mounted): zos lazy; zos with
#          a recorded trace (when `zos flist trace` exists); zos with the trace and its start
#          bundle streamed (when trace writes one; from the hub, which builds it when the
#          trace is pushed, if it builds the same bytes); zos flist warm then run (when it
#          exists); curl big.tar | tar -x then run; the same with big.tar.zst; docker-registry
#          -> skopeo copy -> umoci unpack -> runc run. Bytes = bytes through the proxy.
#   read   a 1 GiB file (concatenated corpus files) read with fio: sequential 1 MiB and random
#          4 KiB, zos cold (both links), zos warm (disk cache; page cache), ext4 (disk; page
#          cache) on a loop-mounted ext4 image with direct I/O (so that remounting makes it cold).
#   meta   mount time and `find MNT -ls` on big, cold and warm, zos vs the same ext4 image.
#
# Prints a markdown table and the issue's goals with PASS/FAIL (bench/mountreport.py).
#
# Usage: bash bench/mount.sh        (as root; installs its dependencies with bench/mount-deps.sh)
# Environment (all optional):
#   CORPUS=/var/cache/zos-corpus    big and big.tar (corpus/build-corpus.sh big)
#   CACHE=/var/cache/zos-bench      prepared inputs kept across runs (1 GiB file, ext4 image,
#                                   OCI image, registry storage, big.tar.zst, tools in bin/)
#   OUT=/var/tmp/zos-bench-mount    scratch (wiped at the start; never in the repository)
#   ZOS=$OUT/zos  BUILD=1           build zos from this checkout into $ZOS first (BUILD=0: as is)
#   PARTS="start read meta"  LINKS="100M fast"
#   START_TOOLS="zos zostrace zosbundle zostracewide zoswarm tar tarzst oci"
#   WIDE_PREFETCH=16                zostracewide: the trace row with --prefetch-fetchers this
#   RATE_KBPS=12500 LATENCY_MS=20   the slow link (1 KB = 1000 bytes: 12500 KB/s = 100 Mbit/s)
#   SEQ_RUNTIME=60 RAND_RUNTIME=20  fio limits in seconds (sequential: the file or this, first)
#   ZOS_MOUNT_FLAGS=""              extra flags for every zos mount (e.g. "--fetchers 32")
#   RECOMPRESS=16                   CHUNKS=hub: the hub's --recompress-level; each flist packed
#                                   is pushed to it and its recompression waited for (0: none)
#   CHUNKS=hub                      who serves the chunk store to zos: hub (zos hub serve over it,
#                                   batched gets included) or static (bench/mountbench serve)
#   DISK_REPS=5                     alternated reps of the warm-disk rows (the median is reported)
#   DISK_RAND_IOS=50000             random reads of the warm-disk rows (zos new mount and its reference)
#   COLD_RAND_IOS=1000              random reads on a cold mount (a fixed count, not a time:
#                                   after enough reads every chunk is cached and it is warm)
#   META_REPS=3                     repetitions of the metadata measurements (best kept)
#   CACHE_SIZE=8G                   passed as --cache-size to every mount when zos has that flag
#   TRACE_CMD                       the shell command traced by `zos flist trace FL -- /bin/sh -c`
#                                   (default: the four commands; /proc mounted if zos did not)
#   RESULTS=$OUT/results.jsonl      raw measurements
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CORPUS=${CORPUS:-/var/cache/zos-corpus}
CACHE=${CACHE:-/var/cache/zos-bench}
OUT=${OUT:-/var/tmp/zos-bench-mount}
ZOS=${ZOS:-$OUT/zos}
BUILD=${BUILD:-1}
PARTS=${PARTS:-"start read meta"}
LINKS=${LINKS:-"100M fast"}
START_TOOLS=${START_TOOLS:-"zos zostrace zosbundle zostracewide zoswarm tar tarzst oci"}
WIDE_PREFETCH=${WIDE_PREFETCH:-16}
RATE_KBPS=${RATE_KBPS:-12500}
LATENCY_MS=${LATENCY_MS:-20}
SEQ_RUNTIME=${SEQ_RUNTIME:-60}
RAND_RUNTIME=${RAND_RUNTIME:-20}
COLD_RAND_IOS=${COLD_RAND_IOS:-1000}
DISK_RAND_IOS=${DISK_RAND_IOS:-50000}
DISK_REPS=${DISK_REPS:-5}
ZOS_MOUNT_FLAGS=${ZOS_MOUNT_FLAGS:-}
CHUNKS=${CHUNKS:-hub}
RECOMPRESS=${RECOMPRESS:-16}
META_REPS=${META_REPS:-3}
CACHE_SIZE=${CACHE_SIZE:-8G}
RESULTS=${RESULTS:-$OUT/results.jsonl}
BIN=$CACHE/bin
MB=$BIN/mountbench

# Loopback ports: toxiproxy API, HTTP store server and its proxy, registry and its proxy.
API_PORT=${API_PORT:-18474}
HTTP_PORT=${HTTP_PORT:-18080}
HTTP_PROXY_PORT=${HTTP_PROXY_PORT:-18081}
REG_PORT=${REG_PORT:-18500}
REG_PROXY_PORT=${REG_PROXY_PORT:-18501}
HUB_PORT=${HUB_PORT:-18082}
HUB_PROXY_PORT=${HUB_PROXY_PORT:-18083}
API=http://127.0.0.1:$API_PORT
STORE_URL=http://127.0.0.1:$HTTP_PROXY_PORT
CHUNK_URL=$STORE_URL/store
[ "$CHUNKS" = hub ] && CHUNK_URL=http://127.0.0.1:$HUB_PROXY_PORT/chunks

CMDS=("python3 -c 'import json'" "gcc --version" "node -e 1" "java -version")
CMD_KEYS=(python gcc node java)
CLEAN_ENV=(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8)

log() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }
die() { printf 'mount.sh: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.3f", b - a}'; }

case "$OUT" in "$REPO" | "$REPO"/*) die "OUT=$OUT is inside the repository; use a scratch directory" ;; esac
case "$CACHE" in "$REPO" | "$REPO"/*) die "CACHE=$CACHE is inside the repository" ;; esac
[ "$(id -u)" = 0 ] || die "run as root (FUSE mounts, chroot, loop devices, runc)"

# rec key=value...: one measurement as a JSON line in $RESULTS (numbers stay numbers).
rec() {
	printf '%s\n' "$@" | tr -d '\r' | jq -cRn '[inputs | capture("^(?<k>[^=]+)=(?<v>.*)$")
		| {key: .k, value: (.v | tonumber? // .)}] | from_entries' >>"$RESULTS"
}
# oneline FILE: the last lines of a log, on one line, for a table cell.
oneline() { grep -v '^[[:space:]]*$' "$1" 2>/dev/null | tail -n 3 | tr '\n\t|' '   ' | cut -c1-240; }

# ---- processes and mounts this script owns; all undone on exit ----
PIDS=()
LOOPDEV=""
cleanup() {
	set +e
	if [ -d "$OUT/run" ]; then
		# Innermost first: proc inside a mount, then the mounts.
		grep -F " $OUT/" /proc/self/mounts | awk '{print $2}' | sort -r | while read -r m; do
			m=$(printf '%b' "$m")
			case "$m" in
			*/proc) umount "$m" 2>/dev/null || umount -l "$m" ;;
			*) "$ZOS" flist umount "$m" 2>/dev/null || umount "$m" 2>/dev/null || umount -l "$m" ;;
			esac
		done
	fi
	for id in $(runc list -q 2>/dev/null | grep '^zosbench-'); do runc delete -f "$id" >/dev/null 2>&1; done
	# Forget what was released, so that a second call (the EXIT trap after the explicit one)
	# cannot detach a loop device or signal a process id that someone else has since got.
	[ -n "$LOOPDEV" ] && losetup -d "$LOOPDEV" 2>/dev/null
	LOOPDEV=""
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
	wait "${PIDS[@]}" 2>/dev/null
	PIDS=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() {
	local i
	for i in $(seq 1 100); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.1
	done
	die "nothing listens on 127.0.0.1:$1"
}

# ---- toxiproxy ----
toxi() { curl -sf -X "$1" "$API$2" ${3:+-d "$3"} >/dev/null; }
proxy_create() { toxi POST /proxies "{\"name\":\"$1\",\"listen\":\"127.0.0.1:$2\",\"upstream\":\"127.0.0.1:$3\"}"; }
# set_link PROXY LINK: toxics for that link, and fresh byte and request counters. The store's
# link is two proxies when the hub serves the chunks (the flist is fetched before any chunk,
# so the two never share the link's bandwidth at once).
set_link() {
	if [ "$1" = store ] && [ "$CHUNKS" = hub ]; then
		set_proxy hub "$2"
		HUB_REQ0=$(hub_requests)
	fi
	set_proxy "$@"
}
set_proxy() {
	local p=$1 t
	wait_idle "$p"
	for t in count latency bw; do curl -sf -X DELETE "$API/proxies/$p/toxics/$t" >/dev/null || true; done
	[ "$p" = store ] && curl -sf -X POST "http://127.0.0.1:$HTTP_PORT/.mountbench/requests" >/dev/null
	toxi POST "/proxies/$p/toxics" '{"name":"count","type":"count","stream":"downstream","attributes":{"bytes":0}}'
	case "$2" in
	100M)
		# Latency first: it delays each piece from the moment it left the server.
		toxi POST "/proxies/$p/toxics" "{\"name\":\"latency\",\"type\":\"latency\",\"stream\":\"downstream\",\"attributes\":{\"latency\":$LATENCY_MS}}"
		toxi POST "/proxies/$p/toxics" "{\"name\":\"bw\",\"type\":\"shared_bandwidth\",\"stream\":\"downstream\",\"attributes\":{\"rate\":$RATE_KBPS}}"
		;;
	fast) ;;
	*) die "unknown link $2" ;;
	esac
}
# wait_idle PROXY: wait (up to 10 s) until no connection to the proxy is open. Toxiproxy 2.5
# can panic adding a toxic to a link that is still closing (link.go:186), and a mount that
# was unmounted mid-prefetch leaves a few.
wait_idle() {
	local port i
	port=$(curl -sf "$API/proxies/$1" | jq -r .listen) || return 0
	port=${port##*:}
	for i in $(seq 100); do
		ss -Htn state established "( sport = :$port )" | grep -q . || return 0
		sleep 0.1
	done
	log "connections to proxy $1 still open after 10 s"
}
count_bytes() { curl -sf "$API/proxies/$1/toxics/count" | jq .attributes.bytes; }
# proxy_bytes PROXY: bytes through it (for the store: and through the hub's) since set_link.
proxy_bytes() {
	local n
	n=$(count_bytes "$1")
	[ "$1" = store ] && [ "$CHUNKS" = hub ] && n=$((n + $(count_bytes hub)))
	echo "$n"
}
# The hub's chunk requests so far (GETs and batched gets), from its metrics.
hub_requests() {
	curl -sf "http://127.0.0.1:$HUB_PORT/metrics" | awk '/^zos_hub_requests_total\{.*route="chunks"/ {s += $NF} END {printf "%d\n", s}'
}
# Requests the store served (round trips) since set_link: the static server's, plus the hub's.
store_requests() {
	local n
	n=$(curl -sf "http://127.0.0.1:$HTTP_PORT/.mountbench/requests")
	[ "$CHUNKS" = hub ] && n=$((n + $(hub_requests) - HUB_REQ0))
	echo "$n"
}

# ---- zos ----
zos_has() { "$ZOS" "$@" --help 2>/dev/null | grep -q "^  zos $*"; }
# mount_flags [notrace]: --cache-size when zos has it; --no-trace (when it has it) for a mount
# that must not prefetch by a trace lying beside the flist.
mount_flags() {
	local h
	h=$("$ZOS" flist mount --help 2>/dev/null)
	if grep -q -- '--cache-size' <<<"$h"; then echo "--cache-size $CACHE_SIZE"; fi
	if [ "${1:-}" = notrace ] && grep -q -- '--no-trace' <<<"$h"; then echo --no-trace; fi
	echo "$ZOS_MOUNT_FLAGS"
}
# zmount FL MNT CACHEDIR LOG [notrace | EXTRA-FLAGS]: mount through the proxy.
zmount() {
	mkdir -p "$2" "$3"
	local extra=${5:-}
	[ "$extra" = notrace ] && extra=""
	# shellcheck disable=SC2046,SC2086
	"$ZOS" flist mount "$1" "$2" --store "$CHUNK_URL" --cache "$3" --log "$4" $(mount_flags "${5:-}") $extra >/dev/null
}
zumount() { "$ZOS" flist umount "$1" 2>/dev/null || "$ZOS" flist umount --lazy "$1"; }

# run_cmds ROOT LOG PREFIX: the four commands chrooted in ROOT (/proc mounted); prints
# "PREFIX_python=S PREFIX_gcc=S ..." and fails on the first command that fails.
run_cmds() {
	local root=$1 lg=$2 i s out=()
	mount -t proc proc "$root/proc" || return 1
	for i in "${!CMDS[@]}"; do
		s=$(now)
		if ! "${CLEAN_ENV[@]}" chroot "$root" /bin/sh -c "${CMDS[$i]}" >>"$lg" 2>&1; then
			echo "${CMDS[$i]} failed" >>"$lg"
			umount "$root/proc"
			return 1
		fi
		out+=("t_${CMD_KEYS[$i]}=$(since "$s")")
	done
	umount "$root/proc"
	echo "${out[*]}"
}

# ---- preparation (cached under $CACHE) ----
prepare_tools() {
	bash "$REPO/bench/mount-deps.sh"
	if [ "$BUILD" = 1 ]; then
		log "building zos from $REPO into $ZOS"
		mkdir -p "$(dirname "$ZOS")"
		(cd "$REPO" && go build -o "$ZOS" ./cmd/zos) || die "zos build failed"
	fi
	[ -x "$ZOS" ] || die "no zos at $ZOS"
}

# The 1 GiB file: distinct corpus files (by content), in path order, cut at 1 GiB.
prepare_bigfile() {
	BIGFILE=$CACHE/data/file.bin
	[ -f "$BIGFILE" ] && [ "$(stat -c %s "$BIGFILE")" = 1073741824 ] && return
	log "generating $BIGFILE (1 GiB of distinct corpus files)"
	mkdir -p "$CACHE/data"
	(cd "$CORPUS" && find big family versions -type f -size +16k -printf '%p\n' | sort |
		xargs -d '\n' sha256sum | sort -u -k1,1 | sort -k2 | cut -c67- |
		xargs -d '\n' cat) 2>/dev/null | head -c 1073741824 >"$BIGFILE.tmp" || true
	[ "$(stat -c %s "$BIGFILE.tmp")" = 1073741824 ] || die "corpus too small for a 1 GiB file"
	mv "$BIGFILE.tmp" "$BIGFILE"
}

# An ext4 image holding big and the 1 GiB file, attached with direct I/O so that a remount
# drops every cached page of it (the host's page cache does not keep the image's blocks).
prepare_ext4() {
	EXT4IMG=$CACHE/ext4.img
	local stamp=$CACHE/ext4.stamp want
	want="$(stat -c %Y "$CORPUS/big") $(stat -c %Y "$BIGFILE")"
	if [ ! -f "$EXT4IMG" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
		log "building $EXT4IMG (big + the 1 GiB file)"
		rm -f "$EXT4IMG"
		truncate -s 4G "$EXT4IMG"
		mkfs.ext4 -q -F "$EXT4IMG"
		local m=$OUT/ext4-build
		mkdir -p "$m"
		mount -o loop "$EXT4IMG" "$m"
		mkdir "$m/big" "$m/data"
		tar -C "$CORPUS/big" -cf - . | tar -C "$m/big" -xf -
		cp "$BIGFILE" "$m/data/file.bin"
		umount "$m"
		echo "$want" >"$stamp"
	fi
	LOOPDEV=$(losetup -f --show --direct-io=on "$EXT4IMG")
	EXT4MNT=$OUT/ext4
	mkdir -p "$EXT4MNT"
}
ext4_mount() { mount -o ro "$LOOPDEV" "$EXT4MNT"; }
ext4_umount() { umount "$EXT4MNT"; }

prepare_tarzst() {
	if [ ! -f "$CACHE/big.tar.zst" ] || [ "$CORPUS/big.tar" -nt "$CACHE/big.tar.zst" ]; then
		log "compressing big.tar into $CACHE/big.tar.zst (zstd -3)"
		zstd -3 -T2 -q -f "$CORPUS/big.tar" -o "$CACHE/big.tar.zst"
	fi
}

# The OCI image of big (one gzip layer, built with umoci), pushed once into a registry
# storage directory; the registry serves it on loopback during the run.
prepare_oci() {
	local layout=$CACHE/oci stamp=$CACHE/oci.stamp want
	want=$(stat -c %Y "$CORPUS/big")
	if [ ! -d "$layout" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
		log "building the OCI image of big with umoci (once)"
		rm -rf "$layout" "$CACHE/oci-bundle" "$CACHE/registry"
		umoci init --layout "$layout"
		umoci new --image "$layout:big"
		umoci unpack --image "$layout:big" "$CACHE/oci-bundle" >/dev/null
		tar -C "$CORPUS/big" -cf - . | tar -C "$CACHE/oci-bundle/rootfs" -xf -
		umoci repack --image "$layout:big" "$CACHE/oci-bundle"
		rm -rf "$CACHE/oci-bundle"
		echo "$want" >"$stamp"
	fi
	mkdir -p "$CACHE/registry"
	cat >"$OUT/registry.yml" <<-EOF
		version: 0.1
		log:
		  level: error
		  accesslog:
		    disabled: true
		storage:
		  filesystem:
		    rootdirectory: $CACHE/registry
		http:
		  addr: 127.0.0.1:$REG_PORT
	EOF
	docker-registry serve "$OUT/registry.yml" >"$OUT/registry.log" 2>&1 &
	PIDS+=($!)
	wait_port "$REG_PORT"
	if ! skopeo inspect --tls-verify=false "docker://127.0.0.1:$REG_PORT/big:latest" >/dev/null 2>&1; then
		log "pushing the OCI image of big into the local registry (once)"
		skopeo copy -q --dest-tls-verify=false "oci:$layout:big" "docker://127.0.0.1:$REG_PORT/big:latest"
	fi
	proxy_create registry "$REG_PROXY_PORT" "$REG_PORT"
}

# The served directory: the flists, their stores, the tarballs and the raw 1 GiB file.
prepare_srv() {
	SRV=$OUT/srv
	mkdir -p "$SRV/data"
	ln -sf "$CORPUS/big.tar" "$SRV/big.tar"
	[ -f "$CACHE/big.tar.zst" ] && ln -sf "$CACHE/big.tar.zst" "$SRV/big.tar.zst"
	"$MB" serve -root "$SRV" -listen "127.0.0.1:$HTTP_PORT" 2>"$OUT/serve.log" &
	PIDS+=($!)
	"$MB" proxy -api "127.0.0.1:$API_PORT" 2>"$OUT/proxy.log" &
	PIDS+=($!)
	wait_port "$HTTP_PORT"
	wait_port "$API_PORT"
	proxy_create store "$HTTP_PROXY_PORT" "$HTTP_PORT"
	case "$CHUNKS" in
	hub)
		# The hub's blob backend: a directory whose chunks/ is the bench's dir store.
		mkdir -p "$OUT/hub" "$SRV/store"
		ln -sfn "$SRV/store" "$OUT/hub/chunks"
		local rc=()
		if "$ZOS" hub serve --help 2>/dev/null | grep -q -- --recompress-level; then
			rc=(--recompress-level "$RECOMPRESS")
		else
			RECOMPRESS=0 # an older zos: its hub serves the blobs as packed
		fi
		"$ZOS" hub serve --data "$OUT/hub" --listen "127.0.0.1:$HUB_PORT" --no-rate-limits --log-level info "${rc[@]}" 2>"$OUT/hub.log" &
		PIDS+=($!)
		wait_port "$HUB_PORT"
		proxy_create hub "$HUB_PROXY_PORT" "$HUB_PORT"
		;;
	static) ;;
	*) die "CHUNKS=$CHUNKS: hub or static" ;;
	esac
}

pack_into_srv() { # SRCDIR NAME
	log "packing $1 into $SRV/$2.fl"
	"$ZOS" flist pack "$1" -o "$SRV/$2.fl" --store "dir://$SRV/store" >"$OUT/pack-$2.log" 2>&1 ||
		die "zos flist pack $1 failed: $(oneline "$OUT/pack-$2.log")"
	hub_recompress "$2"
}

# hub_push FL REF LOG: push FL (and the trace beside it, if any) to the bench's hub as REF,
# under the bench's key, registered on first use.
hub_push() {
	local hub=http://127.0.0.1:$HUB_PORT
	zos_has hub push || { echo "zos has no hub push" >"$3"; return 1; }
	[ -f "$OUT/bench.key" ] || "$ZOS" key gen "$OUT/bench.key" >/dev/null 2>&1 || return 1
	"$ZOS" hub register bench --hub "$hub" --key "$OUT/bench.key" >/dev/null 2>&1 # done already on a rerun
	"$ZOS" hub push "$1" "$2" --hub "$hub" --key "$OUT/bench.key" >"$3" 2>&1
}

# hub_metric NAME: the value of a metric of the bench's hub (0 if absent).
hub_metric() {
	curl -sf "http://127.0.0.1:$HUB_PORT/metrics" | awk -v m="$1" '$1 == m {v = $2} END {printf "%d\n", v}'
}

# hub_recompress NAME: push NAME.fl to the bench's hub, which re-seals its chunks at
# RECOMPRESS in the background, as it does for every push, and wait for it to finish, so
# that every row reads the store as a hub serves it once the image has settled.
hub_recompress() {
	local t0 saved
	[ "$CHUNKS" = hub ] && [ "$RECOMPRESS" != 0 ] || return 0
	t0=$(now)
	saved=$(hub_metric zos_hub_recompress_saved_bytes_total)
	hub_push "$SRV/$1.fl" "bench/$1:packed" "$OUT/push-$1.log" ||
		die "pushing $1.fl to the bench's hub failed: $(oneline "$OUT/push-$1.log")"
	log "the hub recompresses $1's chunks at level $RECOMPRESS"
	while [ "$(hub_metric zos_hub_recompress_pending_flists)" != 0 ]; do
		sleep 1
		[ "$(since "$t0" | cut -d. -f1)" -lt 3600 ] || die "the hub's recompression of $1 took over an hour"
	done
	saved=$(($(hub_metric zos_hub_recompress_saved_bytes_total) - saved))
	rec part=info row=recompress name="$1" level="$RECOMPRESS" took="$(since "$t0")" saved_bytes="$saved"
	log "recompressed $1 in $(since "$t0") s: $saved bytes saved"
}

# ---- part 1: cold start ----
# start_zos LINK MODE: MODE lazy, trace (the flist's trace is fetched too), tracewide (the
# same with --prefetch-fetchers $WIDE_PREFETCH) or warm (zos flist warm first).
start_zos() {
	local link=$1 mode=$2 row=zos w t0 st=ok msg="" times="" mt=0 bytes extra=""
	case "$mode" in trace) row=zostrace ;; warm) row=zoswarm ;; bundle)
		# The trace is fetched first (it is small), and the mount streams the bundle.
		row=zosbundle mode=trace extra="--bundle ${BUNDLE_URL:-$STORE_URL/big.fl.bundle}"
		if ! [ -s "$SRV/big.fl.bundle" ]; then
			rec part=start row=$row link="$link" status=missing msg="no start bundle recorded (zos flist trace writes one from version 2 on)"
			return
		fi
		;;
	tracewide)
		row=zostracewide mode=trace extra="--prefetch-fetchers $WIDE_PREFETCH"
		if ! "$ZOS" flist mount --help 2>/dev/null | grep -q -- '--prefetch-fetchers'; then
			rec part=start row=$row link="$link" status=missing msg="zos flist mount has no --prefetch-fetchers"
			return
		fi
		;;
	esac
	w=$OUT/run/start-$row-$link
	mkdir -p "$w"
	if [ "$mode" = trace ] && ! [ -s "$SRV/big.fl.trace" ]; then
		rec part=start row=$row link="$link" status=missing msg="${TRACE_MSG:-no trace recorded}"
		return
	fi
	set_link store "$link"
	t0=$(now)
	if ! curl -sf -o "$w/big.fl" "$STORE_URL/big.fl"; then
		st=FAIL msg="fetching the flist failed"
	elif [ "$mode" = trace ] && ! curl -sf -o "$w/big.fl.trace" "$STORE_URL/big.fl.trace"; then
		st=FAIL msg="fetching the trace failed"
	elif [ "$mode" = warm ] && ! "$ZOS" flist warm "$w/big.fl" --store "$CHUNK_URL" --cache "$w/cache" >"$w/warm.log" 2>&1; then
		st=FAIL msg="zos flist warm: $(oneline "$w/warm.log")"
	elif ! zmount "$w/big.fl" "$w/mnt" "$w/cache" "$w/mount.log" "$extra" 2>"$w/err"; then
		st=FAIL msg="mount: $(oneline "$w/err")"
	else
		mt=$(since "$t0")
		if ! times=$(run_cmds "$w/mnt" "$w/cmds.log"); then
			st=FAIL msg="$(oneline "$w/cmds.log")"
		fi
	fi
	local wall
	wall=$(since "$t0")
	bytes=$(proxy_bytes store)
	local reqs
	reqs=$(store_requests)
	mountpoint -q "$w/mnt" && zumount "$w/mnt"
	# shellcheck disable=SC2086
	rec part=start row=$row link="$link" wall="$wall" t_ready="$mt" bytes="$bytes" requests="$reqs" status=$st msg="$msg" $times
	log "start $row $link: $st ${wall}s, $bytes bytes $msg"
}

# start_tar LINK KIND: curl | [zstd -d |] tar -x, then the commands.
start_tar() {
	local link=$1 kind=$2 w t0 st=ok msg="" times="" wall bytes file=big.tar dec=cat
	[ "$kind" = tarzst ] && file=big.tar.zst dec="zstd -dc"
	w=$OUT/run/start-$kind-$link
	mkdir -p "$w/root"
	if [ ! -e "$SRV/$file" ]; then
		rec part=start row="$kind" link="$link" status=missing msg="no $file"
		return
	fi
	set_link store "$link"
	t0=$(now)
	if ! bash -o pipefail -c "curl -sf '$STORE_URL/$file' | $dec | tar -C '$w/root' -xf -" 2>"$w/err"; then
		st=FAIL msg="$(oneline "$w/err")"
	elif ! times=$(run_cmds "$w/root" "$w/cmds.log"); then
		st=FAIL msg="$(oneline "$w/cmds.log")"
	fi
	wall=$(since "$t0")
	bytes=$(proxy_bytes store)
	# shellcheck disable=SC2086
	rec part=start row="$kind" link="$link" wall="$wall" bytes="$bytes" status=$st msg="$msg" $times
	log "start $kind $link: $st ${wall}s, $bytes bytes $msg"
}

# start_oci LINK: skopeo copy from the registry (through the proxy) into an OCI layout,
# umoci unpack into a bundle, runc run the four commands.
start_oci() {
	local link=$1 w=$OUT/run/start-oci-$1 t0 st=ok msg="" wall bytes tp tu
	mkdir -p "$w"
	if [ -z "${OCI_OK:-}" ]; then
		rec part=start row=oci link="$link" status=missing msg="${OCI_MSG:-oci not prepared}"
		return
	fi
	set_link registry "$link"
	t0=$(now)
	local script
	script=$(printf '%s && ' "${CMDS[@]}")
	script=${script% && }
	if ! skopeo copy -q --src-tls-verify=false "docker://127.0.0.1:$REG_PROXY_PORT/big:latest" "oci:$w/oci:big" >"$w/err" 2>&1; then
		st=FAIL msg="skopeo: $(oneline "$w/err")"
	else
		tp=$(since "$t0")
		if ! umoci unpack --image "$w/oci:big" "$w/bundle" >"$w/err" 2>&1; then
			st=FAIL msg="umoci: $(oneline "$w/err")"
		else
			tu=$(since "$t0")
			jq --arg s "$script" '.process.args = ["/bin/sh", "-c", $s] | .process.terminal = false
				| .process.env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8"]' \
				"$w/bundle/config.json" >"$w/config.json" && mv "$w/config.json" "$w/bundle/config.json"
			if ! runc run --bundle "$w/bundle" "zosbench-$link-$$" </dev/null >"$w/cmds.log" 2>&1; then
				st=FAIL msg="runc: $(oneline "$w/cmds.log")"
			fi
		fi
	fi
	wall=$(since "$t0")
	bytes=$(proxy_bytes registry)
	rec part=start row=oci link="$link" wall="$wall" t_pull="${tp:-0}" t_unpack="${tu:-0}" bytes="$bytes" status=$st msg="$msg"
	log "start oci $link: $st ${wall}s, $bytes bytes $msg"
	runc delete -f "zosbench-$link-$$" >/dev/null 2>&1 || true
}

# Record the trace of the four commands (untimed, before the runs), when zos can.
record_trace() {
	TRACE_MSG="zos flist trace not available"
	zos_has flist trace || return 0
	local w=$OUT/run/trace-record script
	mkdir -p "$w"
	script=$(printf '%s && ' "${CMDS[@]}")
	# zos flist trace mounts /proc itself; mount it only if it did not.
	script="if [ -e /proc/self ]; then ${script% && }; else mount -t proc proc /proc && { ${script% && }; r=\$?; umount /proc; exit \$r; }; fi"
	log "recording a trace of the four commands"
	rm -f "$SRV/big.fl.bundle" # written again by a zos that builds start bundles
	if ! "${CLEAN_ENV[@]}" "$ZOS" flist trace "$SRV/big.fl" --store "dir://$SRV/store" -- /bin/sh -c "${TRACE_CMD:-$script}" >"$w/log" 2>&1; then
		TRACE_MSG="zos flist trace failed: $(oneline "$w/log")"
		rm -f "$SRV/big.fl.trace"
		return 0
	fi
	[ -s "$SRV/big.fl.trace" ] || TRACE_MSG="zos flist trace wrote no $SRV/big.fl.trace"
	cp "$w/log" "$OUT/trace.log"
	[ "$CHUNKS" = hub ] && [ -s "$SRV/big.fl.bundle" ] && hub_bundle
	return 0
}

# hub_bundle: push big.fl with its trace to the bench's hub, which builds the start bundle
# itself; when it is the one zos flist trace wrote, byte for byte, the zosbundle row streams
# it from the hub (GET /v1/bundles/D), over the link the chunks share, as a node would.
hub_bundle() {
	local w=$OUT/run/trace-record hub=http://127.0.0.1:$HUB_PORT d
	BUNDLE_URL=""
	if ! hub_push "$SRV/big.fl" bench/big:start "$w/push.log"; then
		log "hub push failed: $(oneline "$w/push.log"); the bundle row streams the file"
		return 0
	fi
	d=$(sed -n 's/^bench\/big:start@\([0-9a-f]*\)$/\1/p' "$w/push.log")
	if ! curl -sf -o "$w/hub.bundle" "$hub/v1/bundles/$d"; then
		log "the hub built no start bundle: $(oneline "$w/push.log"); the bundle row streams the file"
	elif ! cmp -s "$w/hub.bundle" "$SRV/big.fl.bundle"; then
		log "the hub's start bundle differs from zos flist trace's; the bundle row streams the file"
	else
		log "the hub built the same start bundle ($(stat -c %s "$w/hub.bundle") bytes); the bundle row streams it from the hub"
		BUNDLE_URL=http://127.0.0.1:$HUB_PROXY_PORT/v1/bundles/$d
	fi
}

part_start() {
	[[ " $START_TOOLS " == *" zostrace "* || " $START_TOOLS " == *" zosbundle "* ]] && record_trace
	local link tool
	for link in $LINKS; do
		for tool in $START_TOOLS; do
			case "$tool" in
			zos) start_zos "$link" lazy ;;
			zostrace) start_zos "$link" trace ;;
			zosbundle) start_zos "$link" bundle ;;
			zostracewide) start_zos "$link" tracewide ;;
			zoswarm)
				if zos_has flist warm; then start_zos "$link" warm; else
					rec part=start row=zoswarm link="$link" status=missing msg="zos flist warm not available"
				fi
				;;
			tar | tarzst) start_tar "$link" "$tool" ;;
			oci) start_oci "$link" ;;
			esac
		done
	done
}

# ---- part 2: read throughput ----
# fio_read NAME FILE MODE INVALIDATE: MODE seq (1 MiB), rand (4 KiB, time based) or
# coldrand (4 KiB, $COLD_RAND_IOS reads: most of them miss the cache);
# writes $OUT/fio/NAME.json and prints "bw=BYTES/S iops=N io=BYTES".
fio_read() {
	local name=$1 file=$2 mode=$3 inv=$4 j=$OUT/fio/$1.json
	local -a a=(--name="$name" --filename="$file" --ioengine=psync --direct=0 --invalidate="$inv"
		--numjobs=1 --thread --output-format=json --output="$j")
	case "$mode" in
	seq) a+=(--rw=read --bs=1M --runtime="$SEQ_RUNTIME") ;;
	rand) a+=(--rw=randread --bs=4k --runtime="$RAND_RUNTIME" --time_based --norandommap --randrepeat=1) ;;
	# diskrand: a fixed count of reads (a time-based run would end up reading the page cache
	# once the file is in it), without POSIX_FADV_RANDOM: the hint would reach ext4's file but
	# not a FUSE passthrough backing file, which would compare different read-ahead policies.
	diskrand) a+=(--rw=randread --bs=4k --number_ios="$DISK_RAND_IOS" --runtime=300 --norandommap --randrepeat=1 --fadvise_hint=0) ;;
	coldrand) a+=(--rw=randread --bs=4k --number_ios="$COLD_RAND_IOS" --runtime=120 --norandommap --randrepeat=1) ;;
	esac
	mkdir -p "$OUT/fio"
	fio "${a[@]}" >/dev/null 2>"$OUT/fio/$name.err" || { oneline "$OUT/fio/$name.err" >&2; return 1; }
	jq -r '.jobs[0].read | "bw=\(.bw_bytes) iops=\(.iops) io=\(.io_bytes) lat_us=\(.clat_ns.mean / 1000)"' "$j"
}

# warm_server PATH: read what the store server will send (a file or a directory under $SRV)
# into the page cache, so that a GET of it or a cold mount over it measures the link and the
# client, not the server's disk. This VM drops idle page cache within a minute, and its disk
# reads a file at 400-600 MB/s, about what the unthrottled proxy moves.
warm_server() { find -L "$SRV/$1" -type f -print0 | xargs -0 cat >/dev/null; }

# read_rec ROW LINK MODE fio-args...: one fio measurement recorded.
read_rec() {
	local row=$1 link=$2 mode=$3 r bytes=""
	shift 3
	if r=$(fio_read "$row-$link-$mode" "$@" 2>"$OUT/fio/last.err"); then
		[ "$row" = zoscold ] && bytes=$(proxy_bytes store)
		local reqs=""
		[ "$row" = zoscold ] && reqs=$(store_requests)
		# shellcheck disable=SC2086
		rec part=read row="$row" link="$link" mode="$mode" $r ${bytes:+wire=$bytes} ${reqs:+requests=$reqs} status=ok
		log "read $row $link $mode: $r ${bytes:+wire=$bytes}"
	else
		rec part=read row="$row" link="$link" mode="$mode" status=FAIL msg="fio: $(oneline "$OUT/fio/last.err")"
		log "read $row $link $mode: FAIL"
	fi
}

# drop_pages: write back and drop every clean page of the machine; logs the page cache before
# and after.
drop_pages() {
	local before
	before=$(awk '/^Cached:/ {print $2}' /proc/meminfo)
	sync
	echo 3 >/proc/sys/vm/drop_caches
	log "dropped clean pages: page cache $((before / 1024)) MiB -> $(($(awk '/^Cached:/ {print $2}' /proc/meminfo) / 1024)) MiB"
}

# wait_whole CACHEDIR: wait until the cache holds a whole file (zos cache stats --json
# whole_files), at most 2 minutes; records the wait. Nothing to wait for with a zos that
# does not keep whole files.
wait_whole() {
	local t0 n=0
	"$ZOS" cache stats --json --cache "$1" 2>/dev/null | grep -q whole_files || return 0
	t0=$(now)
	while [ "$(since "$t0" | cut -d. -f1)" -lt 120 ]; do
		n=$("$ZOS" cache stats --json --cache "$1" | jq -r '.whole_files // 0')
		[ "$n" -gt 0 ] && break
		sleep 0.2
	done
	rec part=read row=whole link=fast wait="$(since "$t0")" files="$n" status=ok
	log "whole file kept after ${n:+$(since "$t0")}s ($n files)"
}

part_read() {
	local d=$OUT/run/read-src link w
	mkdir -p "$d" "$OUT/fio"
	ln -f "$BIGFILE" "$d/file.bin" 2>/dev/null || cp "$BIGFILE" "$d/file.bin"
	ln -sf "$BIGFILE" "$SRV/data/file.bin"
	pack_into_srv "$d" file
	rec part=read row=pack msg="$(grep -E 'chunks|written' "$OUT/pack-file.log" | tr -s ' \n' ' ')"

	# ext4: on disk (page cache dropped by fio's invalidate and by the remount), then cached.
	ext4_mount
	read_rec ext4disk - seq "$EXT4MNT/data/file.bin" seq 1
	read_rec ext4disk - rand "$EXT4MNT/data/file.bin" rand 1
	cat "$EXT4MNT/data/file.bin" >/dev/null
	read_rec ext4cache - seq "$EXT4MNT/data/file.bin" seq 0
	read_rec ext4cache - rand "$EXT4MNT/data/file.bin" rand 0
	ext4_umount

	for link in $LINKS; do
		set_link store "$link"
		# The link itself: one HTTP GET of the raw file (the first 256 MB on the slow link).
		local range="" lb t0 s
		[ "$link" = 100M ] && range="-r 0-255999999"
		warm_server data/file.bin
		t0=$(now)
		s=$(curl -sf $range -o /dev/null -w '%{size_download}' "$STORE_URL/data/file.bin")
		lb=$(awk -v s="$s" -v t="$(since "$t0")" 'BEGIN {printf "%.0f", s / t}')
		rec part=read row=link link="$link" bw="$lb" status=ok
		log "link $link: $lb B/s"

		# Cold: a fresh mount and an empty cache for each pattern.
		for mode in seq rand; do
			w=$OUT/run/read-cold-$link-$mode
			mkdir -p "$w"
			set_link store "$link"
			warm_server store
			if zmount "$SRV/file.fl" "$w/mnt" "$w/cache" "$w/mount.log" 2>"$w/err"; then
				local fm=$mode
				[ "$mode" = rand ] && fm=coldrand
				read_rec zoscold "$link" "$mode" "$w/mnt/file.bin" "$fm" 1
				if [ "$link" = fast ] && [ "$mode" = seq ]; then
					# Warm: this mount's cache now holds every chunk. Same mount (kernel
					# page cache, if zos keeps it), then a fresh mount over the full cache.
					cat "$w/mnt/file.bin" >/dev/null
					read_rec zoscache "$link" seq "$w/mnt/file.bin" seq 0
					read_rec zoscache "$link" rand "$w/mnt/file.bin" rand 0
					# A zos that keeps read files whole in its cache (FUSE passthrough) does
					# so in the background once the file is closed: wait for it (at most 2
					# minutes) and record how long that took after the last read.
					wait_whole "$w/cache"
					zumount "$w/mnt"
					set_link store "$link"
					zmount "$SRV/file.fl" "$w/mnt" "$w/cache" "$w/mount2.log"
					# The reference: the same bytes on the same ext4, read directly. With whole
					# files that is the cache's copy (the very file passthrough reads); else
					# the source file. Read once first, untimed: this VM's disk serves recently
					# read or written data from the host's memory, so both start alike.
					# fio's invalidate drops the FUSE file's pages, not those of a passthrough
					# backing file: every clean page is dropped before each measurement.
					local ref
					ref=$(ls "$w"/cache/*/*.file 2>/dev/null | head -1)
					[ -n "$ref" ] || ref=$BIGFILE
					cat "$ref" >/dev/null
					local rep
					local rep pair
					for rep in $(seq "$DISK_REPS"); do
						pair=("ext4same - $ref" "zosdisk $link $w/mnt/file.bin")
						[ $((rep % 2)) = 0 ] && pair=("${pair[1]}" "${pair[0]}")
						for dm in seq diskrand; do
							for p in "${pair[@]}"; do
								read -r -a p <<<"$p"
								drop_pages
								read_rec "${p[0]}" "${p[1]}" "${dm/diskrand/rand}" "${p[2]}" "$dm" 1
							done
						done
					done
				fi
				zumount "$w/mnt"
			else
				rec part=read row=zoscold link="$link" mode="$mode" status=FAIL msg="mount: $(oneline "$w/err")"
			fi
		done
	done
}

# ---- part 3: metadata ----
# timed CMD...: run, print seconds.
timed() {
	local t0
	t0=$(now)
	"$@" || return 1
	since "$t0"
}
part_meta() {
	local rep w n t_mount t_cold t_warm
	for rep in $(seq 1 "$META_REPS"); do
		w=$OUT/run/meta-zos-$rep
		set_link store fast
		mkdir -p "$w/mnt"
		if ! t_mount=$(timed zmount "$SRV/big.fl" "$w/mnt" "$w/cache" "$w/mount.log" notrace 2>"$w/err"); then
			rec part=meta row=zos rep="$rep" status=FAIL msg="mount: $(oneline "$w/err")"
			continue
		fi
		t_cold=$(timed sh -c "find '$w/mnt' -ls >'$w/find1'")
		t_warm=$(timed sh -c "find '$w/mnt' -ls >'$w/find2'")
		n=$(wc -l <"$w/find1")
		zumount "$w/mnt"
		rec part=meta row=zos rep="$rep" t_mount="$t_mount" t_cold="$t_cold" t_warm="$t_warm" entries="$n" status=ok
		log "meta zos: mount ${t_mount}s find cold ${t_cold}s warm ${t_warm}s, $n entries"

		t_mount=$(timed ext4_mount)
		t_cold=$(timed sh -c "find '$EXT4MNT/big' -ls >'$w/efind1'")
		t_warm=$(timed sh -c "find '$EXT4MNT/big' -ls >'$w/efind2'")
		n=$(wc -l <"$w/efind1")
		ext4_umount
		rec part=meta row=ext4 rep="$rep" t_mount="$t_mount" t_cold="$t_cold" t_warm="$t_warm" entries="$n" status=ok
		log "meta ext4: mount ${t_mount}s find cold ${t_cold}s warm ${t_warm}s, $n entries"
	done
}

# ---- main ----
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
prepare_tools
for d in "$CORPUS/big" "$CORPUS/big.tar"; do [ -e "$d" ] || die "missing $d (run corpus/build-corpus.sh big)"; done
if [ -d "$OUT/run" ]; then
	cleanup
	log "removing the previous run's outputs, then waiting 65s (ext4 slows file creation right after a mass delete)"
	rm -rf "${OUT:?}/run" "$OUT/srv" "$OUT/fio" "$OUT/ext4-build"
	sync
	sleep 65
fi
rm -rf "$OUT/srv" "$OUT/fio"
mkdir -p "$OUT/run"
: >"$RESULTS"
ZOS_REV=$(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null)$(cd "$REPO" && git diff --quiet HEAD -- cmd internal 2>/dev/null || echo "+dirty")
TREE_BYTES=$(find "$CORPUS/big" -type f -printf '%i %s\n' | sort -u | awk '{s += $2} END {printf "%d", s}')
prepare_srv
if [[ " $PARTS " == *" start "* ]]; then
	[[ " $START_TOOLS " == *" tarzst "* ]] && prepare_tarzst
	if [[ " $START_TOOLS " == *" oci "* ]]; then
		if prepare_oci >"$OUT/oci-prepare.log" 2>&1; then OCI_OK=1; else OCI_MSG="preparing the OCI image failed: $(oneline "$OUT/oci-prepare.log")"; fi
	fi
	ln -sf "$CACHE/big.tar.zst" "$SRV/big.tar.zst" 2>/dev/null || true
fi
if [[ " $PARTS " == *" read "* ]] || [[ " $PARTS " == *" meta "* ]]; then
	prepare_bigfile
	prepare_ext4
fi
[ -f "$SRV/big.fl" ] || pack_into_srv "$CORPUS/big" big
rec part=info chunks="$CHUNKS" tree_bytes="$TREE_BYTES" store_bytes="$(du -sb "$SRV/store" | cut -f1)" \
	tar_bytes="$(stat -c %s "$CORPUS/big.tar")" tarzst_bytes="$(stat -Lc %s "$SRV/big.tar.zst" 2>/dev/null || echo 0)" \
	fl_bytes="$(stat -c %s "$SRV/big.fl")"

# The machine is shared: sample the 1-minute load average every 10 s during the run.
(while sleep 10; do cut -d' ' -f1 /proc/loadavg; done) >"$OUT/load.txt" &
PIDS+=($!)
start=$(date +%s)
for part in $PARTS; do
	log "part $part"
	"part_$part"
done
elapsed=$(($(date +%s) - start))

# Unmount, then drop the bulky outputs (extracted trees, OCI layouts, caches); logs stay.
cleanup
find "$OUT/run" -mindepth 2 -maxdepth 2 -type d \( -name root -o -name oci -o -name bundle -o -name cache \) -exec rm -rf {} +
rm -rf "$OUT/run/read-src"

python3 "$REPO/bench/mountreport.py" "$RESULTS" \
	--date "$(date -u +%Y-%m-%dT%H:%MZ)" --cores "$(nproc)" --zos-rev "$ZOS_REV" --elapsed "$elapsed" \
	--rate-kbps "$RATE_KBPS" --latency-ms "$LATENCY_MS" --cold-rand-ios "$COLD_RAND_IOS" --disk-rand-ios "$DISK_RAND_IOS" --wide-prefetch "$WIDE_PREFETCH" \
	--load "start $LOAD0, end $(cut -d' ' -f1-3 /proc/loadavg); 1-minute load sampled every 10 s: $(sort -n "$OUT/load.txt" | awk '{s += $1; n++; m = $1} END {if (n) printf "mean %.2f, max %.2f", s / n, m}')"
