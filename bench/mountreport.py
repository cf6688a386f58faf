#!/usr/bin/env python3
"""Render bench/mount.sh measurements as markdown tables plus the goals of issue 4.

Input: the JSON lines written by mount.sh, one object per measurement, with a "part" of
info, start, read or meta (see mount.sh for the fields of each).
"""
import argparse
import json

MB = 1e6
START_ROWS = ["zos", "zostrace", "zosbundle", "zostracewide", "zoswarm", "tar", "tarzst", "oci"]
START_LABEL = {
    "zos": "zos lazy mount",
    "zostrace": "zos lazy mount + recorded trace",
    "zosbundle": "zos lazy mount + recorded trace, streaming its start bundle",
    "zostracewide": "zos lazy mount + recorded trace, --prefetch-fetchers %s",
    "zoswarm": "zos flist warm, then mount",
    "tar": "curl big.tar \\| tar -x",
    "tarzst": "curl big.tar.zst \\| zstd -d \\| tar -x",
    "oci": "registry: skopeo copy + umoci unpack + runc run",
}
CONVENTIONAL = ["tar", "tarzst", "oci"]
READ_ROWS = [
    ("ext4disk", "-", "ext4, on disk (page cache dropped)"),
    ("ext4cache", "-", "ext4, page cache"),
    ("zoscold", "fast", "zos cold, unthrottled link"),
    ("zoscold", "100M", "zos cold, 100 Mbit/s link"),
    ("ext4same", "-", "ext4, the same bytes read directly: the cache's whole file (page cache dropped)"),
    ("zosdisk", "fast", "zos warm: new mount over a full disk cache"),
    ("zoscache", "fast", "zos warm: same mount after a full read"),
]


def load(path):
    recs = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                recs.append(json.loads(line))
    return recs


def ok(r):
    return r is not None and r.get("status") == "ok"


