#!/usr/bin/env python3
"""Turns the benchmark's raw rows into the table it prints.

Usage: summarize.py RESULTS LATENCY [UNIT]   (UNIT names what is counted: q, the default, or req)

results.tsv: round server workload qps cpu_seconds run_seconds
latency.tsv: round server workload p50_us p99_us
For each (workload, server): median q/s with min-max over rounds, q/s per server core (q/s
divided by the server's CPU share over the run), CPU microseconds per query, p50/p99 at a
fixed rate (medians over rounds), and against Meridian: its per-core rate divided by the
server's, taken within each round (median, min-max), and its p99 divided by the server's
(medians)."""
import math
import statistics
import sys
from collections import defaultdict


def main(results_path, latency_path, unit="q"):
    runs = defaultdict(dict)  # (workload, server) -> round -> (qps, per_core, us_per_q, share)
    for line in open(results_path):
        rnd, server, workload, qps, cpu_s, run_s = line.split()
        qps, cpu_s, run_s = float(qps), float(cpu_s), float(run_s)
        share = cpu_s / run_s if run_s > 0 else 0.0
        per_core = qps / share if share > 0 else 0.0
        us_per_q = cpu_s * 1e6 / (qps * run_s) if qps > 0 else 0.0
        runs[(workload, server)][rnd] = (qps, per_core, us_per_q, share)
    lat = defaultdict(list)
    try:
        for line in open(latency_path):
            _rnd, server, workload, p50, p99 = line.split()
            if not math.isnan(float(p99)):
                lat[(workload, server)].append((float(p50), float(p99)))
    except FileNotFoundError:
        pass

    workloads = []
    for (w, _s) in runs:
        if w not in workloads:
            workloads.append(w)
    header = (
        f"{'workload':<9} {'server':<9} {unit + '/s (min-max)':>24} {unit + '/s per core':>12} {'us CPU/' + unit:>8} "
        f"{'CPU':>4} {'p50 us':>6} {'p99 us':>6}  {'meridian/x per core':>19} {'p99 m/x':>7}"
    )
    print(header)
    print("-" * len(header))
    for w in workloads:
        servers = [s for (ww, s) in runs if ww == w]
        ours = runs.get((w, "meridian"), {})
        p99_ours = statistics.median(p[1] for p in lat[(w, "meridian")]) if lat[(w, "meridian")] else None
        for s in servers:
            rows = runs[(w, s)]
            qps = [r[0] for r in rows.values()]
            per_core = statistics.median(r[1] for r in rows.values())
            us = statistics.median(r[2] for r in rows.values())
            share = statistics.median(r[3] for r in rows.values())
            if lat[(w, s)]:
                p50 = statistics.median(p[0] for p in lat[(w, s)])
                p99 = statistics.median(p[1] for p in lat[(w, s)])
            else:
                p50 = p99 = float("nan")
            ratio = p99_ratio = ""
            if s != "meridian":
                paired = [ours[r][1] / rows[r][1] for r in rows if r in ours and rows[r][1] > 0]
                if paired:
                    ratio = f"{statistics.median(paired):.2f}x ({min(paired):.2f}-{max(paired):.2f})"
                if p99_ours is not None and p99 > 0:
                    p99_ratio = f"{p99_ours / p99:.2f}x"
            print(
                f"{w:<9} {s:<9} {statistics.median(qps):>10.0f} ({min(qps):>6.0f}-{max(qps):>6.0f}) "
                f"{per_core:>12.0f} {us:>8.2f} {share * 100:>3.0f}% {p50:>6.0f} {p99:>6.0f}  {ratio:>19} {p99_ratio:>7}"
            )
        print()


if __name__ == "__main__":
    main(*sys.argv[1:4])
