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
    ops = sorted(ops, key=lambda o: o["start"])
    n = len(ops)
    if n == 0:
        return True
    # Depth-first search over "which op is linearized next", memoised on
    # (set of done ops, register value).
    seen = set()
    stack = [(0, initial)]  # bitmask of linearized ops, value
    full = 0
    for i, o in enumerate(ops):
        if not o.get("maybe"):
            full |= 1 << i
    while stack:
        done, value = stack.pop()
        if done & full == full:
            return True
        key = (done, value)
        if key in seen:
            continue
        seen.add(key)
        # The next op must start before every pending (not done) op's end.
        horizon = min((ops[i]["end"] for i in range(n) if not done >> i & 1), default=INF)
        for i in range(n):
            if done >> i & 1:
                continue
            o = ops[i]
            if o["start"] > horizon:
                break
            if o["kind"] == "w":
                stack.append((done | 1 << i, o["value"]))
            elif o["value"] == value:
                stack.append((done | 1 << i, value))
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
