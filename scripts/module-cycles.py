#!/usr/bin/env python3
"""Import-cycle check for one crate (`make test` runs it on every crate; ADR 0015): nodes are the crate's file modules
(src/a.rs, src/a/mod.rs -> `a`; src/a/b.rs -> `a::b`); an edge A -> B for every
path `crate::B…` or `super::…` (resolved relative to A) written in A's file,
in `use` declarations and inline paths alike (comments stripped). A reference to a
module's child counts as an edge to the longest file module that is a prefix.
Prints each strongly connected component of more than one module (a cycle)."""
import os, re, sys

src = sys.argv[1]
mods = {}
for root, _, files in os.walk(src):
    for f in files:
        if not f.endswith('.rs'):
            continue
        rel = os.path.relpath(os.path.join(root, f), src)[:-3].split(os.sep)
        if rel[-1] == 'mod':
            rel = rel[:-1]
        if rel in (['lib'], ['main']):
            rel = []
        mods['::'.join(rel)] = os.path.join(root, f)

def owner(path):
    parts = path.split('::')
    for n in range(len(parts), -1, -1):
        cand = '::'.join(parts[:n])
        if cand in mods:
            return cand
    return ''

edges = {m: set() for m in mods}
path_re = re.compile(r'\b(crate|super)((?:::(?:super|[A-Za-z_][A-Za-z0-9_]*))+)')
group_re = re.compile(r'\b(crate|super)::\{([^}]*)\}', re.S)
for m, file in mods.items():
    text = open(file).read()
    text = re.sub(r'//[^\n]*', '', text)
    text = re.sub(r'/\*.*?\*/', '', text, flags=re.S)
    refs = []
    for head, tail in path_re.findall(text):
        refs.append(head + tail)
    for head, inner in group_re.findall(text):  # use crate::{a, b::c};
        for item in inner.split(','):
            item = item.strip().split(' ')[0]
            if item:
                refs.append(f"{head}::{item}")
    for ref in refs:
        parts = ref.split('::')
        if parts[0] == 'crate':
            base, rest = [], parts[1:]
        else:
            # `super` in a file module refers to its parent module; in an inline
            # `mod tests` it refers to the file itself — both are handled by the
            # fact that references to the file's own module are ignored.
            base = m.split('::') if m else []
            rest = parts
            inline_child = False
            while rest and rest[0] == 'super':
                rest = rest[1:]
                base = base[:-1] if base else base
        target = owner('::'.join(base + rest))
        if target != m and not m.startswith(target + '::') and target != '':
            edges[m].add(target)
        elif target == '' and m != '' and base + rest:
            pass

# Tarjan SCC
index, low, stack, on, sccs, i = {}, {}, [], set(), [], [0]
def strong(v):
    index[v] = low[v] = i[0]; i[0] += 1; stack.append(v); on.add(v)
    for w in edges[v]:
        if w not in index:
            strong(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v: break
        sccs.append(comp)
sys.setrecursionlimit(10000)
for v in edges:
    if v not in index:
        strong(v)
cycles = [c for c in sccs if len(c) > 1]
if '-v' in sys.argv:
    for m in sorted(edges):
        print(f"{m or '<root>'} -> {', '.join(sorted(edges[m])) or '-'}")
for c in cycles:
    print('CYCLE:', ' <-> '.join(sorted(c)))
    for a in sorted(c):
        print('   ', a, '->', ', '.join(sorted(x for x in edges[a] if x in c)))
print(f"{len(mods)} modules, {sum(len(e) for e in edges.values())} edges, {len(cycles)} cycles")
sys.exit(1 if cycles else 0)
