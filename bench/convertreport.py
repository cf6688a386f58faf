#!/usr/bin/env python3
"""Render bench/convert.sh measurements as a markdown table.

Input: the TSV written by convert.sh, one line per run:
  tool rep wall_s pull_s unpack_s status message
Per tool: the median and the range of the wall times over the rounds, MB/s of the image (its
uncompressed layer tars, and its compressed layers), and the ratio to skopeo copy + umoci unpack.
"""
import argparse
import csv
import statistics
import sys

LABEL = {
    "zos": "zos flist pack docker://... --store dir://",
    "zoshub": "zos hub convert --wait (local hub)",
    "umoci": "skopeo copy + umoci unpack",
}
ORDER = ["zos", "zoshub", "umoci"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--layers", type=int, default=0)
    ap.add_argument("--gz-bytes", type=int, default=0)
    ap.add_argument("--tar-bytes", type=int, default=0)
    a = ap.parse_args()
    runs = {}
    with open(a.results, newline="") as f:
        for rec in csv.reader(f, delimiter="\t"):
            if not rec:
                continue
            rec += [""] * (7 - len(rec))
            tool, rep, wall, pull, unpack, status, msg = rec[:7]
            runs.setdefault(tool, []).append(dict(rep=int(rep), wall=float(wall), pull=float(pull or 0),
                                                  unpack=float(unpack or 0), status=status, msg=msg))
    med = {}
    for tool, rs in runs.items():
        ok = [r for r in rs if r["status"] == "ok"]
        if ok and len(ok) == len(rs):
            med[tool] = statistics.median(r["wall"] for r in ok)
    base = med.get("umoci")
    mb = lambda n: n / 1e6
    print(f"Image: {a.layers} gzip layers, {mb(a.gz_bytes):.0f} MB compressed, "
          f"{mb(a.tar_bytes):.0f} MB of layer tars uncompressed.\n")
    print("| tool | rounds | wall s (median) | min-max | MB/s (tars) | MB/s (compressed) | vs skopeo+umoci |")
    print("|---|---|---|---|---|---|---|")
    for tool in ORDER + sorted(set(runs) - set(ORDER)):
        rs = runs.get(tool)
        if not rs:
            continue
        if tool not in med:
            bad = next(r for r in rs if r["status"] != "ok")
            print(f"| {LABEL.get(tool, tool)} | {len(rs)} | {bad['status']} | | | | {bad['msg']} |")
            continue
        w = med[tool]
        walls = [r["wall"] for r in rs]
        extra = ""
        if tool == "umoci":
            extra = " (pull %.1f s + unpack %.1f s)" % (statistics.median(r["pull"] for r in rs),
                                                         statistics.median(r["unpack"] for r in rs))
        ratio = f"{base / w:.2f}x faster" if base and tool != "umoci" else ("1.00x" if tool == "umoci" else "")
        print(f"| {LABEL.get(tool, tool)} | {len(rs)} | {w:.2f}{extra} | {min(walls):.2f}-{max(walls):.2f} | "
              f"{mb(a.tar_bytes) / w:.0f} | {mb(a.gz_bytes) / w:.0f} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
