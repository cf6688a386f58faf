#!/usr/bin/env bash
# bench/hub.sh: chunk serving on loopback (issue 5), zos hub against nginx, side by side.
#
# The corpus tree `big` is packed once into a hub data directory (its chunks in DATA/chunks, a dir
# store). `zos hub serve --data DATA` serves it at /chunks/h[0:2]/h; nginx (Debian package; a
# config generated under OUT: worker_processes auto, sendfile on, keep-alive, access log off,
# running as root in the foreground) serves the same directory at the same paths on another port.
# bench/hubbench (Go, stdlib only, its own module) then runs 64 concurrent keep-alive clients
# GETting random chunks for a fixed time against each server, alternating the order over 3 rounds,
# checks every answer (200, expected length) and prints a markdown table: requests/s, MB/s, p50,
# p99 and the throughput ratio to nginx. Goal: zos hub >= 0.8x nginx.
#
# Both servers and the load generator share the machine's cores: the same for both, so the ratio
# is fair, but absolute figures are lower than with a separate client machine.
#
# Usage: bash bench/hub.sh        (as root; needs nginx: bash .ci/deps.sh installs it)
# Environment (all optional):
#   CORPUS=/var/cache/zos-corpus    big (CORPUS_BUILD big builds it when missing)
#   CORPUS_BUILD=/work/shared/corpus/build-corpus.sh
#   CACHE=/var/cache/zos-bench      the packed hub data, kept across runs (CACHE/hub-data)
#   OUT=/var/tmp/zos-bench-hub      scratch (wiped at the start; never in the repository)
#   ZOS=$OUT/zos  BUILD=1           build zos from this checkout into $OUT/zos first (or use ZOS=BIN
#                                   as it is); bench/hubbench is always built
#   CONC=64 DURATION=10s WARM=2s ROUNDS=3 HUB_PORT=28480 NGINX_PORT=28481
#   MAX_LOAD=2.5                    wait (up to 10 min) while the 1-minute load is above this
set -euo pipefail
exec </dev/null

repo=$(cd "$(dirname "$0")/.." && pwd)
CORPUS=${CORPUS:-/var/cache/zos-corpus}
CORPUS_BUILD=${CORPUS_BUILD:-/work/shared/corpus/build-corpus.sh}
CACHE=${CACHE:-/var/cache/zos-bench}
OUT=${OUT:-/var/tmp/zos-bench-hub}
BUILD=${BUILD:-1}
CONC=${CONC:-64}
DURATION=${DURATION:-10s}
WARM=${WARM:-2s}
ROUNDS=${ROUNDS:-3}
HUB_PORT=${HUB_PORT:-28480}
NGINX_PORT=${NGINX_PORT:-28481}
MAX_LOAD=${MAX_LOAD:-2.5}

log() { printf 'hub.sh: %s\n' "$*" >&2; }

command -v nginx >/dev/null || { log "nginx is missing: bash .ci/deps.sh"; exit 1; }
if [[ ! -d $CORPUS/big ]]; then
	log "building the corpus (big) with $CORPUS_BUILD"
	bash "$CORPUS_BUILD" big
fi

rm -rf "$OUT"
mkdir -p "$OUT" "$CACHE"
zos=${ZOS:-$OUT/zos}
hubbench=$OUT/hubbench
if [[ -z ${ZOS:-} && $BUILD == 1 ]]; then
	log "building zos"
	(cd "$repo" && go build -o "$zos" ./cmd/zos)
fi
(cd "$repo/bench/hubbench" && go build -o "$hubbench" .)

# The hub's data directory: DATA/chunks is a dir store, DATA/meta the hub's objects.
data=$CACHE/hub-data
if [[ ! -s $data/big.fl ]]; then
	log "packing $CORPUS/big into $data/chunks"
	rm -rf "$data"
	mkdir -p "$data"
	"$zos" flist pack "$CORPUS/big" -o "$data/big.fl.tmp" --store "dir://$data/chunks" >&2
	mv "$data/big.fl.tmp" "$data/big.fl"
