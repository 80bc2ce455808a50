#!/usr/bin/python3
"""The chaos run: a cluster broken at random while real clients work, every promise
checked afterwards. Runs inside a network namespace of its own (scripts/chaos makes
it); prints the seed so a failing run can be replayed with --seed.

Faults (one per round, chosen by the seeded generator): kill -9 of a random node or
of the leader, SIGSTOP/SIGCONT of a node or of the leader, the leader isolated, a
minority isolated, a one-way cut, a flapping link, and a node wiped and re-added.

Load during each round: roster writers (add/remove through presencectl against a
random live node) and readers (roster show), every operation recorded with the
outcome the client saw.

Checks after each round, once healed: the cluster converges (every node a voter with
the leader's applied index) within the recovery budget; the roster history so far is
linearizable (linear.py: acknowledged writes are never lost, unacknowledged ones
appear at most once, every read sees a legal value); no two nodes lead in one term;
a write succeeds within 3 s of a leader's death or isolation.
"""

import argparse
import json
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cluster import Cluster  # noqa: E402
from linear import INF, check_history  # noqa: E402

OWNERS = [f"o{i}" for i in range(4)]
CONTACTS = [f"c{j}@remote.example" for j in range(4)]


class History:
    def __init__(self):
        self.lock = threading.Lock()
        self.ops = []
        self.counts = {}
        self.t0 = time.monotonic()
        self.faults = []  # (start, end, node id), monotonic
        self.kills = []  # (time, node id), monotonic
        self.problems = []  # found while injecting
        self.minority = []  # (exit code, stderr) of writes sent to an isolated node
        self.refusals = []
        # Writes under way: a check before they end must count them as of unknown
        # outcome (a read may already see one).
        self.inflight = {}
        self.next_op = 0

    def begin(self, op):
        with self.lock:
            self.next_op += 1
            self.inflight[self.next_op] = dict(op, end=INF, maybe=True)
            return self.next_op

    def settle(self, token):
        with self.lock:
            self.inflight.pop(token, None)

    def snapshot(self):
        """Every op so far, writes under way as of unknown outcome."""
        with self.lock:
            return list(self.ops) + list(self.inflight.values())

    def now(self):
        return time.monotonic() - self.t0

    def add(self, op, outcome):
        with self.lock:
            self.ops.append(op)
            k = (op.get("label", op["kind"]), outcome)
            self.counts[k] = self.counts.get(k, 0) + 1


def writer(cluster, hist, rng, stop):
    while not stop.is_set():
        live = cluster.live()
        if not live:
            time.sleep(0.05)
            continue
        node = rng.choice(live)
        owner = rng.choice(OWNERS)
        r = rng.random()
        start = hist.now()
        if r < 0.3:
            code, doc, _ = cluster.ctl(node, "roster", "show", owner, timeout=3)
            end = hist.now()
            if code == 0 and doc is not None:
                have = {i.get("jid") for i in doc.get("items", [])}
                for c in CONTACTS:
                    hist.add({"key": (owner, c), "start": start, "end": end, "kind": "r",
                              "value": c in have, "label": "read"}, "ok")
            else:
                hist.add({"key": None, "kind": "r", "label": "read"}, "failed")
            continue
        contact = rng.choice(CONTACTS)
        add = r < 0.7
        args = ("roster", "add", owner, contact) if add else ("roster", "remove", owner, contact)
        label = "add" if add else "remove"
        op = {"key": (owner, contact), "start": start, "kind": "w", "value": add, "label": label}
        token = hist.begin(op)
        code, doc, err = cluster.ctl(node, *args, timeout=3)
        end = hist.now()
        # Recorded below before it stops counting as under way.
        if code == 0:
            op["end"] = end
            hist.add(op, "ok")
        elif code == 3 and not add:
            # "not in the roster": a read that saw it absent.
            hist.add({"key": (owner, contact), "start": start, "end": end, "kind": "r",
                      "value": False, "label": "remove"}, "absent")
        elif code in (2, 4):
            hist.refusals.append(err)
            hist.add({"key": None, "kind": "w", "label": label}, "refused")
        else:
            # Unknown outcome: it may take effect at any later time, or never.
            op["end"] = INF
            op["maybe"] = True
            hist.add(op, "unknown")
        hist.settle(token)


