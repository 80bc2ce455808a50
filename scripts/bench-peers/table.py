#!/usr/bin/env python3
"""Markdown table from loadgen xmpp --json lines (scripts/bench xmpp)."""
import json
import subprocess
import sys
import datetime
import os

path, cmdline, knobs = sys.argv[1], sys.argv[2], sys.argv[3]
rows = [json.loads(l) for l in open(path) if l.strip()]
servers = []
for r in rows:
    if r["server"] not in servers:
        servers.append(r["server"])


def f(v, d=0):
    if v is None or v != v:
        return "—"
    return f"{v:,.{d}f}"


def get(server, scen):
    return [r for r in rows if r["server"] == server and r["scenario"] == scen]


out = []
date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
cpus = os.environ.get("CPUS_NOTE") or f"{cores} cores shared by every server, the load generator and the kernel"
split = os.environ.get("CPUS") == "split"
out.append(f"Command: `{cmdline}` ({knobs}); {date}, {cpus}; STARTTLS + SCRAM-SHA-1 for every server.")
out.append("")
out.append("| server | logins/s | login p99 ms | msgs/s at p99 < 10 ms | p50 / p99 / p999 ms | "
           "CPU % server / load generator | max msgs/s (p99 ms) | presence p99 ms per contact / all reached | "
           "presence max ms | KiB per idle session |")
out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
best = {}
for s in servers:
    lg = (get(s, "login") or [{}])[0]
    pp = get(s, "pingpong")
    ok = [r for r in pp if r.get("p99_ms") is not None and r["p99_ms"] < 10 and r.get("errors", 0) == 0]
    b = max(ok, key=lambda r: r["msgs_per_sec"]) if ok else None
    m = max(pp, key=lambda r: r["msgs_per_sec"]) if pp else None
    best[s] = b["msgs_per_sec"] if b else 0.0
    pr = (get(s, "presence") or [{}])[0]
    idle = (get(s, "idle") or [{}])[0]
    lat = f"{f(b['p50_ms'], 2)} / {f(b['p99_ms'], 2)} / {f(b['p999_ms'], 2)}" if b else "—"
    cpu = f"{f(b.get('server_cpu_pct'))} / {f(b.get('client_cpu_pct'))}" if b else "—"
    out.append(
        f"| {s} | {f(lg.get('logins_per_sec'))} | {f(lg.get('p99_ms'), 1)} | "
        f"{f(b['msgs_per_sec']) if b else '— (none)'} | {lat} | {cpu} | "
        f"{f(m['msgs_per_sec']) + ' (' + f(m['p99_ms'], 1) + ')' if m else '—'} | "
        f"{f(pr.get('p99_ms'), 2)} / {f(pr.get('all_p99_ms'), 2)} | {f(pr.get('max_ms'), 1)} | "
        f"{f(idle.get('kib_per_session'), 1)} |")
out.append("")
out.append("Ping-pong levels (pairs x window messages in flight; one-way latency):")
out.append("")
out.append("| server | pairs | in flight | msgs/s | p50 ms | p99 ms | p999 ms | errors | CPU % server / load generator |")
out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for s in servers:
    for r in get(s, "pingpong"):
        out.append(f"| {s} | {r['pairs']} | {r['pairs'] * r['window']} | {f(r['msgs_per_sec'])} | "
                   f"{f(r['p50_ms'], 2)} | {f(r['p99_ms'], 2)} | {f(r['p999_ms'], 2)} | {r['errors']} | "
                   f"{f(r.get('server_cpu_pct'))} / {f(r.get('client_cpu_pct'))} |")
out.append("")
notes = []
p1 = best.get("presenced-1")
for other, goal in (("ejabberd", 5), ("prosody", 5)):
    if p1 and best.get(other):
        ratio = p1 / best[other]
        notes.append(f"presenced single node / {other} msgs/s at p99 < 10 ms: {ratio:.2f}x "
                     f"(target ≥ {goal}x: {'met' if ratio >= goal else 'not met'})")
    elif p1 and get(other, "pingpong"):
        m = max(get(other, "pingpong"), key=lambda r: r["msgs_per_sec"])
        ratio = p1 / m["msgs_per_sec"]
        notes.append(f"{other} reached p99 < 10 ms at no level; presenced single node at p99 < 10 ms "
                     f"against {other}'s highest rate ({f(m['msgs_per_sec'])} msgs/s at p99 "
                     f"{f(m['p99_ms'], 1)} ms): {ratio:.2f}x (target ≥ {goal}x: {'met' if ratio >= goal else 'not met'})")
p3 = best.get("presenced-3")
if p1 and p3 is not None:
    drop = 100 * (1 - p3 / p1)
    notes.append(f"3-node cluster (cross-node messaging) against one node, msgs/s at p99 < 10 ms: "
                 f"{drop:+.1f}% below (target within 25%: {'met' if drop <= 25 else 'not met'})")
pr3 = (get("presenced-3", "presence") or [{}])[0]
if pr3:
    v = pr3.get("all_p99_ms")
    notes.append(f"3-node cluster, availability change to {pr3.get('contacts')} contacts on 3 nodes: "
                 f"p99 per contact {f(pr3.get('p99_ms'), 2)} ms, until all reached {f(v, 2)} ms "
                 f"(target p99 < 10 ms: {'met' if v is not None and v == v and v < 10 else 'not met'}; "
                 f"{pr3.get('missing', 0)} deliveries missing)")
for s in ("presenced-1", "presenced-3"):
    idle = (get(s, "idle") or [{}])[0]
    if idle.get("kib_per_session") is not None:
        k = idle["kib_per_session"]
        notes.append(f"{s}: {k:.1f} KiB per idle authenticated session "
                     f"(target ≤ 12 KiB over all nodes: {'met' if k <= 12 else 'not met'})")
if split:
    notes.append("CPU % is over the measured window, 100 = one core; each server had its own cores "
                 "and the load generator the others, so a server below 100 % per core it was given "
                 "is waiting on the client, not on itself")
else:
    notes.append("CPU % is over the measured window, 100 = one core (2 cores: 200 in all); the load "
                 "generator is one process beside the server, so a server whose CPU is below what is "
                 "left by the load generator is waiting on the client, not on itself")
for n in notes:
    out.append(f"- {n}")
print("\n".join(out))
