#!/usr/bin/env python3
"""Quantiles of pushwire's publish stages from saved /metrics text.

    bench/stages.py STAGES_DIR/*.prom        # as kept by compare.sh's STAGES_DIR

For each file, one row per stage of `pushwire_publish_stage_seconds` (and
the whole of `pushwire_publish_duration_seconds`): samples, p50, p90, p99,
in milliseconds, each the upper bound of the bucket the quantile falls in;
and the mean number of publish requests per history group.
"""
import re
import sys

BUCKET = re.compile(r'^(\w+)_bucket\{le="([^"]+)"(?:,stage="(\w+)")?\} (\S+)$')
SUM_COUNT = re.compile(r'^(\w+)_(sum|count)(?:\{stage="(\w+)"\})? (\S+)$')


def quantile(buckets, q):
    total = buckets[-1][1] if buckets else 0
    if total == 0:
        return None
    for bound, count in buckets:
        if count >= q * total:
            return bound
    return float("inf")


def show(path):
    buckets, sums = {}, {}
    with open(path) as f:
        for line in f:
            m = BUCKET.match(line.strip())
            if m:
                name, le, stage, value = m.groups()
                bound = float("inf") if le == "+Inf" else float(le)
                buckets.setdefault((name, stage), []).append((bound, float(value)))
                continue
            m = SUM_COUNT.match(line.strip())
            if m:
                name, kind, stage, value = m.groups()
                sums[(name, stage, kind)] = float(value)
    print(f"{path}")
    print(f"  {'stage':<10} {'samples':>9} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9}")
    order = ["queue", "write", "sync", "answer", "fanout"]
    rows = [("pushwire_publish_stage_seconds", s) for s in order]
    rows.append(("pushwire_publish_duration_seconds", None))
    for key in rows:
        b = sorted(buckets.get(key, []))
        count = int(b[-1][1]) if b else 0
        cells = []
        for q in (0.5, 0.9, 0.99):
            v = quantile(b, q)
            cells.append("-" if v is None else ("inf" if v == float("inf") else f"{v * 1000:.3f}"))
        label = key[1] or "publish"
        print(f"  {label:<10} {count:>9} {cells[0]:>9} {cells[1]:>9} {cells[2]:>9}")
    n = sums.get(("pushwire_history_group_requests", None, "count"), 0)
    total = sums.get(("pushwire_history_group_requests", None, "sum"), 0)
    if n:
        print(f"  groups {int(n)}, {total / n:.2f} publish requests per group")


for p in sys.argv[1:]:
    show(p)
