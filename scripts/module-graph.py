#!/usr/bin/env python3
"""Prints the crate's module import graph and fails on a cycle or on an
import against the layering rules (ARCHITECTURE.md): run from the repo root.

A module is a file under src/ (foo.rs or foo/mod.rs is `foo`); an edge
a -> b means a's code names `crate::b...` or `super::b...` (resolved).
"""
import os, re, sys, collections

SRC = "src"

def module_of(path):
    rel = os.path.relpath(path, SRC)[:-3]
    parts = rel.split(os.sep)
    if parts[-1] == "mod" or parts[-1] == "lib":
        parts = parts[:-1]
    return parts

mods = {}
for root, _, files in os.walk(SRC):
    for f in files:
        if f.endswith(".rs") and f != "main.rs":
            p = os.path.join(root, f)
            mods[tuple(module_of(p))] = p

def resolve(cur, path):
    """Longest known module prefix of a path like crate::a::b::Item."""
    segs = path.split("::")
    if segs[0] == "crate":
        base, rest = [], segs[1:]
    elif segs[0] == "super":
        base = list(cur)
        rest = segs
        while rest and rest[0] == "super":
            base = base[:-1]
            rest = rest[1:]
    else:
        return None
    best = None
    for i in range(len(rest) + 1):
        cand = tuple(base + rest[:i])
        if cand in mods:
            best = cand
    return best

edges = collections.defaultdict(set)
pat = re.compile(r"\b((?:crate|super)(?:::[A-Za-z_][A-Za-z0-9_]*)+)")
for m, p in mods.items():
    text = open(p).read()
    # Test modules may reach anywhere.
    text = text.split("#[cfg(test)]")[0]
    # Expand `use crate::a::{b, c::d}` groups one level.
    for g in re.finditer(r"((?:crate|super)(?:::\w+)*)::\{([^}]*)\}", text):
        for item in g.group(2).split(","):
            item = item.strip().split(" as ")[0]
            if item and item != "self":
                text += "\n" + g.group(1) + "::" + item
    for hit in pat.findall(text):
        t = resolve(m, hit)
        if t is not None and t != m and not (t == m[: len(t)]):
            edges[m].add(t)

def top(m):
    return m[0] if m else "lib"

# Layer rules: a module may not import these (top-level) modules.
FORBIDDEN = {
    "volume": {"dump", "restore", "cli"},
    "target": {"dump", "restore", "volume", "cli"},
    "stream": {"dump", "restore", "volume", "target", "cli"},
    "media": {"stream", "dump", "restore", "volume", "target", "cli"},
    "dump": {"restore", "volume", "target", "cli"},
    "restore": {"dump", "volume", "cli"},
}
bad = []
for a, bs in edges.items():
    for b in bs:
        if top(b) in FORBIDDEN.get(top(a), ()) and top(a) != top(b):
            bad.append(f"{'::'.join(a)} imports {'::'.join(b)}")

# Cycles between modules (Tarjan).
index, low, on, stack, sccs, n = {}, {}, set(), [], [], [0]
def strong(v):
    index[v] = low[v] = n[0]; n[0] += 1; stack.append(v); on.add(v)
    for w in edges.get(v, ()):
        if w not in index:
            strong(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v: break
        if len(comp) > 1: sccs.append(comp)
sys.setrecursionlimit(10000)
for v in list(mods):
    if v not in index: strong(v)

if "-v" in sys.argv:
    for a in sorted(edges):
        print("::".join(a) or "lib", "->", ", ".join(sorted("::".join(b) for b in edges[a])))
for c in sccs:
    print("cycle:", " <-> ".join(sorted("::".join(m) for m in c)))
for b in sorted(bad):
    print("layering:", b)
sys.exit(1 if sccs or bad else 0)
