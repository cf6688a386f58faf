#!/usr/bin/env bash
# demo/run.sh: the whole system on one machine with embedded defaults (README, first command).
#
# As root: installs what a node needs (fuse3, nftables, iproute2, e2fsprogs, libseccomp-dev) if
# missing, builds zos and a small static HTTP server (demo/hello), starts a hub and a node on
# loopback, packs an image holding the server into the hub, signs a deployment that pins the
# image by digest (a private network, a volume, a container with limits, a gateway name), deploys
# it, and shows it running: its status, its answer through the gateway, its log and the node's
# verified history. Then the grid ledger: it starts a single embedded validator (zos chain),
# registers two twins and the node on it, and records a second deployment as a contract that
# needs both twins' approval: pending after the first, active after the second, when the node
# (which watches the ledger) runs it and reports it running. Then it stops everything, unless
# KEEP=1.
#
# Environment: DEMO_DIR (default /tmp/zos-demo; wiped first), HUB_PORT (18080), NODE_PORT (18070),
# GATEWAY_PORT (18081), CHAIN_PORT (18090), KEEP=1 to leave everything running.
set -euo pipefail
exec </dev/null
cd "$(dirname "$0")/.."

dir=${DEMO_DIR:-/tmp/zos-demo}
hub_port=${HUB_PORT:-18080}
node_port=${NODE_PORT:-18070}
gw_port=${GATEWAY_PORT:-18081}
chain_port=${CHAIN_PORT:-18090}
chain=http://127.0.0.1:$chain_port
hub=http://127.0.0.1:$hub_port
nodeurl=http://127.0.0.1:$node_port

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if [[ $(id -u) != 0 ]]; then
	echo "demo/run.sh: run as root (the node mounts images, makes namespaces and cgroups)" >&2
	exit 1
fi

missing=()
for p in fuse3 nftables iproute2 e2fsprogs libseccomp-dev; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
	say "installing ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# A previous demo's processes and mounts.
