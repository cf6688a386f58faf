#!/usr/bin/env python3
"""Render bench/pack.sh measurements as a markdown table plus the goals of issue 3.

Input: the TSV written by pack.sh, one line per measurement:
  tool set rep trees tree_bytes wall_s cpu_s store_bytes meta_bytes status message
For sets measured several times (min, big) the run with the smallest wall time is kept.
"""
import argparse
import csv
import sys

TOOLS = ["zos", "zosdelta", "desync", "casync", "mksquashfs", "mksquashfs3", "tarzstd"]
LABEL = {
    "zos": "zos flist pack",
    "zosdelta": "zos flist pack --base PREVIOUS",
    "desync": "desync tar --index",
    "casync": "casync make",
    "mksquashfs": "mksquashfs -comp zstd",
    "mksquashfs3": "mksquashfs -comp zstd -Xcompression-level 3",
    "tarzstd": "tar \\| zstd -3 -T2",
}
SETS = ["min", "big", "family", "versions"]
SET_LABEL = {
    "min": "min",
    "big": "big",
    "family": "family (4 trees, one store)",
    "versions": "versions (10 trees, one store)",
}
NO_META = {"mksquashfs", "mksquashfs3", "tarzstd"}  # output is one file: store and metadata at once


def load(path):
    runs = {}
    with open(path, newline="") as f:
        for rec in csv.reader(f, delimiter="\t"):
            if not rec:
                continue
            rec += [""] * (11 - len(rec))
            tool, set_, rep, trees, tb, wall, cpu, sb, mb, status, msg = rec[:11]
            runs.setdefault((tool, set_), []).append(dict(
                tool=tool, set=set_, rep=int(rep), trees=int(trees), tree_bytes=int(tb),
                wall=float(wall), cpu=float(cpu), store=int(sb), meta=int(mb),
                status=status, msg=msg))
    best = {}
    for key, rs in runs.items():
        bad = [r for r in rs if r["status"] != "ok"]
        if bad:
            r = dict(bad[0])
            r["nruns"] = len(rs)
            best[key] = r
            continue
        r = dict(min(rs, key=lambda r: r["wall"]))
        r["nruns"] = len(rs)
        best[key] = r
    return best


def ok(r):
    return r is not None and r["status"] == "ok"


def mbps(r):
    return r["tree_bytes"] / 1e6 / r["wall"] if r["wall"] > 0 else float("inf")


