#!/usr/bin/env bash
# bench/node.sh: the node benchmark of issue 6, in one run.
#
# Part "deploy": deploy-to-running time of a container of the corpus image `big` (a Debian root
# fs with python3, gcc, node, java) from a cold node, the image on a hub reached over a
# 100 Mbit/s link with 20 ms latency, against the conventional path of the same image.
#
#   The image: big as an OCI image (one gzip layer built with umoci) in a docker-registry on
#   loopback. The hub (`zos hub serve`) converts it from that registry (`zos hub convert
#   docker://...`, untimed, cached), so both paths start from the same image.
#   The link: toxiproxy (bench/mountbench proxy) in front of the hub and in front of the
#   registry: latency 20 ms added to every response piece, then 12500 KB/s shared by all
#   connections; a count toxic gives the bytes that crossed it.
#   Rows (alternated, REPS times each, each rep starting with the next row; medians reported):
#     zos       a fresh `zos node run` (new --data dir, so an empty image dir and chunk cache;
#               started and given the twin before the clock starts) whose spec names the hub by
#               its proxy URL: the flist and every chunk cross the link. The clock starts when
#               `zos deploy SPEC --wait 10m` starts; "ready" is when the container's log file
#               (DATA/deployments/ID/NAME/log, written by the container itself) holds the
#               marker, polled every POLL s; "deploy --wait" is when that command returned.
#               From the node's history: when the flist was fetched, the image mounted and the
#               container started, relative to the same clock.
#     zostrace  the same with a trace of the ready command (`zos flist trace`, recorded before
#               the runs) stored on the hub beside the flist (`zos hub trace`) before deploying:
#               the node fetches it with the flist, over the link, and the image's mount
#               prefetches by it. The zos row removes it from the hub first (`--rm`).
#     oci       from nothing to the same marker: `skopeo copy` from the registry through the
#               proxy into an OCI layout, `umoci unpack` into a bundle, `runc run -d` of the
#               same command with its output in a file, polled the same way.
#   The container's command: /bin/sh -c '{ READY_CMD; } && echo zosbench-ready && trap "exit 0"
#   TERM; sleep infinity & wait' (the shell stays init and ends on SIGTERM), env PATH, HOME,
#   LANG, as root. Default READY_CMD for big: python3 -c 'import json'. Every measurement
#   starts after a `sync`; the OCI layouts and bundles are removed only at the end.
#
# Part "density": one fresh node, deployments of one small container each (DENSITY_IMAGE, by
# default the corpus `min`, converted by the hub like big, running `sleep infinity` under the
# shell above, memory 16 MiB, cpu 50, pids 8, reached without the slow link) deployed one after
# the other with `zos deploy --wait`, until DENSITY_MAX containers or until MemAvailable falls
# below DENSITY_MIN_AVAIL_MB. Recorded at checkpoints: time per deploy; the agent's VmRSS and
# PSS; the image mount servers' (`zos flist mount`, one process per image) total VmRSS, PSS
# and RssAnon; the containers' cgroup memory; MemAvailable. Then the agent's CPU time while idle
# with N containers (its reconcile passes), and the time to delete them all.
#
# The machine may be shared: before each measurement the script waits (at most 10 minutes)
# while the load is above MAX_LOAD or another zos node agent runs (agents on one machine take
# each other's network sandboxes in /run/zos/netns for orphans and remove them); it samples both
# every 10 s and prints them with the results.
#
# Prints markdown tables and GOAL PASS/FAIL (deploy: zos at least 10x faster than oci) with
# bench/nodereport.py.
#
# Usage: bash bench/node.sh     (as root: FUSE, namespaces, cgroups, runc)
# Environment (all optional):
#   CORPUS=/var/cache/zos-corpus      the image trees (corpus/build-corpus.sh big min)
#   CACHE=/var/cache/zos-bench        kept across runs: OCI layouts (node-oci), registry storage
#                                     (node-registry), hub data (node-hub), key, tools in bin/
#   OUT=/var/tmp/zos-bench-node       scratch; its run/ is wiped at the start (never in the repository)
#   ZOS=$OUT/zos  BUILD=1             build zos (-tags seccomp) from this checkout first
#   ZOS_REV                           what to call the zos under test (default: this checkout's commit)
#   PARTS="deploy density"
#   IMAGE=big  READY_CMD=...          the deploy part's image and command
#   ROWS="zos zostrace oci"  REPS=3  POLL=0.02
#   DEPLOY_MEMORY=2GiB                the deploy container's memory limit
#   RATE_KBPS=12500 LATENCY_MS=20     the link (1 KB = 1000 bytes: 12500 KB/s = 100 Mbit/s)
#   DENSITY_IMAGE=min  DENSITY_MAX=200  DENSITY_MIN_AVAIL_MB=2048  DENSITY_IDLE_S=20
#   MAX_LOAD=2.5                      wait (up to 10 min) while the 1-minute load is above this
#   RESULTS=$OUT/results.jsonl        raw measurements
set -euo pipefail
exec </dev/null

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CORPUS=${CORPUS:-/var/cache/zos-corpus}
CACHE=${CACHE:-/var/cache/zos-bench}
OUT=${OUT:-/var/tmp/zos-bench-node}
ZOS=${ZOS:-$OUT/zos}
BUILD=${BUILD:-1}
PARTS=${PARTS:-"deploy density"}
IMAGE=${IMAGE:-big}
if [ "$IMAGE" = big ]; then READY_CMD=${READY_CMD:-"python3 -c 'import json'"}; else READY_CMD=${READY_CMD:-"ls / >/dev/null"}; fi
ROWS=${ROWS:-"zos zostrace oci"}
REPS=${REPS:-3}
POLL=${POLL:-0.02}
DEPLOY_MEMORY=${DEPLOY_MEMORY:-2GiB}
RATE_KBPS=${RATE_KBPS:-12500}
LATENCY_MS=${LATENCY_MS:-20}
DENSITY_IMAGE=${DENSITY_IMAGE:-min}
DENSITY_MAX=${DENSITY_MAX:-200}
DENSITY_MIN_AVAIL_MB=${DENSITY_MIN_AVAIL_MB:-2048}
DENSITY_IDLE_S=${DENSITY_IDLE_S:-20}
MAX_LOAD=${MAX_LOAD:-2.5}
RESULTS=${RESULTS:-$OUT/results.jsonl}
BIN=$CACHE/bin
MB=$BIN/mountbench
KEY=$CACHE/node-bench.key
NS=bench