def leaders_by_term(cluster):
    """(term -> set of node ids that said they lead), from every node's own view."""
    seen = {}
    for n in cluster.live():
        s = cluster.status(n)
        if not s:
            continue
        for v in s.get("nodes", []):
            if v.get("state") == "Leader" and v.get("reachable"):
                seen.setdefault(v.get("term"), set()).add(v.get("id"))
    return seen


def leader(cluster):
    s = cluster.status()
    lid = s and s.get("leader_id")
    return next((n for n in cluster.nodes if n.id == lid), None)


FAULTS = ["kill", "kill_leader", "pause", "pause_leader", "isolate_leader",
          "isolate_minority", "one_way", "flap", "wipe", "disk_full", "slow_disk"]


class Probe:
    """After a fault that hits the leader: when the rest of the cluster acknowledges a
    write again. Every 0.2 s a roster write is started on each node outside the fault
    (each may take up to 5 s); the first acknowledgement ends the probe. That is the
    recovery figure: the time until the majority serves again, whichever node a client
    tries. (The writers' own first success after the fault is kept beside it: it is
    later when they all happened to be waiting on the faulty node.)"""

    def __init__(self, cluster, hist, excluded):
        self.cluster, self.hist = cluster, hist
        self.done = threading.Event()
        self.t = None
        self.lock = threading.Lock()
        self.nodes = [n for n in cluster.nodes if n.id not in excluded]
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        deadline = time.monotonic() + 15
        while not self.done.is_set() and time.monotonic() < deadline:
            for n in self.nodes:
                threading.Thread(target=self._attempt, args=(n,), daemon=True).start()
            time.sleep(0.2)

    def _attempt(self, n):
        code, _, _ = self.cluster.ctl(n, "roster", "add", OWNERS[0], "probe@remote.example",
                                      timeout=5)
        if code == 0:
            with self.lock:
                if self.t is None:
                    self.t = self.hist.now()
            self.done.set()

    def wait(self, within):
        self.done.wait(within)
        self.done.set()
        return self.t