def fmt_ratio(x):
    return "%.2fx" % x


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--date", default="")
    ap.add_argument("--cores", default="")
    ap.add_argument("--workers", default="")
    ap.add_argument("--zos-rev", default="")
    ap.add_argument("--elapsed", default="")
    ap.add_argument("--reps", default="")
    ap.add_argument("--load", default="")
    ap.add_argument("--outfs", default="")
    a = ap.parse_args()
    best = load(a.results)
    out = []
    w = out.append

    w("## Packing (bench/pack.sh)")
    w("")
    w("Run %s on %s cores (zos --workers %s, zos %s); whole run %ss; load average at the end: %s."
      % (a.date, a.cores, a.workers, a.zos_rev, a.elapsed, a.load))
    if a.outfs:
        w("Every tool wrote its store to %s (bench/pack.sh: OUTFS)." % a.outfs)
    w("MB = 10^6 bytes. Tree bytes = sum of regular-file sizes, each inode once (`du -sb`, which also counts directories, gives about 1%% more). Store = apparent bytes of the files "
      "a tool writes as its content store (for mksquashfs and tar|zstd: the image / archive); "
      "metadata = index files (.fl, .caidx). Wall and CPU (user+sys) are summed over the trees "
      "of a set; on min and big each tool ran %s times interleaved (mksquashfs at its default level 15 once) and the "
      "fastest run is shown. Ratios compare with tar|zstd on the same set in this run." % a.reps)
    w("")
    w("| tool | tree | wall s | CPU s | MB/s | store MB | metadata KB | speed vs tar\\|zstd "
      "| store vs tar\\|zstd | store vs min(desync, tar.zst) |")
    w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in SETS:
        base = best.get(("tarzstd", s))
        ds = best.get(("desync", s))
        peers = [r["store"] for r in (ds, base) if ok(r)]
        for t in TOOLS:
            r = best.get((t, s))
            if r is None:
                continue
            tree = "%s, %.1f MB" % (SET_LABEL[s], r["tree_bytes"] / 1e6)
            if not ok(r):
                w("| %s | %s | %s: %s | | | | | | | |" % (LABEL[t], tree, r["status"],
                                                           r["msg"].replace("|", "\\|")))
                continue
            speed = fmt_ratio(mbps(r) / mbps(base)) if ok(base) else ""
            st = fmt_ratio(r["store"] / base["store"]) if ok(base) and base["store"] else ""
            uni = ""
            if s in ("family", "versions") and len(peers) == 2 and min(peers):
                uni = fmt_ratio(r["store"] / min(peers))
            meta = "—" if t in NO_META else "%.1f" % (r["meta"] / 1e3)
            w("| %s | %s | %.2f | %.2f | %.1f | %.2f | %s | %s | %s | %s |" % (
                LABEL[t], tree, r["wall"], r["cpu"], mbps(r), r["store"] / 1e6, meta,
                speed, st, uni))
    w("")
    w("For family and versions, tar|zstd's store is the sum of the per-tree .tar.zst files and "
      "mksquashfs's the sum of the per-tree images (neither shares content across trees).")
    w("")

    w("### Goals (issue 3)")
    w("")
    zb, tb = best.get(("zos", "big")), best.get(("tarzstd", "big"))
    if ok(zb) and ok(tb):
        x = mbps(zb) / mbps(tb)
        w("- %s: zos pack speed >= tar|zstd speed on big: %.1f vs %.1f MB/s = %.2fx"
          % ("PASS" if x >= 1 else "FAIL", mbps(zb), mbps(tb), x))
    else:
        w("- FAIL: zos pack speed >= tar|zstd speed on big: no measurement (%s)" % why(zb, tb))
    if ok(zb):
        lim = zb["tree_bytes"] / 1000
        w("- %s: zos metadata <= tree bytes / 1000 on big: %.1f KB vs %.1f KB limit = %.2fx the limit"
          % ("PASS" if zb["meta"] <= lim else "FAIL", zb["meta"] / 1e3, lim / 1e3, zb["meta"] / lim))
    else:
        w("- FAIL: zos metadata <= tree bytes / 1000 on big: no measurement (%s)" % why(zb))
    dv, tv = (best.get((t, "versions")) for t in ("desync", "tarzstd"))
    for tool, how in (("zosdelta", "each version packed with --base the previous one"),
                      ("zos", "no --base, for reference")):
        zv = best.get((tool, "versions"))
        if ok(zv) and ok(dv) and ok(tv):
            m = min(dv["store"], tv["store"])
            x = zv["store"] / m
            w("- %s: zos versions unified store <= 0.75 x min(desync unified %.1f MB, sum tar.zst %.1f MB)"
              ", %s: %.1f MB = %.2fx (limit %.1f MB)"
              % ("PASS" if x <= 0.75 else "FAIL", dv["store"] / 1e6, tv["store"] / 1e6, how,
                 zv["store"] / 1e6, x, 0.75 * m / 1e6))
        else:
            w("- FAIL: zos versions unified store <= 0.75 x min(desync, sum tar.zst), %s: no measurement (%s)"
              % (how, why(zv, dv, tv)))
    print("\n".join(out))


def why(*rs):
    parts = []
    for r in rs:
        if r is None:
            parts.append("not run")
        elif r["status"] != "ok":
            parts.append("%s %s: %s" % (r["tool"], r["status"], r["msg"]))
    return "; ".join(parts) or "?"


if __name__ == "__main__":
    sys.exit(main())
