#!/usr/bin/env bash
# bench/chain.sh: the ledger benchmark of issue 7: transactions per second and commit latency
# with 1 and 4 validators (CometBFT in-process over the ledger's state machine, all validators
# in one process on loopback), at the default block time (500 ms) and at 100 ms. See
# bench/chainbench/main.go for what is measured.
#
# Usage: bash bench/chain.sh
# Environment (optional): TXS=10000 INFLIGHT=4000 (below CometBFT's mempool of 5000 transactions:
#   with more in flight the excess is refused with "mempool is full") IDLE=20
#   BLOCK_TIMES="500ms 100ms" VALIDATORS=1,4
set -euo pipefail
exec </dev/null
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TXS=${TXS:-10000}
INFLIGHT=${INFLIGHT:-4000}
IDLE=${IDLE:-20}
BLOCK_TIMES=${BLOCK_TIMES:-"500ms 100ms"}
VALIDATORS=${VALIDATORS:-1,4}
BIN=$(mktemp -d)
trap 'rm -rf "$BIN"' EXIT
(cd "$REPO" && go build -o "$BIN/chainbench" ./bench/chainbench)
echo "chain benchmark, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, zos $(git -C "$REPO" rev-parse --short HEAD), load $(cut -d' ' -f1-3 /proc/loadavg)"
for bt in $BLOCK_TIMES; do
	echo
	echo "### block time $bt"
	echo
	"$BIN/chainbench" -validators "$VALIDATORS" -txs "$TXS" -inflight "$INFLIGHT" -idle "$IDLE" -block-time "$bt"
done
