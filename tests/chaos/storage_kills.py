#!/usr/bin/python3
"""Storage faults: kill -9 a node in the middle of heavy writes, again and again. After
every kill the node must start with its data intact (every acknowledged write there),
or refuse to start with a clear message naming the damage; anything else is a failure.

Run through scripts/chaos --storage-kills N (in a namespace of its own)."""

import argparse
import os
import random
import re
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cluster import Cluster  # noqa: E402

OWNERS = [f"s{i}" for i in range(20)]
PER_CALL = 25


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--bins", required=True)
    ap.add_argument("--kills", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--writers", type=int, default=4)
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else random.randrange(1 << 31)
    rng = random.Random(seed)
    print(f"storage kills: seed {seed}, {a.kills} kills", flush=True)
    c = Cluster(a.run, a.bins, 1)
    node = c.nodes[0]
    acked = {o: set() for o in OWNERS}
    lock = threading.Lock()
    counter = [0]
    results = {"intact": 0, "refused_to_start": 0, "lost": 0}
    restart_s = []
    problems = []
    try:
        c.form()
        code, _, err = c.ctl(node, "settings", "set", "presence.max_contact_list_size", "unlimited")
        assert code == 0, err
        for o in OWNERS:
            code, _, err = c.ctl(node, "user", "add", o, "--password", "pw-" + o)
            assert code == 0, err
        for k in range(1, a.kills + 1):
            stop = threading.Event()

            def write(wrng):
                while not stop.is_set():
                    o = wrng.choice(OWNERS)
                    with lock:
                        base = counter[0]
                        counter[0] += PER_CALL
                    contacts = [f"k{base + j}@remote.example" for j in range(PER_CALL)]
                    code, _, _ = c.ctl(node, "roster", "add", o, *contacts, timeout=3)
                    if code == 0:
                        with lock:
                            acked[o].update(contacts)

            ts = [threading.Thread(target=write, args=(random.Random(rng.random()),))
                  for _ in range(a.writers)]
            for t in ts:
                t.start()
            time.sleep(rng.uniform(0.2, 1.5))
            node.kill9()
            stop.set()
            for t in ts:
                t.join()
            t0 = time.time()
            node.start()
            try:
                # Generous: the state grows to millions of items, and the machine may
                # be running other work (a restart takes 2 to 5 s idle at 1.5 M items).
                Cluster.wait(lambda: node.health() == 200 or not node.alive(), 90, "restart")
            except TimeoutError:
                problems.append(f"kill {k}: the node neither became healthy nor exited in 90 s")
                break
            if not node.alive():
                log = open(node.log).read()[-3000:]
                if re.search(r"corrupt|damaged|cannot (open|read)|wipe", log, re.I):
                    results["refused_to_start"] += 1
                    print(f"  kill {k}: refused to start (clear message); log tail:\n{log}")
                else:
                    problems.append(f"kill {k}: the node exited without naming the damage:\n{log}")
                break
            restart_s.append(time.time() - t0)
            # Spot-check two owners each round; everything at the end.
            for o in rng.sample(OWNERS, 2):
                if not check(c, node, o, acked[o], problems, k):
                    results["lost"] += 1
            results["intact"] += 1
            if k % 50 == 0:
                print(f"  {k} kills, {sum(len(v) for v in acked.values())} items acknowledged,"
                      f" restart p50 {sorted(restart_s)[len(restart_s) // 2]:.2f} s", flush=True)
        if not problems:
            for o in OWNERS:
                check(c, node, o, acked[o], problems, "final")
    finally:
        c.stop()
    rs = sorted(restart_s) or [0.0]
    print("\n| kills | intact | refused to start | lost writes | items acked | restart p50 / max s |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(f"| {a.kills} | {results['intact']} | {results['refused_to_start']} | {results['lost']} |"
          f" {sum(len(v) for v in acked.values())} | {rs[len(rs) // 2]:.2f} / {rs[-1]:.2f} |")
    for p in problems:
        print("PROBLEM:", p)
    sys.exit(1 if problems else 0)


def check(c, node, owner, want, problems, when):
    code, doc, err = c.ctl(node, "roster", "show", owner, timeout=20)
    if code != 0 or doc is None:
        problems.append(f"kill {when}: roster show {owner} failed: {err}")
        return False
    have = {i.get("jid") for i in doc.get("items", [])}
    missing = want - have
    if missing:
        problems.append(f"kill {when}: {len(missing)} acknowledged items of {owner} lost, e.g. "
                        f"{sorted(missing)[:3]}")
        return False
    return True


if __name__ == "__main__":
    main()
