#!/usr/bin/env python3
"""The closing table of `make bench`: every figure the benches recorded beside the
recorded baseline (tests/benches/baseline.tsv), with the change and a mark on any figure
more than 10 % worse, or missing.

Usage: bench-table.py FIGURES BASELINE. FIGURES holds the lines the benches append
(`keel_tests::bench::figure`): name, value, unit, better (tab-separated).
Exits 1 if a baseline figure was not measured (a bench that stopped early).
"""
import sys

WORSE = 0.10


def read(path):
    rows = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip() or line.startswith("#"):
                continue
            name, value, unit, better, *_ = line.rstrip("\n").split("\t")
            rows[name] = (float(value), unit, better)
    return rows


def main():
    figures_path, baseline_path = sys.argv[1], sys.argv[2]
    try:
        figures = read(figures_path)
    except FileNotFoundError:
        figures = {}
    baseline = read(baseline_path)
    names = list(baseline) + [n for n in figures if n not in baseline]
    print("| figure | baseline | now | change | |")
    print("|---|---|---|---|---|")
    missing = worse = 0
    for name in names:
        base = baseline.get(name)
        now = figures.get(name)
        unit = (now or base)[1]
        if now is None:
            missing += 1
            print(f"| {name} | {base[0]:g} {unit} | — | | **MISSING** |")
            continue
        if base is None:
            print(f"| {name} | — | {now[0]:g} {unit} | | new |")
            continue
        change = (now[0] - base[0]) / base[0] if base[0] else 0.0
        loss = -change if base[2] == "higher" else change
        mark = "**WORSE >10 %**" if loss > WORSE else ""
        worse += bool(mark)
        print(f"| {name} | {base[0]:g} {unit} | {now[0]:g} {unit} | {change:+.1%} | {mark} |")
    print(f"\n{len(names) - missing} figures measured, {worse} more than 10 % worse than the baseline, {missing} missing")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