def inject(cluster, kind, rng, hist, hold):
    """Apply one fault for `hold` seconds, then undo it. Returns (time the fault hit
    the leader or None, description, the recovery probe or None)."""
    nodes = cluster.nodes
    lead = leader(cluster) or rng.choice(nodes)
    victim = lead if kind.endswith("leader") else rng.choice(nodes)
    t = hist.now()
    t_abs = time.monotonic()
    involved = {victim.id}
    hit_leader = t if victim is lead and kind not in ("one_way", "flap") else None
    probe = None
    if kind in ("kill", "kill_leader"):
        victim.kill9()
        if hit_leader is not None:
            probe = Probe(cluster, hist, {victim.id})
        hist.kills.append((time.monotonic(), victim.id))
        time.sleep(hold)
        victim.start()
    elif kind in ("pause", "pause_leader"):
        victim.pause()
        if hit_leader is not None:
            probe = Probe(cluster, hist, {victim.id})
        time.sleep(hold)
        victim.resume()
    elif kind in ("isolate_leader", "isolate_minority"):
        # The leader alone, or a minority (1 of 3, 2 of 5) that still talks within.
        group = [victim] if kind == "isolate_leader" else rng.sample(nodes, (len(nodes) - 1) // 2)
        victim = group[0]
        hit_leader = t if lead in group else None
        involved = {x.id for x in group}
        for x in group:
            for y in nodes:
                if y not in group:
                    cluster.cut(x, y)
        if hit_leader is not None:
            probe = Probe(cluster, hist, involved)
        # Past an election timeout the minority must refuse writes, clearly, and never
        # acknowledge one (an acknowledged write would have to survive the heal; the
        # linearizability check holds it to that as well).
        time.sleep(max(hold, 1.5))
        # The node's own write timeout (raft.timeout_ms, 3 s here) must answer first.
        code, _, err = cluster.ctl(victim, "roster", "add", OWNERS[0], "minority@remote.example",
                                   timeout=8)
        hist.minority.append((code, err))
        cluster.heal()
    elif kind == "one_way":
        other = rng.choice([n for n in nodes if n is not victim])
        involved = {victim.id, other.id}
        cluster.cut(victim, other, both=False)
        time.sleep(hold)
        cluster.heal()
    elif kind == "flap":
        other = rng.choice([n for n in nodes if n is not victim])
        involved = {victim.id, other.id}
        end = time.time() + hold
        while time.time() < end:
            cluster.cut(victim, other)
            time.sleep(rng.uniform(0.1, 0.6))
            cluster.heal()
            time.sleep(rng.uniform(0.1, 0.6))
    elif kind == "disk_full":
        # The node's disk fills up: it must stop (exit naming the cause) rather than go
        # on without persisting, the majority keeps serving, and once space is freed
        # the node restarts and catches up.
        victim.fill_disk()
        if hit_leader is not None:
            probe = Probe(cluster, hist, {victim.id})
        time.sleep(hold)
        victim.free_disk()
        time.sleep(0.5)
        if not victim.alive():
            log = open(victim.log).read()[-4000:]
            if "replication stopped" not in log:
                hist.problems.append(f"node {victim.id} died of a full disk without saying why")
            victim.proc = None
            victim.start()
            kind = "disk_full (the node stopped, restarted)"
        else:
            kind = "disk_full (the node rode it out)"
    elif kind == "slow_disk":
        # The node's disk turns slow: every fsync takes 200 ms more (a failing or
        # overloaded disk). As a follower it must not hold commits back (the other
        # follower makes the majority); as the leader, writes slow down but none is lost.
        victim.slow_disk(200)
        time.sleep(hold)
        victim.slow_disk(0)
        hit_leader = None
    elif kind == "wipe":
        # A follower loses its disk: removed, wiped, re-added as a fresh node.
        victim = rng.choice([n for n in nodes if n is not lead])
        involved = {victim.id}
        victim.kill9()
        keep = next(n for n in nodes if n is not victim and n.alive())
        code, _, err = cluster.ctl(keep, "cluster", "remove-node", str(victim.id), timeout=20)
        if code != 0:
            raise RuntimeError(f"remove-node {victim.id}: {err}")
        victim.wipe()
        victim.start()
        time.sleep(hold)
        code, _, err = cluster.ctl(keep, "cluster", "add-node", str(victim.id), victim.cluster,
                                   timeout=60)
        if code != 0:
            raise RuntimeError(f"add-node {victim.id}: {err}")
        hit_leader = None
    hist.faults.append((t_abs, time.monotonic(), involved))
    return hit_leader, f"{kind} node {victim.id}", probe


def start_xmpp(cluster, n, rng):
    from xmpp_load import HIDDEN, PW, XmppLoad
    users = [f"m{i}" for i in range(n)]
    first = cluster.nodes[0]
    for u in users + [HIDDEN]:
        code, _, err = cluster.ctl(first, "user", "add", u, "--password", PW)
        assert code == 0, err
    everyone = users + [HIDDEN]
    for u in everyone:
        others = [f"{x}@example.test" for x in everyone if x != u]
        code, _, err = cluster.ctl(first, "roster", "add", u, *others)
        assert code == 0, err
    code, _, err = cluster.ctl(first, "user", "policy", HIDDEN, "availability_sharing", "off")
    assert code == 0, err
    load = XmppLoad(cluster, users, rng)
    load.start()
    time.sleep(2)
    return load


def first_success_after(hist, t):
    """When the first write that started after `t` was acknowledged."""
    with hist.lock:
        ends = [o["end"] for o in hist.ops
                if o["kind"] == "w" and o.get("end", INF) < INF and o["start"] >= t]
    return min(ends) if ends else None


def pct(xs, p):
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--bins", required=True)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--hold", type=float, default=2.0, help="seconds a fault lasts")
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--recovery-budget", type=float, default=3.0,
                    help="seconds a write may take to succeed after the leader's death")
    ap.add_argument("--disk-mb", type=int, default=512,
                    help="each node's data on a tmpfs this big (0: on the run folder's disk, no disk_full)")
    ap.add_argument("--tolerate-duplicates", action="store_true",
                    help="report duplicated messages without failing (an open defect, docs/chaos.md)")
    ap.add_argument("--xmpp-users", type=int, default=6, help="0: no XMPP load")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else random.randrange(1 << 31)
    print(f"chaos: seed {seed} (replay with --seed {seed}), {a.nodes} nodes, {a.rounds} rounds",
          flush=True)
    rng = random.Random(seed)
    cluster = Cluster(a.run, a.bins, a.nodes, disk_mb=a.disk_mb)
    problems = []
    faults = {}
    recoveries = []
    client_recoveries = []
    converged = []
    try:
        cluster.form()
        for o in OWNERS:
            code, _, err = cluster.ctl(cluster.nodes[0], "user", "add", o, "--password", "pw-" + o)
            assert code == 0, err
        xmpp = None
        if a.xmpp_users:
            xmpp = start_xmpp(cluster, a.xmpp_users, random.Random(rng.random()))
        hist = History()
        stop = threading.Event()
        threads = [threading.Thread(target=writer, args=(cluster, hist, random.Random(rng.random()),
                                                          stop), daemon=True)
                   for _ in range(a.writers)]
        for t in threads:
            t.start()
        for rnd in range(1, a.rounds + 1):
            time.sleep(0.5)
            kinds = [f for f in FAULTS if a.disk_mb or f != "disk_full"]
            kind = rng.choice(kinds if a.nodes > 2 else ["kill", "pause"])
            hit, what, probe = inject(cluster, kind, rng, hist, a.hold)
            faults[kind] = faults.get(kind, 0) + 1
            healed = hist.now()
            for n in cluster.nodes:
                if not n.alive():
                    tail = open(n.log).read()[-1500:]
                    problems.append(f"round {rnd} ({what}): node {n.id} exited on its own:\n{tail}")
                    n.proc = None
                    n.start()
            try:
                Cluster.wait(cluster.converged, 30, "convergence")
                converged.append(hist.now() - healed)
            except TimeoutError:
                problems.append(f"round {rnd} ({what}): the cluster did not converge in 30 s")
            ok = None
            if hit is not None:
                seen = None
                deadline = time.time() + 10
                while seen is None and time.time() < deadline:
                    seen = first_success_after(hist, hit)
                    time.sleep(0.05)
                if seen is not None:
                    client_recoveries.append(seen - hit)
                ok = probe.wait(10) if probe else seen
                if ok is not None:
                    recoveries.append(ok - hit)
                else:
                    problems.append(f"round {rnd} ({what}): no write acknowledged within 10 s")
            for term, ids in leaders_by_term(cluster).items():
                if len(ids) > 1:
                    problems.append(f"round {rnd}: split brain: nodes {sorted(ids)} lead term {term}")
            bad = check_history(hist.snapshot())
            if bad:
                problems.append(f"round {rnd} ({what}): not linearizable for {bad}")
            rec = f"; recovered in {ok - hit:.2f}s" if hit is not None and ok is not None else ""
            print(f"  round {rnd}: {what}; converged {converged[-1] if converged else -1:.1f}s after healing"
                  f"{rec}"
                  f"{'; ' + problems[-1] if problems and problems[-1].startswith(f'round {rnd}') else ''}",
                  flush=True)
        stop.set()
        for t in threads:
            t.join(timeout=15)
        problems.extend(hist.problems)
        msgs = None
        if xmpp:
            xmpp.finish()
            msgs = xmpp.report(hist.faults, cluster.dead_after_ms / 1000, hist.kills)
            limit = cluster.dead_after_ms / 1000 + a.hold + 2
            if msgs["stale_online_max_s"] > limit:
                problems.append(f"a dead node's user stayed online to a watcher for "
                                f"{msgs['stale_online_max_s']:.1f} s (limit {limit:.1f} s)")
            if msgs["lost"]:
                problems.append(f"{msgs['lost']} messages lost ({msgs['lost_acknowledged']} of them acknowledged, the others outside a fault), e.g. {msgs['lost_examples']}")
            if msgs["duplicated"] and a.tolerate_duplicates:
                print(f"KNOWN DEFECT: {msgs['duplicated']} messages delivered twice, e.g. "
                      f"{msgs['dup_examples']}")
            elif msgs["duplicated"]:
                problems.append(f"{msgs['duplicated']} messages delivered twice, e.g. "
                                f"{msgs['dup_examples']}; faults {hist.faults}; sent "
                                f"{[xmpp.sent.get(d[0]) for d in msgs['dup_examples']]}")
            if msgs["leaks"]:
                problems.append(f"the hidden user's availability leaked: {msgs['leak_examples']}")
        bad = check_history(list(hist.ops))
        if bad:
            problems.append(f"final: not linearizable for {bad}")
        lost = len(bad)
        for code, err in hist.minority:
            if code == 0:
                problems.append("an isolated minority acknowledged a write")
            elif code != 5:  # "no quorum", or "may or may not have been applied"
                problems.append(f"an isolated minority refused a write unclearly: exit {code}: {err}")
        for err in sorted(set(hist.refusals)):
            print("  refused by the cluster:", err)
    finally:
        cluster.stop()
    # Recovery: a write acknowledged after the fault hit the leader (its death, pause
    # or isolation); measured from the fault, so it includes the election.
    over = [r for r in recoveries if r > a.recovery_budget]
    if over:
        problems.append(f"{len(over)} recoveries over {a.recovery_budget} s (max {max(over):.2f} s)")
    table = {
        "seed": seed, "rounds": a.rounds, "faults": faults,
        "operations": {f"{k[0]} {k[1]}": v for k, v in sorted(hist.counts.items())},
        "non_linearizable_keys": lost,
        "recovery_s": {"n": len(recoveries), "p50": pct(recoveries, 50),
                       "p99": pct(recoveries, 99), "max": max(recoveries, default=0.0)},
        "writers_first_success_s": {
            "p50": pct(client_recoveries, 50), "p99": pct(client_recoveries, 99),
            "max": max(client_recoveries, default=0.0)},
        "messages": msgs,
        "problems": problems,
    }
    print("\n| rounds | faults | non-linearizable keys | recovery p50 / p99 / max s |"
          " writers' first success p50 / p99 / max s |")
    print("|---:|---|---:|---:|---:|")
    fs = ", ".join(f"{k} {v}" for k, v in sorted(faults.items()))
    r = table["recovery_s"]
    w = table["writers_first_success_s"]
    print(f"| {a.rounds} | {fs} | {lost} | {r['p50']:.2f} / {r['p99']:.2f} / {r['max']:.2f} |"
          f" {w['p50']:.2f} / {w['p99']:.2f} / {w['max']:.2f} |")
    print("\n| operation | outcome | count |\n|---|---|---:|")
    for (k, o), v in sorted(hist.counts.items()):
        print(f"| {k} | {o} | {v} |")
    if msgs:
        print("\n| messages sent | acknowledged (XEP-0198) | delivered | bounced |"
              " unacknowledged, lost in flight (faulty node) | lost (of them acknowledged) |"
              " duplicated | again after a fault (at least once) | leaks | stale online max s |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        print(f"| {msgs['messages_sent']} | {msgs['acknowledged']} | {msgs['delivered']} |"
              f" {msgs['bounced']} | {msgs['in_flight_lost']} |"
              f" {msgs['lost']} ({msgs['lost_acknowledged']}) | {msgs['duplicated']} |"
              f" {msgs['redelivered']} | {msgs['leaks']} |"
              f" {msgs['stale_online_max_s']:.2f} ({msgs['stale_samples']} samples) |")
    if a.json:
        print(json.dumps(table))
    for p in problems:
        print("PROBLEM:", p)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
