#!/usr/bin/env python3
"""Prints the CPU time (user + system, in clock ticks) of a process and all its descendants,
threads included, as /proc accounts it; with --rss, their resident memory in MiB instead;
with --peak, the sum of each one's peak resident memory (VmHWM) in MiB; with --pids, their
process IDs (comma-separated, for `perf record -p`).
Usage: treecpu.py [--rss | --peak | --pids] PID"""
import os
import sys


def children(pid):
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # After the command name: state is field 3, utime 14, stime 15 (1-based overall).
        return int(fields[11]) + int(fields[12])
    except OSError:
        return 0


def status_kib(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kib(pid):
    return status_kib(pid, "VmRSS:")


def peak_kib(pid):
    return status_kib(pid, "VmHWM:")


def processes(pid):
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += children(p)
    return found


def tree(pid, measure):
    return sum(measure(p) for p in processes(pid))


if __name__ == "__main__":
    if sys.argv[1] == "--rss":
        print("%.0f" % (tree(int(sys.argv[2]), rss_kib) / 1024))
    elif sys.argv[1] == "--peak":
        print("%.0f" % (tree(int(sys.argv[2]), peak_kib) / 1024))
    elif sys.argv[1] == "--pids":
        print(",".join(str(p) for p in processes(int(sys.argv[2]))))
    else:
        print(tree(int(sys.argv[1]), ticks))
