#!/usr/bin/env bash
# bench/pack.sh: the packing benchmark of issue 3, in one run, side by side.
#
# Tools: zos flist pack (zosdelta: each tree of a set packed with --base the flist of the
# tree before it; on family and versions only), desync tar --index, casync make, mksquashfs -comp zstd,
# tar | zstd -3 -T2. Sets: min and big (one tree each), family (four trees into one
# store per tool) and versions (ten typescript trees into one store per tool).
# Prints a markdown table and the issue's goals with PASS/FAIL (bench/packreport.py).
#
# Usage: bash bench/pack.sh
# Environment (all optional):
#   CORPUS=/var/cache/zos-corpus   corpus trees (corpus/build-corpus.sh min big family versions)
#   OUT=/var/tmp/zos-bench         scratch output, wiped per measurement (never in the repo)
#   ZOS=/tmp/zos  BUILD=1          build zos from this checkout into $ZOS first (BUILD=0: use as is)
#   DESYNC=/var/cache/zos-bench/bin/desync
#   WORKERS=                       zos --workers (empty: zos's default, 2 per CPU)
#   SETS="min big family versions"  TOOLS="tarzstd zos zosdelta desync casync mksquashfs mksquashfs3"
#   REPS=3                         runs per tool on min and big, interleaved; best wall time kept
#                                  (mksquashfs runs once: at its default zstd level, 15, it is slow;
#                                  mksquashfs3 is the same at -Xcompression-level 3, the level of tar|zstd -3 and of zos)
#   RESULTS=$OUT/results.tsv       raw measurements (one line per tool and set)
#   OUTFS=ext4                     where every tool writes its store: ext4 (default), a fresh ext4
#                                  (mkfs defaults, so with a journal) made for this run in
#                                  $OUT/outfs.img on a loop device (direct I/O), as root; dir: $OUT
#                                  itself. Why: this VM's root ext4 has no journal, and on ext4
#                                  without one, creating a file skips every free inode of its group
#                                  deleted less than 60 s ago, 360 s if its inode table block is
#                                  dirty (recently_deleted() in fs/ext4/ialloc.c). The chunk stores
#                                  create a file per chunk, so on the root they paid for whatever
#                                  was deleted in the minutes before (earlier runs, other work):
#                                  zos's system time went from 0.6 to 2.3 s between runs of the same
#                                  build. A fresh file system has no deleted inodes, and a journal, as
#                                  users' file systems do; tar|zstd and the others write there too.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CORPUS=${CORPUS:-/var/cache/zos-corpus}
OUT=${OUT:-/var/tmp/zos-bench}
ZOS=${ZOS:-/tmp/zos}
BUILD=${BUILD:-1}
DESYNC=${DESYNC:-/var/cache/zos-bench/bin/desync}
WORKERS=${WORKERS:-}
SETS=${SETS:-"min big family versions"}
TOOLS=${TOOLS:-"tarzstd zos zosdelta desync casync mksquashfs mksquashfs3"}
REPS=${REPS:-3}
RESULTS=${RESULTS:-$OUT/results.tsv}
OUTFS=${OUTFS:-ext4}

log() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }
die() { printf 'pack.sh: %s\n' "$*" >&2; exit 1; }