# Loopback ports (apart from bench/mount.sh's and demo/run.sh's, which may run at the same time).
API_PORT=${API_PORT:-18674}
HUB_PORT=${HUB_PORT:-18680}
HUB_PROXY_PORT=${HUB_PROXY_PORT:-18681}
REG_PORT=${REG_PORT:-18690}
REG_PROXY_PORT=${REG_PROXY_PORT:-18691}
NODE_PORT=${NODE_PORT:-18670}
API=http://127.0.0.1:$API_PORT
HUB=http://127.0.0.1:$HUB_PORT
HUB_PROXY=http://127.0.0.1:$HUB_PROXY_PORT
NODE_URL=http://127.0.0.1:$NODE_PORT

MARKER=zosbench-ready
PATH_ENV=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }
die() { printf 'node.sh: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.3f", b - a}'; }
minus() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a - b}'; }

case "$OUT" in "$REPO" | "$REPO"/*) die "OUT=$OUT is inside the repository; use a scratch directory" ;; esac
case "$CACHE" in "$REPO" | "$REPO"/*) die "CACHE=$CACHE is inside the repository" ;; esac
[ "$(id -u)" = 0 ] || die "run as root (FUSE mounts, namespaces, cgroups, runc)"

# rec key=value...: one measurement as a JSON line in $RESULTS (numbers stay numbers).
rec() {
	printf '%s\n' "$@" | tr -d '\r' | jq -cRn '[inputs | capture("^(?<k>[^=]+)=(?<v>.*)$")
		| {key: .k, value: (.v | tonumber? // .)}] | from_entries' >>"$RESULTS"
}
# oneline FILE: the last lines of a log, on one line, for a table cell.
oneline() { grep -v '^[[:space:]]*$' "$1" 2>/dev/null | tail -n 3 | tr '\n\t|' '   ' | cut -c1-240; }

# ---- processes, nodes and mounts this script owns; all undone on exit ----
PIDS=()      # hub, proxy, registry, load sampler
NODE_PID=""  # the node running now
NODE_DATA="" # its data directory
stop_node() {
	[ -n "$NODE_DATA" ] || return 0
	local ids id
	if [ -n "$NODE_PID" ] && kill -0 "$NODE_PID" 2>/dev/null; then
		ids=$("$ZOS" status --json --key "$KEY" --node "$NODE_URL" 2>/dev/null | jq -r '.deployments[]?.id' 2>/dev/null || true)
		for id in $ids; do "$ZOS" delete "$id" --key "$KEY" --node "$NODE_URL" >/dev/null 2>&1 || true; done
		for id in $ids; do "$ZOS" delete "$id" --key "$KEY" --node "$NODE_URL" --wait 120s >/dev/null 2>&1 || log "deployment $id not deleted"; done
		kill "$NODE_PID" 2>/dev/null || true
		wait "$NODE_PID" 2>/dev/null || true
	fi
	# What an agent killed half-way may have left: its containers, then its mounts.
	if [ -d "$NODE_DATA/runtime" ]; then
		for id in $(runc --root "$NODE_DATA/runtime" list -q 2>/dev/null); do
			log "leftover container $id"
			runc --root "$NODE_DATA/runtime" delete -f "$id" >/dev/null 2>&1 || true
		done
	fi
	umount_under "$NODE_DATA"
	NODE_PID="" NODE_DATA=""
}
# umount_under DIR: every mount below DIR, innermost first.
umount_under() {
	{ grep -F " $1/" /proc/self/mounts || true; } | awk '{print $2}' | sort -r | while read -r m; do
		m=$(printf '%b' "$m")
		log "leftover mount $m"
		umount "$m" 2>/dev/null || umount -l "$m" || true
	done
}
cleanup() {
	set +e
	stop_node
	for id in $(runc list -q 2>/dev/null | grep '^zosbench-node-'); do runc delete -f "$id" >/dev/null 2>&1; done
	[ -d "$OUT/run" ] && umount_under "$OUT/run"
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
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---- toxiproxy ----
toxi() { curl -sf -X "$1" "$API$2" ${3:+-d "$3"} >/dev/null; }
proxy_create() { toxi POST /proxies "{\"name\":\"$1\",\"listen\":\"127.0.0.1:$2\",\"upstream\":\"127.0.0.1:$3\"}"; }
# set_link PROXY LINK: toxics for that link (100M or fast), and a fresh byte counter.
set_link() {
	local p=$1 t
	for t in count latency bw; do curl -sf -X DELETE "$API/proxies/$p/toxics/$t" >/dev/null || true; done
	toxi POST "/proxies/$p/toxics" '{"name":"count","type":"count","stream":"downstream","attributes":{"bytes":0}}'
	case "$2" in
	100M)
		toxi POST "/proxies/$p/toxics" "{\"name\":\"latency\",\"type\":\"latency\",\"stream\":\"downstream\",\"attributes\":{\"latency\":$LATENCY_MS}}"
		toxi POST "/proxies/$p/toxics" "{\"name\":\"bw\",\"type\":\"shared_bandwidth\",\"stream\":\"downstream\",\"attributes\":{\"rate\":$RATE_KBPS}}"
		;;
	fast) ;;
	*) die "unknown link $2" ;;
	esac
}
proxy_bytes() { curl -sf "$API/proxies/$1/toxics/count" | jq .attributes.bytes; }

# ---- preparation (cached under $CACHE) ----
prepare_tools() {
	bash "$REPO/bench/mount-deps.sh"
	local missing=() p
	for p in nftables iproute2 libseccomp-dev; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	if [ ${#missing[@]} -gt 0 ]; then
		log "installing ${missing[*]}"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	fi
	if [ "$BUILD" = 1 ]; then
		log "building zos from $REPO into $ZOS"
		mkdir -p "$(dirname "$ZOS")"
		(cd "$REPO" && go build -tags seccomp -o "$ZOS" ./cmd/zos) || die "zos build failed"
	fi
	[ -x "$ZOS" ] || die "no zos at $ZOS"
}

# oci_layout IMG: the OCI image of $CORPUS/IMG (one gzip layer, built with umoci once) in the
# layout $CACHE/node-oci, tag IMG; rebuilt when the corpus tree changed.
oci_layout() {
	local img=$1 layout=$CACHE/node-oci stamp=$CACHE/node-oci.$1.stamp want b=$OUT/oci-build
	want=$(stat -c %Y "$CORPUS/$img")
	[ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && return 0
	log "building the OCI image of $img with umoci (once)"
	rm -f "$stamp" "$CACHE/node-registry.$img.stamp" "$CACHE/node-hub.$img.stamp"
	[ -d "$layout" ] || umoci init --layout "$layout"
	umoci rm --image "$layout:$img" 2>/dev/null || true
	umoci new --image "$layout:$img"
	rm -rf "$b"
	umoci unpack --image "$layout:$img" "$b" >/dev/null
	tar -C "$CORPUS/$img" -cf - . | tar -C "$b/rootfs" -xf -
	umoci repack --image "$layout:$img" "$b"
	rm -rf "$b"
	umoci gc --layout "$layout"
	echo "$want" >"$stamp"
}

start_registry() {
	mkdir -p "$CACHE/node-registry"
	cat >"$OUT/registry.yml" <<-EOF
		version: 0.1
		log:
		  level: error
		  accesslog:
		    disabled: true
		storage:
		  filesystem:
		    rootdirectory: $CACHE/node-registry
		http:
		  addr: 127.0.0.1:$REG_PORT
	EOF
	docker-registry serve "$OUT/registry.yml" >"$OUT/registry.log" 2>&1 &
	PIDS+=($!)
	wait_port "$REG_PORT"
	proxy_create registry "$REG_PROXY_PORT" "$REG_PORT"
}

# push_image IMG: the image into the registry as IMG:latest (once per layout build).
push_image() {
	local img=$1 stamp=$CACHE/node-registry.$1.stamp want
	want=$(cat "$CACHE/node-oci.$img.stamp")
	if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] &&
		skopeo inspect --tls-verify=false "docker://127.0.0.1:$REG_PORT/$img:latest" >/dev/null 2>&1; then
		return 0
	fi
	log "pushing the OCI image of $img into the registry (once)"
	skopeo copy -q --dest-tls-verify=false "oci:$CACHE/node-oci:$img" "docker://127.0.0.1:$REG_PORT/$img:latest"
	echo "$want" >"$stamp"
}

# The hub, its data kept in $CACHE/node-hub; the flists it converts record the proxy's URL as
# their chunk store (the node is told the same by the spec).
start_hub() {
	if [ ! -f "$KEY" ]; then
		rm -rf "$CACHE/node-hub" "$CACHE"/node-hub.*.stamp
		"$ZOS" key gen "$KEY" >/dev/null
	fi
	mkdir -p "$CACHE/node-hub"
	"$ZOS" hub serve --data "$CACHE/node-hub" --listen "127.0.0.1:$HUB_PORT" --url "$HUB_PROXY" \
		--host "127.0.0.1:$HUB_PORT" --host "127.0.0.1:$HUB_PROXY_PORT" --convert-allow-private --no-rate-limits --log-level warn 2>"$OUT/hub.log" &
	PIDS+=($!)
	wait_port "$HUB_PORT"
	proxy_create hub "$HUB_PROXY_PORT" "$HUB_PORT"
	"$ZOS" hub register "$NS" --hub "$HUB" --key "$KEY" >/dev/null 2>&1 || true
}

# convert_image IMG: sets DIGEST to the digest of $NS/IMG on the hub, converted by the hub from
# the registry (once per image build).
convert_image() {
	local img=$1 stamp=$CACHE/node-hub.$1.stamp want
	want="$(cat "$CACHE/node-oci.$img.stamp") $HUB_PROXY"
	if [ "$(head -1 "$stamp" 2>/dev/null)" != "$want" ] ||
		! "$ZOS" hub pull "$NS/$img@$(sed -n 2p "$stamp")" --hub "$HUB" -o "$OUT/$img.fl" >/dev/null 2>&1; then
		log "converting $img on the hub (once): zos hub convert docker://127.0.0.1:$REG_PORT/$img:latest $NS/$img"
		"$ZOS" hub convert "docker://127.0.0.1:$REG_PORT/$img:latest" "$NS/$img:latest" --hub "$HUB" --key "$KEY" \
			--wait --poll 200ms >"$OUT/convert-$img.log" 2>&1 || die "zos hub convert failed: $(oneline "$OUT/convert-$img.log")"
		"$ZOS" hub pull "$NS/$img:latest" --hub "$HUB" -o "$OUT/$img.fl" >/dev/null
		printf '%s\n%s\n' "$want" "$("$ZOS" flist inspect "$OUT/$img.fl" --json | jq -r .digest)" >"$stamp"
	fi
	DIGEST=$(sed -n 2p "$stamp")
}

# ---- nodes ----
# start_node DIR: a fresh node with data (and chunk cache) in DIR, the bench's key as twin 1;
# returns once it answers.
start_node() {
	local d=$1 i
	rm -rf "$d"
	mkdir -p "$d"
	port_free "$NODE_PORT" || die "127.0.0.1:$NODE_PORT is taken"
	"$ZOS" node run --data "$d" --listen "127.0.0.1:$NODE_PORT" --gateway "" --cache "$d/cache" --prefix znb --chain none 2>"$d.log" &
	NODE_PID=$! NODE_DATA=$d
	for i in $(seq 1 100); do
		[ -f "$d/node.key" ] && break
		sleep 0.05
	done
	"$ZOS" node twin add 1 "$KEY" --data "$d" >/dev/null
	for i in $(seq 1 100); do
		kill -0 "$NODE_PID" 2>/dev/null || die "the node did not start: $(oneline "$d.log")"
		"$ZOS" status --key "$KEY" --node "$NODE_URL" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	die "the node did not answer in 10 s: $(oneline "$d.log")"
}

# write_spec FILE NAME IMG DIGEST HUBURL MEMORY CPU PIDS DESC CMD: a signed one-container spec.
write_spec() {
	local f=$1
	jq -n --arg name "$2" --arg ref "$NS/$3:latest" --arg digest "$4" --arg hub "$5" --arg mem "$6" \
		--argjson cpu "$7" --argjson pids "$8" --arg desc "$9" --arg cmd "${10}" --arg path "$PATH_ENV" '{
		version: 1, owner: 1, description: $desc,
		workloads: [{name: $name, kind: "container", container: {
			image: {digest: $digest, hub: $hub, ref: $ref},
			entrypoint: ["/bin/sh", "-c", $cmd],
			env: {PATH: $path, HOME: "/root", LANG: "C.UTF-8"},
			cpu: $cpu, memory: $mem, pids: $pids}}]}' >"$f"
	"$ZOS" sign "$f" --key "$KEY" --twin 1 >/dev/null 2>&1 || die "zos sign $f failed"
}

# wait_marker FILE TIMEOUT: poll FILE every $POLL s until it holds the marker.
wait_marker() {
	local f=$1 end
	end=$(awk -v t="$2" -v n="$(now)" 'BEGIN {printf "%d", n + t}')
	while [ "$(date +%s)" -lt "$end" ]; do
		grep -qs "^$MARKER" "$f" && return 0
		sleep "$POLL"
	done
	return 1
}

# event_time EVENTS KIND T0: seconds from T0 to the first event KIND in the JSON list EVENTS.
event_time() {
	local t
	t=$(jq -r --arg k "$2" '[.[] | select(.event == $k)][0].time // empty' "$1" 2>/dev/null)
	[ -n "$t" ] || return 0
	minus "$(date -d "$t" +%s.%N)" "$3"
}

# ---- part 1: deploy to running ----
CTR=nb-$IMAGE
# The shell stays the container's init and exits on SIGTERM (a bare `sleep` as init ignores it and
# is killed only after the node's stop grace of 5 s, which would make deletes slow).
SLEEP_CMD='trap "exit 0" TERM; sleep infinity & wait'
container_cmd() { printf '{ %s; } && echo %s && %s' "$READY_CMD" "$MARKER" "$SLEEP_CMD"; }

# deploy_zos REP MODE: MODE lazy or trace.
deploy_zos() {
	local rep=$1 mode=$2 row=zos w st=ok msg="" t0 t_ready="" t_wait="" rc bytes
	[ "$mode" = trace ] && row=zostrace
	w=$OUT/run/$row-$rep
	mkdir -p "$w"
	if [ "$mode" = trace ] && [ ! -s "$OUT/trace/$DIGEST.fl.trace" ]; then
		rec part=deploy row=$row rep="$rep" status=missing msg="${TRACE_MSG:-no trace}"
		return
	fi
	write_spec "$w/spec.json" "$CTR" "$IMAGE" "$DIGEST" "$HUB_PROXY" "$DEPLOY_MEMORY" 2000 1024 "node.sh $row $rep" "$(container_cmd)"
	if [ "$mode" = trace ]; then
		"$ZOS" hub trace "$OUT/$IMAGE.fl" --trace "$OUT/trace/$DIGEST.fl.trace" --hub "$HUB" --key "$KEY" >"$w/trace.out" 2>&1 ||
			{ rec part=deploy row=$row rep="$rep" status=FAIL msg="zos hub trace: $(oneline "$w/trace.out")"; return; }
	else
		"$ZOS" hub trace "$OUT/$IMAGE.fl" --rm --hub "$HUB" --key "$KEY" >/dev/null 2>&1 || true
	fi
	start_node "$w/node"
	sync # the previous rep's writes are not this one's to pay for
	set_link hub 100M
	t0=$(now)
	(
		rc=0
		"$ZOS" deploy "$w/spec.json" --key "$KEY" --node "$NODE_URL" --wait 10m --json >"$w/deploy.json" 2>"$w/deploy.err" || rc=$?
		echo "$rc $(now)" >"$w/deploy.done"
	) &
	local dpid=$!
	# The first deployment of a fresh node is number 1.
	if wait_marker "$w/node/deployments/1/$CTR/log" 600; then
		t_ready=$(since "$t0")
	else
		st=FAIL msg="no marker in 10 min: $(oneline "$w/node/deployments/1/$CTR/log") $(oneline "$w/deploy.err")"
	fi
	wait "$dpid" || true
	bytes=$(proxy_bytes hub)
	read -r rc t_wait <"$w/deploy.done"
	t_wait=$(minus "$t_wait" "$t0")
	[ "$rc" = 0 ] || { st=FAIL msg="zos deploy --wait: exit $rc: $(oneline "$w/deploy.err")"; }
	"$ZOS" status 1 --events --json --key "$KEY" --node "$NODE_URL" >"$w/status.json" 2>/dev/null || true
	jq '.events["1"] // []' "$w/status.json" >"$w/events.json" 2>/dev/null || echo '[]' >"$w/events.json"
	local tf tm ts
	tf=$(event_time "$w/events.json" image-fetched "$t0")
	tm=$(event_time "$w/events.json" mounted "$t0")
	ts=$(event_time "$w/events.json" started "$t0")
	local chunks used=0
	chunks=$(find "$w/node/cache" -type f 2>/dev/null | wc -l)
	cp "$w/node/images/mnt/$DIGEST.log" "$w/mount.log" 2>/dev/null || true
	grep -q 'prefetching by trace' "$w/mount.log" 2>/dev/null && used=1
	if [ "$mode" = trace ] && [ "$used" = 0 ]; then st=FAIL msg="the mount did not use the trace ${msg}"; fi
	stop_node
	local tb=0
	[ "$mode" = trace ] && tb=$(stat -c %s "$OUT/trace/$DIGEST.fl.trace")
	rec part=deploy row=$row rep="$rep" wall="${t_ready:-0}" t_wait="$t_wait" t_fetched="$tf" t_mounted="$tm" \
		t_started="$ts" bytes="$bytes" cache_files="$chunks" trace_bytes="$tb" trace_used="$used" status=$st msg="$msg"
	log "deploy $row rep $rep: $st ready ${t_ready:-?}s, deploy --wait ${t_wait}s (fetched ${tf}s mounted ${tm}s started ${ts}s), $bytes bytes $msg"
}

deploy_oci() {
	local rep=$1 w=$OUT/run/oci-$rep st=ok msg="" t0 tp="" tu="" t_ready="" bytes id=zosbench-node-$$-$1
	mkdir -p "$w"
	sync
	set_link registry 100M
	t0=$(now)
	if ! skopeo copy -q --src-tls-verify=false "docker://127.0.0.1:$REG_PROXY_PORT/$IMAGE:latest" "oci:$w/oci:$IMAGE" >"$w/err" 2>&1; then
		st=FAIL msg="skopeo: $(oneline "$w/err")"
	else
		tp=$(since "$t0")
		if ! umoci unpack --image "$w/oci:$IMAGE" "$w/bundle" >"$w/err" 2>&1; then
			st=FAIL msg="umoci: $(oneline "$w/err")"
		else
			tu=$(since "$t0")
			jq --arg s "$(container_cmd)" --arg path "PATH=$PATH_ENV" '.process.args = ["/bin/sh", "-c", $s]
				| .process.terminal = false | .process.env = [$path, "HOME=/root", "LANG=C.UTF-8"]' \
				"$w/bundle/config.json" >"$w/config.json" && mv "$w/config.json" "$w/bundle/config.json"
			if ! runc run -d --bundle "$w/bundle" "$id" >"$w/out.log" 2>&1; then
				st=FAIL msg="runc: $(oneline "$w/out.log")"
			elif wait_marker "$w/out.log" 600; then
				t_ready=$(since "$t0")
			else
				st=FAIL msg="no marker in 10 min: $(oneline "$w/out.log")"
			fi
		fi
	fi
	bytes=$(proxy_bytes registry)
	runc delete -f "$id" >/dev/null 2>&1 || true
	# The layout and bundle stay until the end of the run: removing a GB of files right before
	# the next measurement would slow it (ext4 after a mass delete).
	rec part=deploy row=oci rep="$rep" wall="${t_ready:-0}" t_pull="${tp:-0}" t_unpack="${tu:-0}" bytes="$bytes" status=$st msg="$msg"
	log "deploy oci rep $rep: $st ready ${t_ready:-?}s (pull ${tp:-?}s, unpack done ${tu:-?}s), $bytes bytes $msg"
}

# record_trace: the trace of the ready command, recorded on the hub's flist straight from the
# hub (untimed), saved as $OUT/trace/DIGEST.fl.trace.
record_trace() {
	TRACE_MSG="zos flist trace not available"
	"$ZOS" flist trace --help >/dev/null 2>&1 || return 0
	local w=$OUT/trace
	mkdir -p "$w"
	cp "$OUT/$IMAGE.fl" "$w/$DIGEST.fl"
	log "recording a trace of: $READY_CMD"
	if ! env -i PATH="$PATH_ENV" HOME=/root LANG=C.UTF-8 "$ZOS" flist trace "$w/$DIGEST.fl" --store "$HUB/chunks" \
		-- /bin/sh -c "$READY_CMD" >"$w/log" 2>&1; then
		TRACE_MSG="zos flist trace failed: $(oneline "$w/log")"
		rm -f "$w/$DIGEST.fl.trace"
		return 0
	fi
	[ -s "$w/$DIGEST.fl.trace" ] || TRACE_MSG="zos flist trace wrote no trace"
}

part_deploy() {
	oci_layout "$IMAGE"
	push_image "$IMAGE"
	convert_image "$IMAGE"
	rec part=info image="$IMAGE" digest="$DIGEST" ready_cmd="$READY_CMD" \
		tree_bytes="$(find "$CORPUS/$IMAGE" -type f -printf '%i %s\n' | sort -u | awk '{s += $2} END {printf "%d", s}')" \
		fl_bytes="$(stat -c %s "$OUT/$IMAGE.fl")" \
		layer_bytes="$(skopeo inspect --raw --tls-verify=false "docker://127.0.0.1:$REG_PORT/$IMAGE:latest" | jq '[.layers[].size] | add')"
	[[ " $ROWS " == *" zostrace "* ]] && record_trace
	local rep i n rows
	read -r -a rows <<<"$ROWS"
	n=${#rows[@]}
	for rep in $(seq 1 "$REPS"); do
		for i in $(seq 0 $((n - 1))); do
			wait_load
			case "${rows[$(((i + rep - 1) % n))]}" in
			zos) deploy_zos "$rep" lazy ;;
			zostrace) deploy_zos "$rep" trace ;;
			oci) deploy_oci "$rep" ;;
			*) die "unknown row ${rows[$(((i + rep - 1) % n))]}" ;;
			esac
		done
	done
}

# ---- part 2: density ----
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# pss_kb PID: the proportional set size (shared pages, such as the zos binary's text mapped by
# every mount server, divided among the processes that map them).
pss_kb() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
avail_mb() { awk '/^MemAvailable:/ {printf "%d", $2 / 1024}' /proc/meminfo; }
# mount_servers DIR: pids of the `zos flist mount` servers of the node in DIR.
mount_servers() {
	local p
	for p in $(pgrep -f "flist mount $1/" || true); do echo "$p"; done
}
# snapshot N T: one density checkpoint.
snapshot() {
	local n=$1 d=$NODE_DATA m=0 mp=0 ma=0 k=0 p cg=0 f
	for p in $(mount_servers "$d"); do
		m=$((m + $(rss_kb "$p")))
		ma=$((ma + $(awk '/^RssAnon:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)))
		mp=$((mp + $(pss_kb "$p")))
		k=$((k + 1))
	done
	# cgroup v2, or v1's memory hierarchy
	for f in /sys/fs/cgroup/znb/d*-nb-s/memory.current /sys/fs/cgroup/memory/znb/d*-nb-s/memory.usage_in_bytes; do
		[ -f "$f" ] && cg=$((cg + $(cat "$f")))
	done
	rec part=density kind=point n="$n" deploy_s="${2:-0}" agent_rss_kb="$(rss_kb "$NODE_PID")" agent_pss_kb="$(pss_kb "$NODE_PID")" mount_rss_kb="$m" mount_pss_kb="$mp" mount_anon_kb="$ma" \
		mount_servers="$k" cgroup_bytes="$cg" avail_mb="$(avail_mb)"
	log "density $n: deploy ${2:-}s agent $(rss_kb "$NODE_PID") kB, $k mount servers $m kB (PSS $mp kB), cgroups $((cg / 1024)) kB, available $(avail_mb) MB"
}

part_density() {
	local img=$DENSITY_IMAGE w=$OUT/run/density i t0 t st=ok msg="" avail0
	oci_layout "$img"
	push_image "$img"
	convert_image "$img"
	local digest=$DIGEST
	mkdir -p "$w/specs"
	wait_load
	start_node "$w/node"
	sleep 3 # a reconcile pass or two
	avail0=$(avail_mb)
	snapshot 0
	local t_all
	t_all=$(now)
	i=0
	while [ "$i" -lt "$DENSITY_MAX" ]; do
		if [ "$(avail_mb)" -lt "$DENSITY_MIN_AVAIL_MB" ]; then
			msg="stopped at MemAvailable $(avail_mb) MB < $DENSITY_MIN_AVAIL_MB MB"
			break
		fi
		i=$((i + 1))
		write_spec "$w/specs/$i.json" nb-s "$img" "$digest" "$HUB" 16MiB 50 8 "node.sh density $i" "$SLEEP_CMD"
		t0=$(now)
		if ! "$ZOS" deploy "$w/specs/$i.json" --key "$KEY" --node "$NODE_URL" --wait 120s >"$w/deploy.log" 2>&1; then
			st=FAIL msg="deploy $i: $(oneline "$w/deploy.log")"
			i=$((i - 1))
			break
		fi
		t=$(since "$t0")
		rec part=density kind=deploy n="$i" deploy_s="$t"
		case "$i" in 1 | 2 | 5 | 10 | 20 | 50 | 100 | 150 | 200 | 300 | 400 | 500) snapshot "$i" "$t" ;; esac
	done
	local t_deploy
	t_deploy=$(since "$t_all")
	log "density: $i containers in ${t_deploy}s; waiting ${DENSITY_IDLE_S}s idle"
	local c0 c1
	c0=$(cpu_ticks "$NODE_PID")
	sleep "$DENSITY_IDLE_S"
	c1=$(cpu_ticks "$NODE_PID")
	snapshot "$i"
	local running
	running=$("$ZOS" status --json --key "$KEY" --node "$NODE_URL" | jq '[.deployments[].workloads[] | select(.state == "running")] | length')
	local id ids
	ids=$("$ZOS" status --json --key "$KEY" --node "$NODE_URL" | jq -r '.deployments[].id')
	t0=$(now)
	for id in $ids; do "$ZOS" delete "$id" --key "$KEY" --node "$NODE_URL" >/dev/null 2>&1 || true; done
	for id in $ids; do "$ZOS" delete "$id" --key "$KEY" --node "$NODE_URL" --wait 300s >/dev/null 2>&1 || log "deployment $id not deleted"; done
	local t_delete
	t_delete=$(since "$t0")
	local left
	left=$(mount_servers "$w/node" | wc -l)
	stop_node
	rec part=density kind=summary n="$i" running="$running" total_s="$t_deploy" delete_s="$t_delete" \
		idle_cpu_s="$(awk -v a="$c0" -v b="$c1" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", (b - a) / hz}')" \
		idle_s="$DENSITY_IDLE_S" avail0_mb="$avail0" max="$DENSITY_MAX" mount_servers_after_delete="$left" image="$img" status=$st msg="$msg"
	log "density: deleted in ${t_delete}s; $left mount servers left"
}

# other_agents: pids of zos node agents that are not this script's.
other_agents() { pgrep -af 'zos node run --data' | grep -v -- "--data $OUT/" | cut -d' ' -f1 || true; }
# wait_load: the machine is shared; wait (at most 10 min) while the 1-minute load is high or
# another zos node agent runs (agents on one machine remove each other's network sandboxes:
# /run/zos/netns is machine-wide and each one's reconcile takes the other's for orphans).
wait_load() {
	local i
	for i in $(seq 1 60); do
		if awk -v m="$MAX_LOAD" '{exit !($1 > m)}' /proc/loadavg; then
			[ "$i" = 1 ] && log "load $(cut -d' ' -f1 /proc/loadavg) > $MAX_LOAD: waiting"
		elif [ -n "$(other_agents)" ]; then
			[ "$i" = 1 ] && log "another zos node agent runs (pid $(other_agents | tr '\n' ' ')): waiting"
		else
			return 0
		fi
		sleep 10
	done
	log "still busy after 10 min; going on (load $(cut -d' ' -f1 /proc/loadavg), other agents: $(other_agents | tr '\n' ' '))"
	rec part=warning msg="ran busy: load $(cut -d' ' -f1 /proc/loadavg), other agents: $(other_agents | tr '\n' ' ')"
}

# ---- main ----
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
for p in $API_PORT $HUB_PORT $HUB_PROXY_PORT $REG_PORT $REG_PROXY_PORT $NODE_PORT; do
	port_free "$p" || die "127.0.0.1:$p is taken (another run of node.sh?)"
done
for img in $IMAGE $DENSITY_IMAGE; do [ -d "$CORPUS/$img" ] || die "missing $CORPUS/$img (run corpus/build-corpus.sh $img)"; done
mkdir -p "$OUT"
prepare_tools
if [ -d "$OUT/run" ]; then
	umount_under "$OUT/run"
	rm -rf "${OUT:?}/run" "$OUT/trace"
fi
mkdir -p "$OUT/run" "$CACHE"
: >"$RESULTS"
ZOS_REV=${ZOS_REV:-}
[ -n "$ZOS_REV" ] || ZOS_REV=$(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null)$(cd "$REPO" && git diff --quiet HEAD -- cmd internal 2>/dev/null || echo "+dirty")

"$MB" proxy -api "127.0.0.1:$API_PORT" 2>"$OUT/proxy.log" &
PIDS+=($!)
wait_port "$API_PORT"
start_registry
start_hub

# The machine is shared: sample the 1-minute load and other zos agents every 10 s.
(while sleep 10; do echo "$(cut -d' ' -f1 /proc/loadavg) $(other_agents | wc -l)"; done) >"$OUT/load.txt" &
PIDS+=($!)
start=$(date +%s)
for part in $PARTS; do
	log "part $part"
	"part_$part"
done
elapsed=$(($(date +%s) - start))
cleanup
rm -rf "$OUT"/run/oci-*/oci "$OUT"/run/oci-*/bundle "$OUT"/run/*/node/cache

python3 "$REPO/bench/nodereport.py" "$RESULTS" \
	--date "$(date -u +%Y-%m-%dT%H:%MZ)" --cores "$(nproc)" --mem "$(awk '/^MemTotal:/ {printf "%.1f GB", $2 / 1e6}' /proc/meminfo)" \
	--zos-rev "$ZOS_REV" --elapsed "$elapsed" --rate-kbps "$RATE_KBPS" --latency-ms "$LATENCY_MS" --reps "$REPS" \
	--load "start $LOAD0, end $(cut -d' ' -f1-3 /proc/loadavg); 1-minute load sampled every 10 s: $(sort -n "$OUT/load.txt" | awk '{s += $1; n++; m = $1; if ($2 > 0) o++} END {if (n) printf "mean %.2f, max %.2f; another zos node agent ran in %d of %d samples", s / n, m, o, n}')"