if [[ -d $dir ]]; then
	pkill -f "$dir/zos (hub serve|node run|chain run)" 2>/dev/null || true
	# Containers an interrupted demo left running (their init pids, from the runtime's state).
	for st in "$dir"/node/runtime/*/state.json; do
		[[ -f $st ]] || continue
		pid=$(grep -o '"init_process_pid":[0-9]*' "$st" | cut -d: -f2)
		[[ -n $pid ]] && kill -9 "$pid" 2>/dev/null || true
	done
	sleep 0.5
	{ grep -o " $dir/[^ ]*" /proc/self/mountinfo || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
	rm -rf "$dir"
fi
mkdir -p "$dir/rootfs/bin" "$dir/rootfs/etc" "$dir/rootfs/tmp"

say "building zos and the demo's workload"
go build -tags seccomp -o "$dir/zos" ./cmd/zos
CGO_ENABLED=0 go build -o "$dir/rootfs/bin/hello" ./demo/hello
printf 'root:x:0:0:root:/:/bin/hello\nnobody:x:65534:65534:nobody:/:/bin/hello\n' >"$dir/rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$dir/rootfs/etc/group"
zos=$dir/zos

cleanup() {
	if [[ ${KEEP:-} != 1 ]]; then
		"$zos" delete 1 --key "$dir/me.key" --node "$nodeurl" --wait 30s >/dev/null 2>&1 || true
		if [[ -n ${contract:-} ]]; then
			# An active contract is cancelled by votes meeting its requirement: both twins.
			"$zos" chain contract cancel "$contract" --key "$dir/me.key" --twin 1 --chain "$chain" >/dev/null 2>&1 || true
			"$zos" chain contract cancel "$contract" --key "$dir/cosigner.key" --twin 2 --chain "$chain" >/dev/null 2>&1 || true
			for _ in $(seq 100); do # until the node removed its workloads
				"$zos" chain contract show "$contract" --chain "$chain" --json 2>/dev/null |
					grep -q '"state": *"removed"' && break
				sleep 0.2
			done
		fi
		kill "${node_pid:-}" "${hub_pid:-}" "${chain_pid:-}" 2>/dev/null || true
		wait 2>/dev/null || true
	fi
}
trap cleanup EXIT

say "starting a hub on $hub (data in $dir/hub)"
"$zos" hub serve --data "$dir/hub" --listen "127.0.0.1:$hub_port" 2>"$dir/hub.log" &
hub_pid=$!
# ready: answers, and is ours (not another process on the port)
ready() { # NAME PID LOG CMD...
	local name=$1 pid=$2 log=$3
	shift 3
	for _ in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || { echo "the $name did not start:" >&2; tail -5 "$log" >&2; exit 1; }
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "the $name did not answer in 10s:" >&2; tail -5 "$log" >&2; exit 1
}
ready hub "$hub_pid" "$dir/hub.log" curl -fsS "$hub/healthz"

say "your identity, a namespace on the hub, an image packed into it"
"$zos" key gen "$dir/me.key"
"$zos" hub register demo --hub "$hub" --key "$dir/me.key"
"$zos" flist pack "$dir/rootfs" -o "$dir/hello.fl" --store "$hub/chunks" --key "$dir/me.key"
ref=$("$zos" hub push "$dir/hello.fl" demo/hello:latest --hub "$hub" --key "$dir/me.key")
digest=${ref##*@}
echo "pushed $ref"

say "starting the grid ledger: one embedded validator, its API and page on $chain"
"$zos" chain init --home "$dir/chain" --chain-id zos-demo
"$zos" chain run --home "$dir/chain" --listen "127.0.0.1:$chain_port" 2>"$dir/chain.log" &
chain_pid=$!
ready chain "$chain_pid" "$dir/chain.log" "$zos" chain status --chain "$chain"

say "starting a node on $nodeurl (gateway on 127.0.0.1:$gw_port, data in $dir/node; it watches the ledger)"
"$zos" node run --data "$dir/node" --listen "127.0.0.1:$node_port" --gateway "127.0.0.1:$gw_port" --interval 1s \
	--chain "$chain" 2>"$dir/node.log" &
node_pid=$!
"$zos" node twin add 1 "$dir/me.key" --data "$dir/node"
ready node "$node_pid" "$dir/node.log" "$zos" status --key "$dir/me.key" --node "$nodeurl"

say "a deployment pinned to image $digest, signed by twin 1"
cat >"$dir/deployment.yaml" <<EOF
version: 1
owner: 1
description: the zos demo
workloads:
  - {name: net, kind: network, network: {subnet: "10.77.0.0/24"}}
  - {name: data, kind: volume, volume: {size: 64MiB}}
  - name: hello
    kind: container
    container:
      image: {digest: "$digest", hub: "$hub", ref: "demo/hello:latest"}
      entrypoint: [/bin/hello, ":8000"]
      env: {GREETING: "hi"}
      user: nobody
      cpu: 500
      memory: 64MiB
      pids: 32
      networks: [{network: net}]
      ports: [{port: 8000}]
      mounts: [{volume: data, path: /data}]
  - {name: web, kind: gateway, gateway: {host: hello.zos.local, container: hello, port: 8000}}
EOF
"$zos" sign "$dir/deployment.yaml" --key "$dir/me.key" --twin 1
cat "$dir/deployment.yaml"

say "deploying"
"$zos" deploy "$dir/deployment.yaml" --key "$dir/me.key" --node "$nodeurl" --wait 60s

say "it runs: through the node's gateway"
ready gateway "$node_pid" "$dir/node.log" curl -fsS -H 'Host: hello.zos.local' "http://127.0.0.1:$gw_port/"
curl -fsS -H 'Host: hello.zos.local' "http://127.0.0.1:$gw_port/"
curl -fsS -H 'Host: hello.zos.local' "http://127.0.0.1:$gw_port/"

say "its log"
"$zos" logs 1 hello --key "$dir/me.key" --node "$nodeurl"

say "the node's history (hash-chained, signed by the node)"
"$zos" node history --data "$dir/node" --node "$nodeurl"

say "the ledger: twins 1 (you) and 2 (a co-signer), and this node, registered"
"$zos" key gen "$dir/cosigner.key"
echo "twin $("$zos" chain twin create --key "$dir/me.key" --chain "$chain"): you"
echo "twin $("$zos" chain twin create --key "$dir/cosigner.key" --chain "$chain"): the co-signer"
echo "node $("$zos" chain node register --key "$dir/me.key" --twin 1 --node-key "$dir/node/node.key" \
	--endpoint "$nodeurl" --cpu 2 --memory 4G --disk 20G --chain "$chain"): this machine, owned by twin 1"

say "a second deployment as a contract on the ledger: both twins must approve it (twin 1 signed it)"
sed -e 's/^description: .*/description: the zos demo, on the ledger/' -e 's/10\.77\.0/10.78.0/' \
	-e 's/hello\.zos\.local/hello2.zos.local/' -e '/^signatures:/,$d' "$dir/deployment.yaml" >"$dir/contract.yaml"
printf '%s\n' 'signature_requirement:' \
	'  requests: [{twin: 1, weight: 1, required: true}, {twin: 2, weight: 1, required: true}]' \
	'  weight_required: 2' >>"$dir/contract.yaml"
"$zos" sign "$dir/contract.yaml" --key "$dir/me.key" --twin 1 # the owner's approval travels with it
contract=$("$zos" chain contract create "$dir/contract.yaml" --node 1 --key "$dir/me.key" --chain "$chain")
"$zos" chain contract show "$contract" --chain "$chain"

say "twin 2 approves: the contract turns active, and the node runs it"
"$zos" chain contract approve "$contract" --key "$dir/cosigner.key" --twin 2 --chain "$chain" >/dev/null
ready gateway "$node_pid" "$dir/node.log" curl -fsS -H 'Host: hello2.zos.local' "http://127.0.0.1:$gw_port/"
curl -fsS -H 'Host: hello2.zos.local' "http://127.0.0.1:$gw_port/"
for _ in $(seq 50); do # the node's report reaches the ledger after its next pass
	"$zos" chain contract show "$contract" --chain "$chain" --json | grep -q '"state": *"running"' && break
	sleep 0.2
done
"$zos" chain contract show "$contract" --chain "$chain"
echo "the ledger's page: $chain/"

if [[ ${KEEP:-} == 1 ]]; then
	say "left running: hub pid $hub_pid, node pid $node_pid; try: $zos status --key $dir/me.key --node $nodeurl"
	trap - EXIT
else
	say "deleting the deployment, cancelling the contract, stopping the node, hub and chain (KEEP=1 leaves them running)"
fi
