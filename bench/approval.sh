#!/usr/bin/env bash
# bench/approval.sh: the ledger-to-workload benchmark of issue 7: the time from the last approval
# of a contract (the transaction that makes it active, submitted with `zos chain contract
# approve`) to its container answering through the node's gateway, on one machine: a single
# validator (`zos chain run`), a hub, a node (`zos node run --chain`) watching the ledger.
#
# Each rep records a new contract needing two twins (the owner signs it, the co-signer's approval
# is the clock's start) for a small container (demo/hello, a static HTTP server, packed into the
# hub once), then cancels it by both twins' votes and waits until the node reports it removed.
# Rows: the node polling the ledger every 1 s (the default) and every 200 ms. Printed: median and
# min-max of approval-committed (the approve command returned: the tx is in a block), container
# started (from the node's history), and serving (the gateway answered), all from the approve
# command's start.
#
# Usage: bash bench/approval.sh    (as root: the node mounts images, makes namespaces and cgroups)
# Environment: REPS=5  POLLS="1s 200ms"  OUT=/var/tmp/zos-bench-approval (wiped)
#   ports: CHAIN_PORT=18790 HUB_PORT=18780 NODE_PORT=18770 GATEWAY_PORT=18781
set -euo pipefail
exec </dev/null
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPS=${REPS:-5}
POLLS=${POLLS:-"1s 200ms"}
OUT=${OUT:-/var/tmp/zos-bench-approval}
chain=http://127.0.0.1:${CHAIN_PORT:-18790}
hub=http://127.0.0.1:${HUB_PORT:-18780}
nodeurl=http://127.0.0.1:${NODE_PORT:-18770}
gw=127.0.0.1:${GATEWAY_PORT:-18781}
[[ $(id -u) == 0 ]] || { echo "bench/approval.sh: run as root" >&2; exit 1; }

