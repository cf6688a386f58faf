#!/usr/bin/env python3
"""Render bench/node.sh measurements as markdown tables plus the goal of issue 6.

Input: the JSON lines written by node.sh, one object per measurement, with a "part" of info,
deploy or density (see node.sh for the fields of each).
"""
import argparse
import json
import statistics

MB = 1e6
ROWS = ["zos", "zostrace", "oci"]
LABEL = {
    "zos": "zos: cold node, image on the hub (lazy mount)",
    "zostrace": "zos: the same + a recorded trace the hub serves beside the flist",
    "oci": "conventional: skopeo copy from the registry + umoci unpack + runc run",
}
GOAL = 10.0


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def med(xs):
    xs = [x for x in xs if x is not None and x != ""]
    return statistics.median(xs) if xs else None


def fmt(x, f="%.2f"):
    return "-" if x is None else f % x


def esc(s):
    return str(s).replace("|", "\\|")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    for a in ["date", "cores", "mem", "zos-rev", "elapsed", "load", "reps"]:
        ap.add_argument("--" + a, default="")
    ap.add_argument("--rate-kbps", type=float, default=12500)
    ap.add_argument("--latency-ms", default="20")
    args = ap.parse_args()
    recs = load(args.results)

    print(f"node benchmark, {args.date}, {args.cores} cores, {args.mem}, zos {args.zos_rev}, "
          f"{args.elapsed} s; load: {args.load}")
    print()

    for r in recs:
        if r.get("part") == "warning":
            print(f"WARNING: {esc(r.get('msg', ''))}")
            print()
    info = [r for r in recs if r.get("part") == "info"]
    dep = [r for r in recs if r.get("part") == "deploy"]
    if info or dep:
        i = info[0] if info else {}
        mbit = args.rate_kbps * 8 / 1000
        print(f"### Deploy to running: {i.get('image', '?')} from a cold node, "
              f"{mbit:g} Mbit/s + {args.latency_ms} ms")
        print()
        if i:
            print(f"Image {i.get('image')}: {i.get('tree_bytes', 0) / MB:.1f} MB of files, "
                  f"OCI layer {i.get('layer_bytes', 0) / MB:.1f} MB (gzip), flist {i.get('fl_bytes', 0) / MB:.2f} MB, "
                  f"digest {str(i.get('digest', ''))[:12]}. Ready = the container printed its marker "
                  f"after `{esc(i.get('ready_cmd', ''))}`.")
            print()
        conv = med([r["wall"] for r in dep if r.get("row") == "oci" and r.get("status") == "ok"])
        print("| path | reps | ready s (median) | min-max | `zos deploy --wait` s | flist fetched / mounted / started s "
              "| pull / unpack s | MB over the link | vs conventional |")
        print("|---|---:|---:|---|---:|---|---|---:|---:|")
        goal = None
        for row in ROWS:
            rs = [r for r in dep if r.get("row") == row]
            if not rs:
                continue
            okr = [r for r in rs if r.get("status") == "ok"]
            bad = [r for r in rs if r.get("status") != "ok"]
            if not okr:
                print(f"| {LABEL[row]} | 0/{len(rs)} | {rs[0].get('status')}: {esc(rs[0].get('msg', ''))} | | | | | | |")
                continue
            walls = [r["wall"] for r in okr]
            m = med(walls)
            ratio = conv / m if conv and m else None
            if row == "zos":
                goal = ratio
            times = "-"
            pull = "-"
            wait = "-"
            if row != "oci":
                wait = fmt(med([r.get("t_wait") for r in okr]))
                times = " / ".join(fmt(med([r.get(k) for r in okr])) for k in ["t_fetched", "t_mounted", "t_started"])
            else:
                tp = med([r.get("t_pull") for r in okr])
                tu = med([r.get("t_unpack") for r in okr])
                pull = f"{fmt(tp)} / {fmt(tu - tp if tu is not None and tp is not None else None)}"
            reps = f"{len(okr)}" + (f" (+{len(bad)} failed)" if bad else "")
            print(f"| {LABEL[row]} | {reps} | **{m:.2f}** | {min(walls):.2f}-{max(walls):.2f} | {wait} | {times} | "
                  f"{pull} | {med([r['bytes'] for r in okr]) / MB:.1f} | "
                  f"{'%.1fx' % ratio if ratio else '-'} |")
        print()
        for r in dep:
            if r.get("status") != "ok":
                print(f"- {r.get('row')} rep {r.get('rep')}: {r.get('status')}: {esc(r.get('msg', ''))}")
        tb = [r.get("trace_bytes", 0) for r in dep if r.get("row") == "zostrace" and r.get("status") == "ok"]
        if tb:
            print(f"- the trace (fetched by the node from the hub, over the link): {tb[0] / 1000:.1f} KB")
        print(f"- every rep: " + "; ".join(
            f"{r['row']} {r['rep']}: {r.get('wall', 0):.2f}" for r in dep if r.get("status") == "ok"))
        if goal is not None:
            print()
            print(f"GOAL deploy-to-running >= {GOAL:g}x faster than the conventional path: "
                  f"{'PASS' if goal >= GOAL else 'FAIL'} ({goal:.1f}x)")
        print()

    den = [r for r in recs if r.get("part") == "density"]
    if den:
        s = next((r for r in den if r.get("kind") == "summary"), {})
        pts = [r for r in den if r.get("kind") == "point"]
        deps = [r for r in den if r.get("kind") == "deploy"]
        n = s.get("n", 0)
        print(f"### Density: containers of {s.get('image', '?')} (`sleep infinity`), one deployment each")
        print()
        print("| containers | `zos deploy --wait` s | agent RSS MB | agent PSS MB | mount servers | their RSS MB "
              "| their PSS MB | containers' cgroups MB | MemAvailable MB |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for i, p in enumerate(pts):
            d = fmt(p.get("deploy_s") or None)
            if i == len(pts) - 1 and i > 0 and not p.get("deploy_s"):
                d = f"(after {s.get('idle_s')} s idle)"
            print(f"| {p['n']} | {d} | {p['agent_rss_kb'] / 1024:.1f} | {p.get('agent_pss_kb', 0) / 1024:.1f} | "
                  f"{p['mount_servers']} | {p['mount_rss_kb'] / 1024:.1f} | {p.get('mount_pss_kb', 0) / 1024:.1f} | "
                  f"{p['cgroup_bytes'] / 2**20:.1f} | {p['avail_mb']} |")
        print()
        if pts and n:
            p0, pn = pts[0], pts[-1]
            times = [r["deploy_s"] for r in deps]
            first = times[: min(10, len(times))]
            last = times[-min(10, len(times)):]
            print(f"- {n} containers started ({s.get('running', '?')} running at the end; cap {s.get('max')}; "
                  f"{esc(s.get('msg') or 'the cap was reached')}), in {s.get('total_s', 0):.1f} s: "
                  f"{s.get('total_s', 0) / n:.2f} s per container; `zos deploy --wait` median "
                  f"{med(first):.2f} s over the first {len(first)}, {med(last):.2f} s over the last {len(last)}")
            print(f"- agent: RSS {p0['agent_rss_kb'] / 1024:.1f} MB at 0, {pn['agent_rss_kb'] / 1024:.1f} MB at {n}: "
                  f"**{(pn['agent_rss_kb'] - p0['agent_rss_kb']) / n:.0f} kB per container**")
            if pn["mount_servers"]:
                k = pn["mount_servers"]
                print(f"- image mount servers (one `zos flist mount` process per image, shared by its containers): {k} processes, "
                      f"RSS {pn['mount_rss_kb'] / 1024:.1f} MB ({pn['mount_rss_kb'] / k / 1024:.1f} MB each), "
                      f"PSS {pn.get('mount_pss_kb', 0) / 1024:.1f} MB: **{pn.get('mount_pss_kb', 0) / n / 1024:.2f} MB per container** "
                      f"(RSS counts the shared zos binary in every process; PSS shares it out); "
                      f"anonymous memory {pn.get('mount_anon_kb', 0) / k / 1024:.1f} MB each")
            print(f"- containers' cgroups (memory.current: the processes and the page cache charged to them): "
                  f"{pn['cgroup_bytes'] / 2**20 / n:.2f} MB per container")
            acc = ((pn["agent_rss_kb"] - p0["agent_rss_kb"]) / 1024 + pn.get("mount_pss_kb", 0) / 1024
                   + pn["cgroup_bytes"] / 2**20) / n
            print(f"- accounted per container: agent growth + mount server PSS + cgroup memory = **{acc:.1f} MB**")
            per = (s.get("avail0_mb", 0) - pn["avail_mb"]) / n
            print(f"- MemAvailable: {s.get('avail0_mb')} MB at 0, {pn['avail_mb']} MB at {n}: {per:.1f} MB per container, "
                  f"all costs included (kernel memory too), but other processes on a shared machine move it by "
                  f"hundreds of MB: meaningful only for large N")
            total = s.get("avail0_mb", 0)
            for what, cost in [("accounted", acc), ("MemAvailable", per)]:
                if cost > 0 and n >= 50:
                    print(f"- extrapolated (not measured), by the {what} cost: the {total} MB available at 0 would hold "
                          f"about {total / cost:.0f} such containers")
            print(f"- agent CPU while idle with {n} containers: {s.get('idle_cpu_s')} s in {s.get('idle_s')} s")
            print(f"- deleting them all: {s.get('delete_s', 0):.1f} s; mount servers left: {s.get('mount_servers_after_delete')}")
        if s.get("status") not in (None, "ok"):
            print(f"- {s.get('status')}: {esc(s.get('msg', ''))}")
        print()


if __name__ == "__main__":
    main()
