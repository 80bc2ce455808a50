"""A linearizability checker for the chaos run's roster history (Wing & Gong's search
with Lowe's memoisation, as Knossos and porcupine do it).

The model: every (owner, contact) pair is an independent register holding "present"
or "absent" (`roster add` writes present, `roster remove` writes absent, `roster show`
reads it). Linearizability is compositional (Herlihy & Wing), so each pair's history
is checked alone, which keeps the search small.

An operation is (start, end, kind, value): kind "w" writes value, "r" read value.
An operation whose outcome the client never learned (a timeout, a lost connection)
may have taken effect at any time after it started, or never: it is given end =
infinity and may also be left out.
"""

INF = float("inf")


def check_register(ops, initial=False):
    """True when `ops` on one register is linearizable from `initial`.

    ops: list of dicts {start, end, kind: "w"|"r", value: bool, maybe: bool}
    (maybe: the outcome is unknown, so the op may also never have happened).
    """
    sure = sorted((o for o in ops if not o.get("maybe")), key=lambda o: o["start"])
    maybe = [o for o in ops if o.get("maybe")]
    n, m = len(sure), len(maybe)
    if n == 0:
        return True
    full = (1 << n) - 1
    seen = set()
    # State: (bitmask of linearized sure ops, bitmask of applied maybe ops, value).
    stack = [(0, 0, initial)]
    while stack:
        done, mdone, value = stack.pop()
        if done == full:
            return True
        key = (done, mdone, value)
        if key in seen:
            continue
        seen.add(key)
        # The lowest pending sure op; none before it is pending.
        lo = (~done & (done + 1)).bit_length() - 1
        # The next op must start before every pending op's end. Scanning in start
        # order can stop at the first op starting after the horizon: its end is later.
        horizon = INF
        i = lo
        while i < n and sure[i]["start"] <= horizon:
            if not done >> i & 1:
                horizon = min(horizon, sure[i]["end"])
            i += 1
        i = lo
        while i < n and sure[i]["start"] <= horizon:
            if not done >> i & 1:
                o = sure[i]
                if o["kind"] == "w":
                    stack.append((done | 1 << i, mdone, o["value"]))
                elif o["value"] == value:
                    stack.append((done | 1 << i, mdone, value))
            i += 1
        # A write of unknown outcome may take effect now (once), if it had started.
        for k in range(m):
            if not mdone >> k & 1 and maybe[k]["start"] <= horizon and maybe[k]["kind"] == "w":
                stack.append((done, mdone | 1 << k, maybe[k]["value"]))
    return False


def check_history(history):
    """history: list of ops with a "key". Returns the keys whose history is not
    linearizable."""
    by_key = {}
    for o in history:
        if o.get("key") is not None:
            by_key.setdefault(o["key"], []).append(o)
    return [k for k, ops in by_key.items() if not check_register(ops)]


if __name__ == "__main__":
    # Self-test: a linearizable and a non-linearizable history.
    ok = [
        {"start": 0, "end": 2, "kind": "w", "value": True},
        {"start": 1, "end": 3, "kind": "r", "value": False},
        {"start": 4, "end": 5, "kind": "r", "value": True},
    ]
    assert check_register(ok)
    bad = [
        {"start": 0, "end": 1, "kind": "w", "value": True},
        {"start": 2, "end": 3, "kind": "r", "value": False},
    ]
    assert not check_register(bad)
    maybe = [
        {"start": 0, "end": INF, "kind": "w", "value": True, "maybe": True},
        {"start": 2, "end": 3, "kind": "r", "value": False},
        {"start": 4, "end": 5, "kind": "r", "value": True},
    ]
    assert check_register(maybe)
    stale = maybe + [{"start": 6, "end": 7, "kind": "r", "value": False}]
    assert not check_register(stale)
    print("linear.py self-test ok")
