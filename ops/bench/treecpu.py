#!/usr/bin/env python3
"""Prints the CPU time (user + system, in clock ticks) of a process and all its descendants,
threads included, as /proc accounts it; with --rss, their resident memory in MiB instead.
Usage: treecpu.py [--rss] PID"""
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


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree(pid, measure):
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += measure(p)
        todo += children(p)
    return total


if __name__ == "__main__":
    if sys.argv[1] == "--rss":
        print("%.0f" % (tree(int(sys.argv[2]), rss_kib) / 1024))
    else:
        print(tree(int(sys.argv[1]), ticks))