case "$OUT" in "$REPO"|"$REPO"/*) die "OUT=$OUT is inside the repository; use a scratch directory" ;; esac
[ -x /usr/bin/time ] || die "/usr/bin/time missing (apt-get install time)"
command -v python3 >/dev/null || die "python3 missing"

# Trees of each set, as paths relative to $CORPUS.
set_trees() {
	case "$1" in
	min | big) echo "$1" ;;
	family) echo family/base family/py family/cc family/web ;;
	versions) (cd "$CORPUS" && ls -d versions/typescript-* | sort -V) ;;
	*) die "unknown set $1" ;;
	esac
}

# Tree bytes: the sum of regular-file sizes, each inode once (hardlinks are content read once).
tree_bytes() { find "$CORPUS/$1" -type f -printf '%i %s\n' | sort -u | awk '{s += $2} END {printf "%d", s}'; }
# Apparent bytes of the regular files under the given paths (directories themselves not counted).
file_bytes() { find "$@" -type f -printf '%s\n' 2>/dev/null | awk '{s += $1} END {printf "%d", s}'; }
# Warm the page cache: read every file (GNU tar skips reading when writing to /dev/null).
warm() { find "$CORPUS/$1" -type f -print0 | xargs -0 -r cat >/dev/null; }

tool_ok() {
	case "$1" in
	zos | zosdelta) [ -x "$ZOS" ] && "$ZOS" flist pack --help >/dev/null 2>&1 ;;
	desync) [ -x "$DESYNC" ] ;;
	casync) command -v casync >/dev/null ;;
	mksquashfs | mksquashfs3) command -v mksquashfs >/dev/null ;;
	tarzstd) command -v zstd >/dev/null && command -v tar >/dev/null ;;
	esac
}

# run_tool TOOL DIR TREE: pack $CORPUS/TREE; content store under DIR/store, metadata under DIR/meta.
# Every tool's output is on disk when it returns: zos syncs its store (syncfs) before it writes
# the flist, and the peers, which do not, get the same syncfs right after them, inside the timing.
run_tool() {
	pack_tool "$@" || return
	case "$1" in zos | zosdelta) ;; *) sync -f "$2/store" ;; esac
}

pack_tool() {
	local tool=$1 dir=$2 tree=$3 src="$CORPUS/$3" name
	name=$(basename "$tree")
	case "$tool" in
	zos) "$ZOS" flist pack "$src" -o "$dir/meta/$name.fl" --store "dir://$dir/store" ${WORKERS:+--workers "$WORKERS"} ;;
	zosdelta)
		# The tree packed just before in this set is the base.
		local base
		base=$(cat "$dir/last" 2>/dev/null || true)
		"$ZOS" flist pack "$src" -o "$dir/meta/$name.fl" --store "dir://$dir/store" ${WORKERS:+--workers "$WORKERS"} ${base:+--base "$base"} &&
			echo "$dir/meta/$name.fl" >"$dir/last"
		;;
	desync) "$DESYNC" tar --index -s "$dir/store" "$dir/meta/$name.caidx" "$src" ;;
	casync) casync make --store="$dir/store" "$dir/meta/$name.caidx" "$src" ;;
	mksquashfs) mksquashfs "$src" "$dir/store/$name.sqfs" -comp zstd -noappend -quiet -no-progress ;;
	mksquashfs3) mksquashfs "$src" "$dir/store/$name.sqfs" -comp zstd -Xcompression-level 3 -noappend -quiet -no-progress ;;
	tarzstd) tar -C "$src" -cf - . | zstd -3 -T2 -q >"$dir/store/$name.tar.zst" ;;
	esac
}
export -f run_tool pack_tool
export CORPUS ZOS DESYNC WORKERS

# measure TOOL SET REP: one measurement; appends a line to $RESULTS.
#   tool set rep trees tree_bytes wall_s cpu_s store_bytes meta_bytes status message
measure() {
	local tool=$1 set=$2 rep=$3 dir="$OUT/run/$1-$2-$3" tree wall=0 cpu=0 tb=0 n=0 status=ok msg=""
	local -a trees
	read -r -a trees <<<"$(set_trees "$set" | tr '\n' ' ')"
	mkdir -p "$dir/store" "$dir/meta" "$dir/log"
	if ! tool_ok "$tool"; then
		status=missing msg="$tool not available"
	else
		for tree in "${trees[@]}"; do
			warm "$tree"
			# Flush what earlier measurements wrote, so that no tool's own sync
			# (zos syncs its dir store before writing the flist) pays for another's data.
			sync
			local name t
			name=$(basename "$tree")
			if ! /usr/bin/time -f '%e %U %S' -o "$dir/log/$name.time" \
				bash -o pipefail -c 'run_tool "$@"' _ "$tool" "$dir" "$tree" \
				>"$dir/log/$name.out" 2>"$dir/log/$name.err"; then
				status=FAIL
				msg="$tree: $(grep -v '^Command exited' "$dir/log/$name.err" | grep -v '^[[:space:]]*$' | tail -n 3 | tr '\n\t' '  ' | cut -c1-300)"
				log "$tool $set FAILED on $tree: $msg"
				cp -r "$dir/log" "$OUT/failed-$tool-$set-$name" 2>/dev/null || true
				break
			fi
			t=$(tail -n 1 "$dir/log/$name.time")
			wall=$(awk -v a="$wall" -v t="$t" 'BEGIN {split(t, f, " "); printf "%.2f", a + f[1]}')
			cpu=$(awk -v a="$cpu" -v t="$t" 'BEGIN {split(t, f, " "); printf "%.2f", a + f[2] + f[3]}')
			n=$((n + 1))
		done
		if [ "$tool" = zos ] && [ "$rep" = 1 ] && [ -s "$dir/log/$name.out" ]; then
			# Keep zos's own summary of the last tree for the report.
			cp "$dir/log/$name.out" "$OUT/zos-$set.summary"
		fi
	fi
	for tree in "${trees[@]}"; do tb=$((tb + ${TREE_BYTES[$tree]})); done
	local sb mb
	sb=$(file_bytes "$dir/store")
	mb=$(file_bytes "$dir/meta")
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$set" "$rep" "${#trees[@]}" "$tb" \
		"$wall" "$cpu" "$sb" "$mb" "$status" "$msg" >>"$RESULTS"
	log "$tool $set rep $rep: $status wall ${wall}s cpu ${cpu}s store $sb meta $mb"
	# Outputs stay until the end of the run: on ext4, creating files soon after
	# deleting many (a previous tool's store) walks the freed inodes
	# (recently_deleted() in ialloc.c) and costs the chunk stores, which create
	# one file per chunk, up to 2x; no user packs right after a mass delete.
}

mkdir -p "$OUT"
OUTIMG=$OUT/outfs.img
# outfs_down unmounts and detaches the run's file system (OUTFS=ext4), if it is there.
outfs_down() {
	if mountpoint -q "$OUT/run"; then umount "$OUT/run"; fi
	local dev
	for dev in $(losetup -j "$OUTIMG" -O NAME -n 2>/dev/null); do losetup -d "$dev"; done
	rm -f "$OUTIMG"
}
case "$OUTFS" in
ext4)
	for c in mkfs.ext4 losetup mountpoint; do command -v "$c" >/dev/null || die "OUTFS=ext4 needs $c (or OUTFS=dir)"; done
	[ "$(id -u)" = 0 ] || die "OUTFS=ext4 needs root to mount a loop device (or OUTFS=dir)"
	outfs_down
	rm -rf "${OUT:?}/run" "$OUT"/failed-* "$OUT"/zos-*.summary
	truncate -s 40G "$OUTIMG" # sparse: blocks are taken only as the tools write
	mkfs.ext4 -q -F "$OUTIMG"
	mkdir -p "$OUT/run"
	mount "$(losetup --direct-io=on -f --show "$OUTIMG")" "$OUT/run"
	trap outfs_down EXIT
	OUTFS_DESC="a fresh ext4 with a journal on a loop device, made for this run"
	;;
dir)
	if [ -e "$OUT/run" ] || compgen -G "$OUT/failed-*" >/dev/null; then
		log "removing the previous run's outputs, then waiting 65s for ext4 to stop treating their inodes as recently deleted"
		rm -rf "${OUT:?}/run" "$OUT"/failed-* "$OUT"/zos-*.summary
		sync
		sleep 65
	fi
	OUTFS_DESC="$(findmnt -no FSTYPE -T "$OUT") under $OUT"
	;;
*) die "OUTFS=$OUTFS: ext4 or dir" ;;
esac
: >"$RESULTS"

if [ "$BUILD" = 1 ] && [[ " $TOOLS " == *" zos "* ]]; then
	log "building zos from $REPO"
	(cd "$REPO" && go build -o "$ZOS" ./cmd/zos) || log "zos build failed; zos rows will say missing"
fi
ZOS_REV=$(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null)$(cd "$REPO" && git diff --quiet HEAD -- cmd internal 2>/dev/null || echo "+dirty")

declare -A TREE_BYTES
for set in $SETS; do
	for tree in $(set_trees "$set"); do
		[ -d "$CORPUS/$tree" ] || die "missing tree $CORPUS/$tree (run corpus/build-corpus.sh)"
		TREE_BYTES[$tree]=$(tree_bytes "$tree")
	done
done

start=$(date +%s)
for set in $SETS; do
	reps=1
	case "$set" in min | big) reps=$REPS ;; esac
	for rep in $(seq 1 "$reps"); do
		for tool in $TOOLS; do
			[ "$tool" = mksquashfs ] && [ "$rep" -gt 1 ] && continue
			[ "$tool" = zosdelta ] && { [ "$set" = min ] || [ "$set" = big ]; } && continue # one tree: same as zos
			measure "$tool" "$set" "$rep"
		done
	done
done
elapsed=$(($(date +%s) - start))
if [ "$OUTFS" = ext4 ]; then outfs_down; else rm -rf "${OUT:?}/run"; fi

python3 "$REPO/bench/packreport.py" "$RESULTS" \
	--date "$(date -u +%Y-%m-%dT%H:%MZ)" --cores "$(nproc)" --workers "${WORKERS:-default (2 per CPU)}" \
	--zos-rev "$ZOS_REV" --elapsed "$elapsed" --reps "$REPS" --load "$(cut -d' ' -f1-3 /proc/loadavg)" --outfs "$OUTFS_DESC"
