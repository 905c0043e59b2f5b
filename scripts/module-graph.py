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

def strip_comments(text):
    """Removes // and /* */ comments (doc comments too), keeping strings."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)

def strip_test_modules(text):
    """Removes `#[cfg(test)] mod NAME { ... }` blocks: tests may reach
    anywhere. Other #[cfg(test)] items stay."""
    while True:
        m = re.search(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+\w+\s*\{", text)
        if not m:
            return text
        depth, j = 0, m.end() - 1
        while j < len(text):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        text = text[: m.start()] + text[j + 1 :]

def expand_groups(prefix, body):
    """`a, b::{c, d}` under `prefix` -> [prefix::a, prefix::b::c, ...]."""
    items, depth, cur = [], 0, ""
    for ch in body:
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        cur += ch
    items.append(cur)
    out = []
    for it in items:
        it = it.strip()
        if not it or it == "self":
            if it == "self":
                out.append(prefix)
            continue
        m = re.match(r"^([\w:]*?)::\{(.*)\}$", it, re.S)
        if m:
            out += expand_groups(prefix + "::" + m.group(1), m.group(2))
        else:
            out.append(prefix + "::" + it.split(" as ")[0].strip())
    return out

def paths_in(text):
    found = []
    # use groups, nested: use crate::a::{b, c::{d, e}};
    for g in re.finditer(r"\b((?:crate|super)(?:::super)*(?:::\w+)*)::\{", text):
        depth, j = 1, g.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        found += expand_groups(g.group(1), text[g.end() : j - 1])
    found += re.findall(r"\b((?:crate|super)(?:::[A-Za-z_][A-Za-z0-9_]*)+)", text)
    return found

edges = collections.defaultdict(set)
for m, p in mods.items():
    text = strip_test_modules(strip_comments(open(p).read()))
    for hit in paths_in(text):
        t = resolve(m, hit)
        if t is not None and t != m and not (t == m[: len(t)]):
            edges[m].add(t)

def top(m):
    return m[0] if m else "lib"

# Layer rules: a module may not import these (top-level) modules.
UPPER = {"catalog", "scan", "dump", "stream", "media", "target", "restore", "volume", "replica", "mirror", "policy", "cli", "fuzzing", "tarout"}
MODEL = {"tree", "names", "runs", "wire", "ids", "digest", "at", "planes", "rules", "fileflags"}
PLUMBING = {"fsx", "lock", "atomic", "failpoint", "progress", "report", "sealed"}
FORBIDDEN = {
    **{m: UPPER | PLUMBING for m in MODEL},
    **{m: UPPER for m in PLUMBING},
    "catalog": {"scan", "dump", "media", "target", "restore", "volume", "cli", "policy", "replica"},
    "scan": {"catalog", "dump", "stream", "media", "target", "restore", "volume", "cli", "policy", "replica"},
    "volume": {"dump", "restore", "cli", "policy", "replica"},
    "target": {"dump", "restore", "volume", "cli", "policy", "replica"},
    "stream": {"dump", "restore", "volume", "target", "cli", "policy", "replica"},
    "media": {"stream", "dump", "restore", "volume", "target", "cli", "policy", "replica"},
    "dump": {"restore", "volume", "target", "cli", "policy", "replica"},
    "restore": {"dump", "volume", "cli", "policy", "replica"},
    "replica": {"restore", "cli", "policy"},
    "mirror": {"dump", "restore", "volume", "target", "cli", "policy", "replica"},
    # A policy drives the layers below it; only the command line drives it.
    "policy": {"cli"},
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