fi
nblobs=$(find "$data/chunks" -type f | wc -l)
bytes=$(du -sb "$data/chunks" | cut -f1)
log "store: $nblobs blobs, $((bytes >> 20)) MiB"

for port in "$HUB_PORT" "$NGINX_PORT"; do
	if ss -Htln "sport = :$port" | grep -q .; then
		log "port $port is taken (another benchmark?): set HUB_PORT / NGINX_PORT"
		exit 1
	fi
done

pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT

# zos hub
"$zos" hub serve --data "$data" --listen "127.0.0.1:$HUB_PORT" --log-level warn 2>"$OUT/hub.log" &
pids+=($!)

# nginx, as root, in the foreground, on the same directory and paths.
mkdir -p "$OUT/nginx/tmp"
cat >"$OUT/nginx/nginx.conf" <<CONF
daemon off;
user root;
worker_processes auto;
pid $OUT/nginx/nginx.pid;
error_log $OUT/nginx/error.log warn;
events { worker_connections 4096; }
http {
	access_log off;
	sendfile on;
	tcp_nopush on;
	tcp_nodelay on;
	keepalive_timeout 120s;
	keepalive_requests 1000000;
	default_type application/octet-stream;
	client_body_temp_path $OUT/nginx/tmp/body;
	proxy_temp_path $OUT/nginx/tmp/proxy;
	fastcgi_temp_path $OUT/nginx/tmp/fastcgi;
	uwsgi_temp_path $OUT/nginx/tmp/uwsgi;
	scgi_temp_path $OUT/nginx/tmp/scgi;
	server {
		listen 127.0.0.1:$NGINX_PORT;
		location /chunks/ {
			alias $data/chunks/;
			add_header Cache-Control "public, max-age=31536000, immutable";
		}
	}
}
CONF
nginx -e "$OUT/nginx/error.log" -p "$OUT/nginx" -c "$OUT/nginx/nginx.conf" &
pids+=($!)

wait_port() {
	for _ in $(seq 100); do
		curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	log "$1 does not answer"
	exit 1
}
first=$(find "$data/chunks" -type f -name '????????????????????????????????????????????????????????????????' -print -quit)
rel=${first#"$data/chunks"}
wait_port "http://127.0.0.1:$HUB_PORT/chunks$rel"
wait_port "http://127.0.0.1:$NGINX_PORT/chunks$rel"
cmp <(curl -fsS "http://127.0.0.1:$HUB_PORT/chunks$rel") <(curl -fsS "http://127.0.0.1:$NGINX_PORT/chunks$rel")

# Page cache: read every blob once, so both servers serve from memory.
find "$data/chunks" -type f -print0 | xargs -0 cat >/dev/null

for _ in $(seq 60); do
	load=$(cut -d' ' -f1 /proc/loadavg)
	awk -v l="$load" -v m="$MAX_LOAD" 'BEGIN { exit !(l > m) }' || break
	log "load $load > $MAX_LOAD: waiting for other work to finish"
	sleep 10
done
log "load $(cut -d' ' -f1 /proc/loadavg), $(nproc) cores; running"

"$hubbench" -store "$data/chunks" -c "$CONC" -d "$DURATION" -warm "$WARM" -rounds "$ROUNDS" -ref nginx \
	-json "$OUT/runs.json" \
	"zos-hub=http://127.0.0.1:$HUB_PORT/chunks" "nginx=http://127.0.0.1:$NGINX_PORT/chunks" | tee "$OUT/table.md"
echo
echo "$nblobs chunks ($((bytes >> 20)) MiB, corpus big) from page cache; $(nproc) cores shared by the servers and the load generator; $(nginx -v 2>&1 | sed 's/.*: //'), $(go version | cut -d' ' -f3)."