def esc(s):
    return str(s).replace("|", "\\|")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--date", default="")
    ap.add_argument("--cores", default="")
    ap.add_argument("--zos-rev", default="")
    ap.add_argument("--elapsed", default="")
    ap.add_argument("--rate-kbps", type=float, default=12500)
    ap.add_argument("--latency-ms", default="20")
    ap.add_argument("--load", default="")
    ap.add_argument("--cold-rand-ios", default="")
    ap.add_argument("--disk-rand-ios", default="")
    ap.add_argument("--wide-prefetch", default="16")
    a = ap.parse_args()

    def label(row):
        return START_LABEL[row].replace("%s", a.wide_prefetch)

    recs = load(a.results)
    info = next((r for r in recs if r["part"] == "info" and "row" not in r), {})
    recompressed = [r for r in recs if r["part"] == "info" and r.get("row") == "recompress"]
    tree = info.get("tree_bytes", 0)
    mbit = a.rate_kbps * 8 / 1000
    links = {"100M": "%g Mbit/s + %s ms" % (mbit, a.latency_ms), "fast": "unthrottled"}
    out = []
    w = out.append
    goals = []

    w("Run %s on %s cores (zos %s); whole run %ss; load average %s." % (
        a.date, a.cores, a.zos_rev, a.elapsed, a.load))
    served = {"hub": "the chunks served by `zos hub serve` (batched gets), the flists and "
              "tarballs by a static file server",
              "static": "the chunks, flists and tarballs served by a static file server"}
    w("MB = 10^6 bytes. Links: the store (or registry) on loopback behind toxiproxy, %s; "
      "`100M` = %s KB/s shared by all connections, %s ms added to every response; `fast` = the same "
      "proxy without toxics. Image `big`: %.1f MB of files (tree), big.tar %.1f MB, "
      "big.tar.zst %.1f MB, zos store %.1f MB, flist %.1f KB."
      % (served.get(info.get("chunks", "static"), "?"), int(a.rate_kbps), a.latency_ms, tree / MB, info.get("tar_bytes", 0) / MB,
         info.get("tarzst_bytes", 0) / MB, info.get("store_bytes", 0) / MB,
         info.get("fl_bytes", 0) / 1e3))
    for r in recompressed:
        w("The hub re-sealed %s's chunks at zstd level %s once it was pushed (`--recompress-level`), "
          "in %.0f s, saving %.1f MB of blobs; every row reads the store after that%s."
          % (r["name"], r["level"], float(r["took"]), int(r["saved_bytes"]) / MB,
             " (the store size above is after it)" if r["name"] == "big" else ""))
    w("")

    # ---- cold start ----
    start = {(r["row"], r["link"]): r for r in recs if r["part"] == "start"}
    if start:
        w("### Cold start on big (python3 -c 'import json'; gcc --version; node -e 1; java -version)")
        w("")
        w("From nothing on the node to the end of the four commands, run one after the other "
          "in a chroot (runc for the registry path). Ready = when the mount (or the pull, the "
          "unpack) was done. Fetched = bytes through the proxy; share = fetched / tree bytes; "
          "HTTP requests = requests the store served (zos rows: one per chunk fetched or batch "
          "of chunks, plus the flist and its trace). Speedup (zos rows) = that conventional path's wall time / this row's.")
        w("")
        w("| path | link | wall s | ready s | python s | gcc s | node s | java s | fetched MB "
          "| share of image | HTTP requests | speedup vs tar | vs tar.zst | vs registry |")
        w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for link in ("100M", "fast"):
            for row in START_ROWS:
                r = start.get((row, link))
                if r is None:
                    continue
                if not ok(r):
                    w("| %s | %s | %s: %s | | | | | | | | | | | |" % (
                        label(row), links[link], r["status"], esc(r.get("msg", ""))))
                    continue
                ready = ""
                if row.startswith("zos"):
                    ready = "%.2f" % r.get("t_ready", 0)
                elif row == "oci":
                    ready = "pulled %.2f, unpacked %.2f" % (r.get("t_pull", 0), r.get("t_unpack", 0))
                ts = ["%.2f" % r["t_" + k] if "t_" + k in r else "" for k in
                      ("python", "gcc", "node", "java")]
                sp = []
                for c in CONVENTIONAL:
                    cr = start.get((c, link))
                    sp.append("%.1fx" % (cr["wall"] / r["wall"])
                              if ok(cr) and row.startswith("zos") else "")
                w("| %s | %s | %.2f | %s | %s | %.1f | %.1f%% | %s | %s |" % (
                    label(row), links[link], r["wall"], ready, " | ".join(ts),
                    r["bytes"] / MB, 100 * r["bytes"] / tree if tree else 0,
                    r.get("requests", ""), " | ".join(sp)))
        w("")
        for row in ("zos", "zostrace", "zosbundle", "zostracewide"):
            z = start.get((row, "100M"))
            what = label(row)
            if z is None:
                continue
            if not ok(z):
                if z is not None and z.get("status") == "missing":
                    goals.append("- not available: %s at 100 Mbit/s (%s)" % (what, esc(z.get("msg", ""))))
                else:
                    goals.append("- FAIL: %s >= 10x faster than the conventional path at 100 Mbit/s: "
                                 "no measurement (%s)" % (what, esc((z or {}).get("msg", "not run"))))
                continue
            for c in CONVENTIONAL:
                cr = start.get((c, "100M"))
                if cr is None:
                    continue  # not part of this run
                if not ok(cr):
                    goals.append("- FAIL: %s >= 10x faster than %s at 100 Mbit/s: no measurement of %s"
                                 % (what, START_LABEL[c], START_LABEL[c]))
                    continue
                x = cr["wall"] / z["wall"]
                goals.append("- %s: %s >= 10x faster than %s at 100 Mbit/s: %.2f s vs %.2f s = %.1fx"
                             % ("PASS" if x >= 10 else "FAIL", what, START_LABEL[c], z["wall"],
                                cr["wall"], x))
            share = z["bytes"] / tree
            goals.append("- %s: %s fetches <= 10%% of the image: %.1f MB of %.1f MB = %.1f%%"
                         % ("PASS" if share <= 0.10 else "FAIL", what, z["bytes"] / MB, tree / MB,
                            100 * share))

    # ---- read throughput ----
    # Rows measured several times (alternated reps): the rep with the median bandwidth.
    reps = {}
    for r in recs:
        if r["part"] == "read":
            reps.setdefault((r["row"], r.get("link", "-"), r.get("mode", "")), []).append(r)
    rd = {}
    for k, rs in reps.items():
        good = sorted((r for r in rs if ok(r) and "bw" in r), key=lambda r: r["bw"])
        rd[k] = dict(good[len(good) // 2], reps=len(good)) if good else rs[-1]
    linkbw = {r["link"]: r["bw"] for r in recs if r["part"] == "read" and r.get("row") == "link"}
    if rd:
        pack = next((r for r in recs if r["part"] == "read" and r.get("row") == "pack"), None)
        w("### Read throughput of a 1 GiB file (fio, psync, one job)")
        w("")
        w("Sequential: 1 MiB reads from the start (the whole file, or %s); random: 4 KiB reads "
          "over the whole file for a fixed time, except on a cold mount: a fixed number of reads "
          "(%s), most of which miss (later reads would find their chunk cached). MB/s counts file bytes read; wire MB/s counts "
          "bytes through the proxy over the same time (chunks are compressed). ext4 = a "
          "loop-mounted ext4 image (direct I/O to the backing file) on this machine's disk. "
          "Right before the link's GET and before each cold zos read the store server's copy was "
          "read into its page cache, so that neither measures the server's disk."
          % ("the time limit, first", a.cold_rand_ios))
        if pack:
            w("The file: distinct corpus files concatenated; packed: %s." % esc(pack.get("msg", "").strip()))
        w("")
        w("| file system | seq MB/s | seq wire MB/s | seq vs ext4 | rand 4 KiB IOPS | rand MB/s "
          "| rand mean latency µs | rand vs ext4 |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|")
        ref = {"zoscache": "ext4cache", "zosdisk": "ext4same"}
        for row, link, label in READ_ROWS:
            cells = []
            for mode in ("seq", "rand"):
                r = rd.get((row, link, mode))
                base = rd.get((ref.get(row, ""), "-", mode))
                if r is None:
                    cells += ["", "", ""] if mode == "seq" else ["", "", "", ""]
                    continue
                if not ok(r):
                    cells += ["%s: %s" % (r["status"], esc(r.get("msg", "")))] + \
                             ([""] * 2 if mode == "seq" else [""] * 3)
                    continue
                vs = "%.2fx" % (r["bw"] / base["bw"]) if ok(base) and base["bw"] else ""
                if mode == "seq":
                    wire = ""
                    if "wire" in r and r["bw"]:
                        wire = "%.1f" % (r["wire"] / (r["io"] / r["bw"]) / MB)
                    cells += ["%.1f" % (r["bw"] / MB), wire, vs]
                else:
                    cells += ["%.0f" % r["iops"], "%.1f" % (r["bw"] / MB), "%.0f" % r["lat_us"], vs]
            w("| %s | %s |" % (label, " | ".join(cells)))
        for link in ("fast", "100M"):
            if link in linkbw:
                w("| the link itself (%s): one HTTP GET of the raw file (the server's copy in memory) | %.1f | | | | | | |"
                  % (links[link], linkbw[link] / MB))
        w("")
        whole = next((r for r in recs if r["part"] == "read" and r.get("row") == "whole"), None)
        if whole:
            w("The first mount kept the file whole in its cache (FUSE passthrough for later opens): "
              "%s whole file(s) %.1f s after the warm reads ended. Before each \"new mount\" "
              "measurement every clean page was dropped (`echo 3 > /proc/sys/vm/drop_caches`), so "
              "it reads the disk like the ext4 rows; the warm-disk rows do a fixed count of random reads (%s) "
              "without the POSIX_FADV_RANDOM hint, which would reach ext4 but not a passthrough backing file. "
              "Those two rows alternate, %s reps each, which one reads first swapping every rep (this VM's "
              "disk serves blocks read a moment before from the host's memory, 3x faster); the table "
              "shows the median rep." % (whole.get("files", "?"), float(whole.get("wait", 0)), a.disk_rand_ios,
                 rd.get(("zosdisk", "fast", "seq"), {}).get("reps", "?")))
            w("")
        for row, base, what in (("zoscache", "ext4cache", "page cache"), ("zosdisk", "ext4same", "disk")):
            for mode, lim in (("seq", 0.9), ("rand", 0.5)):
                r, b = rd.get((row, "fast", mode)), rd.get((base, "-", mode))
                name = "warm %s (%s) >= %.1fx native" % (
                    "sequential 1 MiB" if mode == "seq" else "random 4 KiB", what, lim)
                if ok(r) and ok(b):
                    x = r["bw"] / b["bw"]
                    goals.append("- %s: %s: %.1f vs %.1f MB/s = %.2fx" % (
                        "PASS" if x >= lim else "FAIL", name, r["bw"] / MB, b["bw"] / MB, x))
                else:
                    goals.append("- FAIL: %s: no measurement" % name)
        for link in ("100M", "fast"):
            r = rd.get(("zoscold", link, "seq"))
            name = "cold sequential >= 0.9x the link's bandwidth (%s)" % links[link]
            if ok(r) and link in linkbw:
                x = r["bw"] / linkbw[link]
                goals.append("- %s: %s, file bytes read: %.1f vs %.1f MB/s = %.2fx" % (
                    "PASS" if x >= 0.9 else "FAIL", name, r["bw"] / MB, linkbw[link] / MB, x))
                if r.get("wire") and r["bw"]:
                    wb = r["wire"] / (r["io"] / r["bw"])
                    x = wb / linkbw[link]
                    goals.append("- %s: %s, bytes on the wire (link use; chunks are compressed): "
                                 "%.1f vs %.1f MB/s = %.2fx" % ("PASS" if x >= 0.9 else "FAIL", name,
                                                                wb / MB, linkbw[link] / MB, x))
            elif r is not None or link in linkbw:
                goals.append("- FAIL: %s: no measurement" % name)

    # ---- metadata ----
    meta = [r for r in recs if r["part"] == "meta"]
    if meta:
        w("### Metadata on big: mount and `find MNT -ls`")
        w("")
        reps = max(r.get("rep", 1) for r in meta)
        w("Best of %d. zos: the flist is on local disk, `zos flist mount` returns once the mount "
          "is ready; cold = the first find after mounting, warm = the second on the same mount. "
          "ext4: the same tree on the loop-mounted image (mount, then find twice)." % reps)
        w("")
        w("| file system | mount s | find -ls cold s | find -ls warm s | entries |")
        w("|---|---:|---:|---:|---:|")
        best = {}
        for row in ("ext4", "zos"):
            rs = [r for r in meta if r["row"] == row and ok(r)]
            bad = [r for r in meta if r["row"] == row and not ok(r)]
            if not rs:
                if bad:
                    w("| %s | %s: %s | | | |" % (row, bad[0]["status"], esc(bad[0].get("msg", ""))))
                continue
            b = {k: min(r[k] for r in rs) for k in ("t_mount", "t_cold", "t_warm")}
            b["entries"] = rs[0]["entries"]
            best[row] = b
            w("| %s | %.3f | %.3f | %.3f | %d |" % (row, b["t_mount"], b["t_cold"], b["t_warm"],
                                                     b["entries"]))
        if "zos" in best and "ext4" in best:
            z, e = best["zos"], best["ext4"]
            w("| zos / ext4 | %.2fx | %.2fx | %.2fx | |" % tuple(
                z[k] / e[k] if e[k] else 0 for k in ("t_mount", "t_cold", "t_warm")))
        w("")

    w("### Goals (issue 4)")
    w("")
    out += goals
    print("\n".join(out))


if __name__ == "__main__":
    main()
