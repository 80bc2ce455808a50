#!/usr/bin/env python3
"""One table of `scripts/bench raft`: presenced's four cases beside etcd's, with ratios.

Usage: raft_ratio.py PRESENCED.jsonl ETCD.jsonl COMMAND TLS-MODE
PRESENCED.jsonl: loadgen's JSON lines tagged with "part" (follower, all, leader);
ETCD.jsonl: scripts/bench-peers/etcd/run's lines (case 1-follower, 16-spread, ...).
The ratio is presenced's writes/s over etcd's (above 1: presenced ahead).
"""
import datetime
import json
import subprocess
import sys


def lines(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip().startswith("{")]


mine, etcd, cmd, tls = lines(sys.argv[1]), lines(sys.argv[2]), sys.argv[3], sys.argv[4]
version = next((e.get("version") for e in etcd), "?")


def pick(rows, **kv):
    return next((r for r in rows if all(r.get(k) == v for k, v in kv.items())), None)


cases = [
    ("1, through a follower", dict(part="follower", writers=1), "1-follower"),
    ("16, spread over nodes", dict(part="all", writers=16), "16-spread"),
    ("64, spread over nodes", dict(part="all", writers=64), "64-spread"),
    ("64, to the leader", dict(part="leader", writers=64), "64-leader"),
]


def cell(r, rate, p50, p99):
    if not r:
        return "—"
    return f"{r[rate]:,.0f} ({r[p50]:.2f} / {r[p99]:.2f})"


date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
print(f"Command: `{cmd}` ({date}, {cores} cores, release build, presenced cluster TLS {tls}; "
      f"etcd {version}, 3 members on loopback, fsync, plain text)")
print()
print("| writers | presenced writes/s (p50 / p99 ms) | etcd writes/s (p50 / p99 ms) | ratio | p99 vs etcd |")
print("|---|---:|---:|---:|---:|")
for name, sel, case in cases:
    m = pick(mine, **sel)
    e = pick(etcd, case=case)
    ratio = f"{m['writes_per_sec'] / e['writes_per_sec']:.2f}x" if m and e and e["writes_per_sec"] else "—"
    p99 = f"{m['p99_ms'] / e['p99_ms']:.2f}x" if m and e and e["p99_ms"] else "—"
    print(f"| {name} | {cell(m, 'writes_per_sec', 'p50_ms', 'p99_ms')} | "
          f"{cell(e, 'writes_per_sec', 'p50_ms', 'p99_ms')} | {ratio} | {p99} |")
errors = sum(r.get("errors", 0) for r in mine) + sum(r.get("errors", 0) for r in etcd)
print()
print(f"errors: {errors}")
