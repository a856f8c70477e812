#!/usr/bin/env bash
# The module graph: which top-level module of src/ uses which (every `crate::NAME` path in
# code, comments left out), checked for cycles and for the arrows the design forbids.
#
#   ops/arch/check.sh           prints the graph; fails on a cycle or a forbidden arrow
#
# KNOWN below may list arrows still to be removed while a change is under way: the check
# ignores them, fails on any other, and fails too when a known arrow is gone, so the list only
# shrinks.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec /usr/bin/python3 - "$@" <<'PY'
import collections, os, re, sys

# Arrows no module may have: the decision core stays free of DNS, metrics and the control
# endpoint; health and config know nothing of DNS or metrics; the counters and the clock know
# no other module; the control endpoint and start-up share `node` instead of importing each
# other.
FORBIDDEN = {
    ("balance", "dns"), ("balance", "metrics"), ("balance", "admin"), ("balance", "hickory"),
    ("health", "metrics"), ("health", "dns"),
    ("config", "dns"), ("config", "metrics"),
    # The counters know no other module: callers pass what they count.
    ("metrics", "*"),
    ("dns", "explain"),
    ("admin", "server"),
    ("clock", "*"),
    # The site proxy reuses the decision core and health, never the DNS side.
    ("proxy", "dns"), ("proxy", "hickory"), ("dns", "proxy"), ("config", "proxy"),
    # Leaf helpers: TLS setup and the control endpoints' HTTP helpers know no other module.
    ("tls", "*"), ("web", "*"),
}
# Arrows still there that are to be removed, as (from, to) pairs; none today.
KNOWN = set()

def code(text):
    out = []
    for line in text.splitlines():
        s = line.lstrip()
        if s.startswith("//"):
            continue
        out.append(line.split(" // ")[0])
    return "\n".join(out)

modules = set()
edges = collections.defaultdict(set)
for root, _, files in os.walk("src"):
    for f in files:
        if not f.endswith(".rs"):
            continue
        rel = os.path.relpath(os.path.join(root, f), "src")
        top = rel.split("/")[0].removesuffix(".rs")
        if top in ("main", "lib"):
            continue
        modules.add(top)
        text = code(open(os.path.join(root, f), encoding="utf-8").read())
        for m in re.finditer(r"\bcrate::([a-z_][a-z0-9_]*)", text):
            if m.group(1) != top:
                edges[top].add(m.group(1))
        if re.search(r"\bhickory_(proto|server)\b", text):
            edges[top].add("hickory")

problems = []
for a in sorted(edges):
    for b in sorted(edges[a]):
        if ((a, b) in FORBIDDEN or (a, "*") in FORBIDDEN) and (a, b) not in KNOWN:
            problems.append(f"forbidden arrow {a} -> {b}")
for a, b in sorted(KNOWN):
    if b not in edges.get(a, ()):
        problems.append(f"known arrow {a} -> {b} is gone: take it off KNOWN in {sys.argv[0]}")

# Cycles among the arrows that are not known: Tarjan's strongly connected components.
graph = {a: {b for b in bs if (a, b) not in KNOWN and b in modules} for a, bs in edges.items()}
index, low, stack, on, comps, n = {}, {}, [], set(), [], [0]
def visit(v):
    index[v] = low[v] = n[0]; n[0] += 1
    stack.append(v); on.add(v)
    for w in sorted(graph.get(v, ())):
        if w not in index:
            visit(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v:
                break
        if len(comp) > 1:
            comps.append(sorted(comp))
sys.setrecursionlimit(10000)
for v in sorted(modules):
    if v not in index:
        visit(v)
for comp in comps:
    problems.append("import cycle among " + ", ".join(comp))

for a in sorted(edges):
    marks = [b + (" (known)" if (a, b) in KNOWN else "") for b in sorted(edges[a])]
    print(f"{a} -> {', '.join(marks)}")
if problems:
    print()
    for p in problems:
        print(f"FAIL: {p}")
    sys.exit(1)
print(f"\nno cycles and no forbidden arrows ({len(KNOWN)} known arrows left to remove)")
PY
