#!/usr/bin/env python3
"""Turns the benchmark's raw rows into the table it prints.

results.tsv: round server workload qps cpu_seconds run_seconds
latency.tsv: server workload p50_us p99_us
For each (workload, server): median q/s with min-max over rounds, q/s per server core
(q/s divided by the server's CPU share over the run), CPU microseconds per query, p50/p99 at a
fixed rate, and the ratio of Meridian's per-core rate to the server's."""
import statistics
import sys
from collections import defaultdict


def main(results_path, latency_path):
    runs = defaultdict(list)
    for line in open(results_path):
        rnd, server, workload, qps, cpu_s, run_s = line.split()
        qps, cpu_s, run_s = float(qps), float(cpu_s), float(run_s)
        share = cpu_s / run_s if run_s > 0 else 0.0
        per_core = qps / share if share > 0 else 0.0
        us_per_q = cpu_s * 1e6 / (qps * run_s) if qps > 0 else 0.0
        runs[(workload, server)].append((qps, per_core, us_per_q, share))
    lat = {}
    try:
        for line in open(latency_path):
            server, workload, p50, p99 = line.split()
            lat[(workload, server)] = (float(p50), float(p99))
    except FileNotFoundError:
        pass

    workloads = []
    for (w, _s) in runs:
        if w not in workloads:
            workloads.append(w)
    header = f"{'workload':<10} {'server':<9} {'q/s (min-max)':>24} {'q/s per core':>13} {'us CPU/q':>9} {'CPU':>5} {'p50 us':>7} {'p99 us':>7} {'meridian/x':>10}"
    print(header)
    print("-" * len(header))
    for w in workloads:
        servers = [s for (ww, s) in runs if ww == w]
        med = {s: statistics.median(r[1] for r in runs[(w, s)]) for s in servers}
        for s in servers:
            rows = runs[(w, s)]
            qps = [r[0] for r in rows]
            q_med = statistics.median(qps)
            us = statistics.median(r[2] for r in rows)
            share = statistics.median(r[3] for r in rows)
            p50, p99 = lat.get((w, s), (float("nan"), float("nan")))
            ratio = ""
            if s != "meridian" and "meridian" in med and med[s] > 0:
                ratio = f"{med['meridian'] / med[s]:.2f}x"
            print(
                f"{w:<10} {s:<9} {q_med:>10.0f} ({min(qps):>6.0f}-{max(qps):>6.0f}) {med[s]:>13.0f} {us:>9.2f} {share * 100:>4.0f}% {p50:>7.0f} {p99:>7.0f} {ratio:>10}"
            )
        print()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
