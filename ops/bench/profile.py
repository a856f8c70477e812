#!/usr/bin/env python3
"""One row of the benchmark's profile table, from a `perf record` of one server over part of
a full-load run.

Usage: profile.py SERVER WORKLOAD DIR CPU_SECONDS WINDOW_SECONDS [COUNT_SECONDS]
DIR holds `dnsperf` (the client's report: q/s), `dso` (perf report by shared object,
"overhead|object" lines) and `sym` (the busiest user-space symbols, "overhead|[.] name").
CPU_SECONDS is the server's CPU time over the WINDOW_SECONDS that perf sampled. The row splits
the CPU time per query into the kernel's part (socket calls, the loopback path, scheduling) and
user space (the server's binary and its libraries). When DIR also holds `stat` (`perf stat -x,`
counts of raw_syscalls:sys_enter and context-switches over COUNT_SECONDS of the same run), the
row gives system calls per query and context switches per 1,000 queries."""
import re
import sys


def percent(text):
    return float(text.strip().rstrip("%"))


def short(symbol):
    """The last two path segments of a Rust symbol, without generics; others as they are."""
    name = re.sub(r"<[^<>]*>", "", symbol)
    while "<" in name:
        reduced = re.sub(r"<[^<>]*>", "", name)
        if reduced == name:
            break
        name = reduced
    name = name.replace("{{closure}}", "{closure}")
    parts = [p for p in name.split("::") if p]
    return "::".join(parts[-2:]) if parts else symbol


def main(server, workload, folder, cpu_seconds, window, counted=None):
    qps = 0.0
    for line in open(f"{folder}/dnsperf"):
        if "Queries per second:" in line:
            qps = float(line.split()[-1])
    kernel = user = 0.0
    for line in open(f"{folder}/dso"):
        share, _, dso = line.partition("|")
        if not dso:
            continue
        if "kernel" in dso:
            kernel += percent(share)
        else:
            user += percent(share)
    total = kernel + user
    us_per_q = float(cpu_seconds) * 1e6 / (qps * float(window)) if qps > 0 else float("nan")
    kernel_us = us_per_q * kernel / total if total else float("nan")
    user_us = us_per_q * user / total if total else float("nan")
    symbols = {}
    for line in open(f"{folder}/sym"):
        share, _, sym = line.partition("|")
        sym = sym.strip().removeprefix("[.]").strip()
        if not sym or re.fullmatch(r"0x[0-9a-f]+", sym):
            continue  # a stripped binary: addresses say nothing
        name = short(sym)
        symbols[name] = symbols.get(name, 0.0) + percent(share)
    counts = {}
    try:
        for line in open(f"{folder}/stat"):
            fields = line.strip().split(",")
            if len(fields) > 2 and fields[0].isdigit():
                counts[fields[2]] = int(fields[0])
    except OSError:
        pass
    queries = qps * float(counted or window)

    def per(event, scale):
        if event not in counts or queries <= 0:
            return "-"
        return f"{counts[event] * scale / queries:.2f}"

    calls = per("raw_syscalls:sys_enter", 1)
    switches = per("context-switches", 1000)
    top = [f"{name} {share:.1f}%" for name, share in sorted(symbols.items(), key=lambda s: -s[1])]
    print(
        f"{workload:<10} {server:<9} {us_per_q:>9.2f} {kernel_us:>9.2f} {user_us:>9.2f} "
        f"{kernel / total * 100 if total else 0:>8.1f}% {calls:>7} {switches:>7}  "
        + ", ".join(top[:3])
    )


if __name__ == "__main__":
    main(*sys.argv[1:7])