pkill -f "$OUT/zos (hub serve|node run|chain run)" 2>/dev/null || true
sleep 0.3
{ grep -o " $OUT/[^ ]*" /proc/self/mountinfo || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
rm -rf "$OUT"
mkdir -p "$OUT/rootfs/bin" "$OUT/rootfs/etc"
(cd "$REPO" && go build -tags seccomp -o "$OUT/zos" ./cmd/zos && CGO_ENABLED=0 go build -o "$OUT/rootfs/bin/hello" ./demo/hello)
printf 'root:x:0:0:root:/:/bin/hello\nnobody:x:65534:65534:nobody:/:/bin/hello\n' >"$OUT/rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$OUT/rootfs/etc/group"
zos=$OUT/zos
now() { date +%s.%N; }
ms() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.0f", (b - a) * 1000}'; }
pids=()
cleanup() {
	kill "${pids[@]}" 2>/dev/null || true
	wait 2>/dev/null || true
	pkill -f "$OUT/zos flist mount" 2>/dev/null || true
	{ grep -o " $OUT/[^ ]*" /proc/self/mountinfo || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
}
trap cleanup EXIT
wait_for() { # SECONDS CMD...: until CMD succeeds
	local n=$(($1 * 20)); shift
	for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; done
	return 1
}

"$zos" chain init --home "$OUT/chain" --chain-id zos-bench >/dev/null
"$zos" chain run --home "$OUT/chain" --listen "${chain#http://}" 2>"$OUT/chain.log" & pids+=($!)
"$zos" hub serve --data "$OUT/hub" --listen "${hub#http://}" 2>"$OUT/hub.log" & pids+=($!)
wait_for 20 "$zos" chain status --chain "$chain" || { echo "chain did not start" >&2; exit 1; }
wait_for 20 curl -fsS "$hub/healthz" || { echo "hub did not start" >&2; exit 1; }
"$zos" key gen "$OUT/me.key" >/dev/null
"$zos" key gen "$OUT/co.key" >/dev/null
"$zos" hub register bench --hub "$hub" --key "$OUT/me.key" >/dev/null
"$zos" flist pack "$OUT/rootfs" -o "$OUT/hello.fl" --store "$hub/chunks" --key "$OUT/me.key" >/dev/null
ref=$("$zos" hub push "$OUT/hello.fl" bench/hello:latest --hub "$hub" --key "$OUT/me.key")
digest=${ref##*@}
me=$("$zos" chain twin create --key "$OUT/me.key" --chain "$chain")
co=$("$zos" chain twin create --key "$OUT/co.key" --chain "$chain")

declare -A RES
node_id=""
for poll in $POLLS; do
	d=$OUT/node-$poll
	"$zos" node run --data "$d" --key "$OUT/node.key" --listen "${nodeurl#http://}" --gateway "$gw" --interval 1s \
		--chain "$chain" --chain-poll "$poll" --prefix zab 2>"$OUT/node-$poll.log" & node_pid=$!
	pids+=("$node_pid")
	wait_for 20 test -s "$OUT/node.key" || { echo "node did not start" >&2; exit 1; }
	if [[ -z $node_id ]]; then
		node_id=$("$zos" chain node register --key "$OUT/me.key" --twin "$me" --node-key "$OUT/node.key" \
			--endpoint "$nodeurl" --cpu 2 --memory 4G --disk 20G --chain "$chain")
	fi
	for rep in $(seq "$REPS"); do
		host=r$rep-${poll}.bench.local
		cat >"$OUT/c.yaml" <<YAML
version: 1
owner: $me
workloads:
  - {name: net, kind: network, network: {subnet: "10.79.$rep.0/24"}}
  - name: hello
    kind: container
    container:
      image: {digest: "$digest", hub: "$hub", ref: "bench/hello:latest"}
      entrypoint: [/bin/hello, ":8000"]
      user: nobody
      memory: 64MiB
      networks: [{network: net}]
      ports: [{port: 8000}]
  - {name: web, kind: gateway, gateway: {host: $host, container: hello, port: 8000}}
signature_requirement:
  requests: [{twin: $me, weight: 1, required: true}, {twin: $co, weight: 1, required: true}]
  weight_required: 2
YAML
		"$zos" sign "$OUT/c.yaml" --key "$OUT/me.key" --twin "$me" >/dev/null 2>&1
		c=$("$zos" chain contract create "$OUT/c.yaml" --node "$node_id" --key "$OUT/me.key" --chain "$chain" 2>/dev/null)
		sleep 1.5 # the node has seen it pending
		t0=$(now)
		"$zos" chain contract approve "$c" --key "$OUT/co.key" --twin "$co" --chain "$chain" >/dev/null 2>&1
		t1=$(now)
		wait_for 60 curl -fsS -H "Host: $host" "http://$gw/" || { echo "rep $rep ($poll): never served" >&2; exit 1; }
		t2=$(now)
		RES[$poll,committed]+="$(ms "$t0" "$t1") "
		RES[$poll,serving]+="$(ms "$t0" "$t2") "
		"$zos" chain contract cancel "$c" --key "$OUT/me.key" --twin "$me" --chain "$chain" >/dev/null 2>&1
		"$zos" chain contract cancel "$c" --key "$OUT/co.key" --twin "$co" --chain "$chain" >/dev/null 2>&1
		wait_for 60 sh -c "'$zos' chain contract show $c --chain $chain --json | grep -q '\"state\": *\"removed\"'" ||
			{ echo "rep $rep ($poll): never removed" >&2; exit 1; }
	done
	kill "$node_pid"; wait "$node_pid" 2>/dev/null || true
done

stats() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR] = $1} END {printf "%d (%d-%d)", a[int((NR + 1) / 2)], a[1], a[NR]}'; }
echo "approval benchmark, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, zos $(git -C "$REPO" rev-parse --short HEAD), $REPS reps, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| node's ledger poll | approval committed ms | serving through the gateway ms (median, min-max) |"
echo "|---|---:|---:|"
for poll in $POLLS; do
	echo "| $poll | $(echo "${RES[$poll,committed]}" | stats) | **$(echo "${RES[$poll,serving]}" | stats)** |"
done
