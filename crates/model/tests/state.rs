use std::collections::BTreeMap;

use presenced_model::{
    Command, Credentials, Event, NewContact, OfflineMessage, Override, PolicyKey, Refusal, Reply,
    State, Subscription,
};
use proptest::prelude::*;

const D: &str = "example.test";

fn creds() -> Credentials {
    // Cheap fixed credentials: derivation cost is irrelevant to the state machine.
    Credentials::derive("x", D, "pw", 1)
}

fn init() -> State {
    let mut s = State::default();
    ok(&mut s, Command::Init { domain: D.into() });
    s
}

fn ok(s: &mut State, c: Command) -> Reply {
    let (out, _) = s.apply(&c);
    out.unwrap_or_else(|e| panic!("{c:?} refused: {e}"))
}

fn user(s: &mut State, u: &str) {
    ok(
        s,
        Command::CreateAccount {
            user: u.into(),
            credentials: creds(),
        },
    );
}

fn jid(u: &str) -> String {
    format!("{u}@{D}")
}

fn add(s: &mut State, u: &str, contacts: &[&str]) -> Reply {
    let entries = contacts
        .iter()
        .map(|c| NewContact {
            user: u.into(),
            contact: jid(c),
            name: None,
            groups: vec![],
        })
        .collect();
    ok(s, Command::AddContacts { entries })
}

fn added_refused(r: Reply) -> (usize, Vec<Refusal>) {
    match r {
        Reply::Contacts { added, refused } => {
            (added.len(), refused.into_iter().map(|r| r.reason).collect())
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn bulk_add_crossing_the_limit_adds_up_to_it() {
    let mut s = init();
    user(&mut s, "alice");
    let names: Vec<String> = (0..201).map(|i| format!("u{i:03}")).collect();
    for n in &names {
        user(&mut s, n);
    }
    let first: Vec<&str> = names[..195].iter().map(String::as_str).collect();
    assert_eq!(added_refused(add(&mut s, "alice", &first)).0, 195);
    let next: Vec<&str> = names[195..201].iter().map(String::as_str).collect();
    let (added, refused) = added_refused(add(&mut s, "alice", &next));
    assert_eq!(added, 5, "195 + 6 at 200 adds 5");
    assert_eq!(refused.len(), 1);
    assert!(
        matches!(&refused[0], Refusal::ContactListFull(who, lim) if who == &jid("alice") && lim == "200")
    );
    assert_eq!(s.user("alice").unwrap().roster.items.len(), 200);
}

#[test]
fn a_user_at_the_limit_cannot_be_added() {
    let mut s = init();
    ok(
        &mut s,
        Command::SetSetting {
            key: "max_contact_list_size".into(),
            value: "2".into(),
        },
    );
    for u in ["alice", "bob", "carol", "dave"] {
        user(&mut s, u);
    }
    add(&mut s, "alice", &["bob", "carol"]);
    // dave adding alice would put a reciprocal item into alice's full list
    let (added, refused) = added_refused(add(&mut s, "dave", &["alice"]));
    assert_eq!(added, 0);
    assert!(matches!(&refused[0], Refusal::ContactListFull(who, _) if who == &jid("alice")));
    // a subscription request is refused the same way
    let (out, ev) = s.apply(&Command::Subscribe {
        user: "dave".into(),
        contact: jid("alice"),
    });
    assert!(matches!(out, Err(Refusal::ContactListFull(..))));
    assert!(ev.is_empty());
    // unlimited lifts it
    ok(
        &mut s,
        Command::SetSetting {
            key: "max_contact_list_size".into(),
            value: "unlimited".into(),
        },
    );
    assert_eq!(added_refused(add(&mut s, "dave", &["alice"])).0, 1);
}

#[test]
fn watcher_limit() {
    let mut s = init();
    ok(
        &mut s,
        Command::SetSetting {
            key: "max_watchers".into(),
            value: "2".into(),
        },
    );
    for u in ["star", "a", "b", "c"] {
        user(&mut s, u);
    }
    assert_eq!(added_refused(add(&mut s, "a", &["star"])).0, 1);
    assert_eq!(added_refused(add(&mut s, "b", &["star"])).0, 1);
    let (added, refused) = added_refused(add(&mut s, "c", &["star"]));
    assert_eq!(added, 0);
    assert!(
        matches!(&refused[0], Refusal::WatchersFull(who, lim) if who == &jid("star") && lim == "2")
    );
    assert_eq!(s.user("star").unwrap().roster.watcher_count(), 2);
    ok(
        &mut s,
        Command::SetSetting {
            key: "max_watchers".into(),
            value: "unlimited".into(),
        },
    );
    assert_eq!(added_refused(add(&mut s, "c", &["star"])).0, 1);
}

#[test]
fn subscription_handshake_and_auto_approval() {
    let mut s = init();
    for u in ["alice", "bob", "carol"] {
        user(&mut s, u);
    }
    let (out, ev) = s.apply(&Command::Subscribe {
        user: "alice".into(),
        contact: jid("bob"),
    });
    assert_eq!(out, Ok(Reply::Subscription { approved: false }));
    assert!(ev.contains(&Event::SubscriptionRequested {
        user: "bob".into(),
        from: jid("alice")
    }));
    assert!(s.user("alice").unwrap().roster.items[&jid("bob")].ask);
    assert!(
        s.user("bob")
            .unwrap()
            .roster
            .pending_in
            .contains(&jid("alice"))
    );
    ok(
        &mut s,
        Command::Approve {
            user: "bob".into(),
            requester: jid("alice"),
        },
    );
    assert_eq!(
        s.user("alice").unwrap().roster.items[&jid("bob")].subscription,
        Subscription::To
    );
    assert_eq!(
        s.user("bob").unwrap().roster.items[&jid("alice")].subscription,
        Subscription::From
    );
    assert!(s.user("bob").unwrap().roster.pending_in.is_empty());
    // approving twice is refused: nothing pending
    assert!(matches!(
        s.apply(&Command::Approve {
            user: "bob".into(),
            requester: jid("alice")
        })
        .0,
        Err(Refusal::NoPendingRequest(..))
    ));
    // carol lets anyone see her without approval
    ok(
        &mut s,
        Command::SetPolicy {
            user: "carol".into(),
            key: PolicyKey::ViewWithoutApproval,
            value: Override::On,
        },
    );
    assert_eq!(
        s.apply(&Command::Subscribe {
            user: "alice".into(),
            contact: jid("carol")
        })
        .0,
        Ok(Reply::Subscription { approved: true })
    );
    assert_eq!(
        s.user("alice").unwrap().roster.items[&jid("carol")].subscription,
        Subscription::To
    );
    // alice unsubscribes from bob: bob's bare reciprocal item goes away
    ok(
        &mut s,
        Command::Unsubscribe {
            user: "alice".into(),
            contact: jid("bob"),
        },
    );
    assert_eq!(
        s.user("alice").unwrap().roster.items[&jid("bob")].subscription,
        Subscription::None
    );
    assert!(
        !s.user("bob")
            .unwrap()
            .roster
            .items
            .contains_key(&jid("alice"))
    );
    s.check_invariants().unwrap();
}

#[test]
fn deleting_an_account_removes_it_from_every_roster() {
    let mut s = init();
    for u in ["alice", "bob", "carol"] {
        user(&mut s, u);
    }
    add(&mut s, "alice", &["bob", "carol"]);
    add(&mut s, "carol", &["bob"]);
    ok(
        &mut s,
        Command::Subscribe {
            user: "bob".into(),
            contact: jid("alice"),
        },
    );
    ok(&mut s, Command::DeleteAccount { user: "bob".into() });
    assert!(s.user("bob").is_none());
    for u in ["alice", "carol"] {
        let r = &s.user(u).unwrap().roster;
        assert!(!r.items.contains_key(&jid("bob")), "{u} still lists bob");
        assert!(!r.pending_in.contains(&jid("bob")));
    }
    s.check_invariants().unwrap();
    let again = State::load(s.records()).unwrap();
    assert_eq!(again, s);
}

#[test]
fn offline_queue_cap_and_suppression() {
    let mut s = init();
    user(&mut s, "bob");
    ok(
        &mut s,
        Command::SetSetting {
            key: "offline_queue_max_per_user".into(),
            value: "2".into(),
        },
    );
    let msg = |n: u64| Command::OfflineEnqueue {
        user: "bob".into(),
        message: OfflineMessage {
            from: jid("alice") + "/r",
            stamp_ms: n,
            payload: format!("m{n}"),
        },
    };
    assert_eq!(ok(&mut s, msg(1)), Reply::Queued { seq: 0 });
    assert_eq!(ok(&mut s, msg(2)), Reply::Queued { seq: 1 });
    assert!(matches!(
        s.apply(&msg(3)).0,
        Err(Refusal::OfflineQueueFull(_, 2))
    ));
    ok(
        &mut s,
        Command::OfflineAck {
            user: "bob".into(),
            upto: 0,
        },
    );
    assert_eq!(ok(&mut s, msg(4)), Reply::Queued { seq: 2 });
    ok(
        &mut s,
        Command::SetSetting {
            key: "suppress_offline_im".into(),
            value: "on".into(),
        },
    );
    assert_eq!(s.apply(&msg(5)).0, Err(Refusal::OfflineSuppressed));
    let q = &s.user("bob").unwrap().offline;
    assert_eq!(q.messages.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
}

#[test]
fn a_batch_applies_each_command_with_its_own_outcome() {
    let mut s = init();
    let out = ok(
        &mut s,
        Command::Batch {
            commands: vec![
                Command::CreateAccount {
                    user: "amy".into(),
                    credentials: creds(),
                },
                Command::CreateAccount {
                    user: "amy".into(),
                    credentials: creds(),
                },
                Command::SetSetting {
                    key: "im_enabled".into(),
                    value: "off".into(),
                },
                Command::Batch { commands: vec![] },
            ],
        },
    );
    let Reply::Batch { outcomes } = out else {
        panic!("{out:?}")
    };
    assert_eq!(outcomes.len(), 4);
    assert_eq!(outcomes[0], Ok(Reply::Done));
    assert_eq!(outcomes[1], Err(Refusal::UserExists("amy".into())));
    assert!(outcomes[2].is_ok());
    assert!(
        matches!(outcomes[3], Err(Refusal::BadValue(_))),
        "batches do not nest"
    );
    assert!(s.user("amy").is_some());
    assert!(!s.settings().im_enabled);
}

#[test]
fn bad_values_are_refused_without_change() {
    let mut s = init();
    let before = s.records();
    for c in [
        Command::SetSetting {
            key: "nope".into(),
            value: "1".into(),
        },
        Command::SetSetting {
            key: "max_watchers".into(),
            value: "lots".into(),
        },
        Command::CreateAccount {
            user: "Bad Name".into(),
            credentials: creds(),
        },
        Command::DeleteAccount {
            user: "ghost".into(),
        },
        Command::Init {
            domain: "other.test".into(),
        },
    ] {
        let (out, ev) = s.apply(&c);
        assert!(out.is_err(), "{c:?} accepted");
        assert!(ev.is_empty());
    }
    assert_eq!(s.records(), before);
}

// ------------------------------------------------------------------ property test

const USERS: &[&str] = &["ann", "anna", "ben", "cat", "dan", "eve", "fay"];

fn arb_user() -> impl Strategy<Value = String> {
    prop::sample::select(USERS).prop_map(str::to_string)
}

fn arb_contact() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => arb_user().prop_map(|u| jid(&u)),
        1 => Just("zed@remote.example".to_string()),
        1 => Just("not a jid".to_string()),
    ]
}

fn arb_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        12 => arb_single(),
        1 => prop::collection::vec(arb_single(), 0..5).prop_map(|commands| Command::Batch { commands }),
    ]
}

fn arb_single() -> impl Strategy<Value = Command> {
    let key = prop::sample::select(vec![
        "max_contact_list_size",
        "max_watchers",
        "view_without_approval",
        "offline_queue_max_per_user",
        "suppress_offline_im",
    ]);
    let value = prop::sample::select(vec!["2", "3", "4", "unlimited", "on", "off", "x"]);
    prop_oneof![
        2 => (key, value).prop_map(|(k, v)| Command::SetSetting { key: k.into(), value: v.into() }),
        3 => arb_user().prop_map(|u| Command::CreateAccount { user: u, credentials: creds() }),
        1 => arb_user().prop_map(|u| Command::DeleteAccount { user: u }),
        6 => (arb_user(), prop::collection::vec(arb_contact(), 1..5)).prop_map(|(u, cs)| Command::AddContacts {
            entries: cs.into_iter().map(|c| NewContact { user: u.clone(), contact: c, name: None, groups: vec!["g".into()] }).collect()
        }),
        2 => (arb_user(), arb_contact()).prop_map(|(u, c)| Command::RemoveContact { user: u, contact: c }),
        4 => (arb_user(), arb_contact()).prop_map(|(u, c)| Command::Subscribe { user: u, contact: c }),
        3 => (arb_user(), arb_contact()).prop_map(|(u, c)| Command::Approve { user: u, requester: c }),
        2 => (arb_user(), arb_contact()).prop_map(|(u, c)| Command::Unsubscribe { user: u, contact: c }),
        2 => (arb_user(), arb_contact()).prop_map(|(u, c)| Command::Revoke { user: u, watcher: c }),
        2 => (arb_user(), arb_contact()).prop_map(|(u, c)| Command::UpdateItem { user: u, contact: c, name: Some("n".into()), groups: vec![] }),
        2 => (arb_user(), any::<u64>()).prop_map(|(u, n)| Command::OfflineEnqueue {
            user: u, message: OfflineMessage { from: "x@y/z".into(), stamp_ms: n, payload: "p".into() } }),
        1 => (arb_user(), 0u64..4).prop_map(|(u, n)| Command::OfflineAck { user: u, upto: n }),
    ]
}

fn sizes(s: &State) -> BTreeMap<String, (usize, usize, usize)> {
    s.users()
        .map(|(u, d)| {
            (
                u.clone(),
                (
                    d.roster.items.len(),
                    d.roster.watcher_count(),
                    d.offline.messages.len(),
                ),
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn replicas_agree_and_limits_hold(log in prop::collection::vec(arb_command(), 1..120)) {
        // `a` and `twin` apply the same log; `b` applies each batch's commands one at a time.
        let mut a = init();
        let mut twin = init();
        let mut b = init();
        // `disk` is what the storage layer would hold: the changes written after each apply.
        let mut disk: BTreeMap<Vec<u8>, Vec<u8>> = a.records().into_iter().collect();
        a.take_changes();
        for cmd in &log {
            let (ra, ea) = a.apply(cmd);
            let (rt, et) = twin.apply(cmd);
            prop_assert_eq!(&ra, &rt);
            prop_assert_eq!(&ea, &et);
            let singles: Vec<&Command> = match cmd {
                Command::Batch { commands } => commands.iter().collect(),
                c => vec![c],
            };
            let mut rb = Vec::new();
            let mut eb = Vec::new();
            for c in singles {
                let before = sizes(&b);
                let (r, e) = b.apply(c);
                rb.push(r);
                eb.extend(e);
                let st = b.settings().clone();
                for (u, (items, watchers, queued)) in sizes(&b) {
                    let (i0, w0, q0) = before.get(&u).copied().unwrap_or((0, 0, 0));
                    // a count may sit above a limit that was lowered, but never grows past it
                    if let Some(room) = st.max_contact_list_size.room(0) {
                        prop_assert!(items <= room.max(i0), "{u}: {items} contacts > {room}");
                    }
                    if let Some(room) = st.max_watchers.room(0) {
                        prop_assert!(watchers <= room.max(w0), "{u}: {watchers} watchers > {room}");
                    }
                    prop_assert!(queued <= (st.offline_queue_max_per_user as usize).max(q0));
                }
            }
            // a batch is exactly its commands in order: same outcomes, same events
            match cmd {
                Command::Batch { .. } => prop_assert_eq!(&ra, &Ok(Reply::Batch { outcomes: rb })),
                _ => prop_assert_eq!(&ra, &rb[0]),
            }
            prop_assert_eq!(&ea, &eb);
            for (k, v) in a.take_changes() {
                match v { Some(v) => { disk.insert(k, v); } None => { disk.remove(&k); } }
            }
            a.check_invariants().map_err(TestCaseError::fail)?;
        }
        prop_assert_eq!(&a, &twin);
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(a.records(), b.records());
        // what was persisted incrementally is exactly the state, and loads back to it
        let show = |r: Vec<(Vec<u8>, Vec<u8>)>| -> Vec<String> {
            r.into_iter().map(|(k, v)| format!("{}={}", String::from_utf8_lossy(&k), String::from_utf8_lossy(&v))).collect()
        };
        prop_assert_eq!(show(disk.clone().into_iter().collect()), show(a.records()));
        let loaded = State::load(disk).unwrap();
        prop_assert_eq!(&loaded, &a);
    }
}

#[test]
fn roster_changes_since_a_version_are_exact_or_refused() {
    let mut s = init();
    for u in ["alice", "bob", "carol", "dave"] {
        user(&mut s, u);
    }
    add(&mut s, "alice", &["bob"]);
    let v1 = s.user("alice").unwrap().roster.version;
    add(&mut s, "alice", &["carol", "dave"]);
    ok(
        &mut s,
        Command::RemoveContact {
            user: "alice".into(),
            contact: jid("bob"),
        },
    );
    let c = s.roster_changes_since("alice", v1).unwrap();
    let changed: Vec<&str> = c.changed.iter().map(|i| i.jid.as_str()).collect();
    assert_eq!(changed, vec![jid("carol"), jid("dave")]);
    assert_eq!(c.removed.len(), 1);
    assert_eq!(c.removed[0].1, jid("bob"));
    assert_eq!(c.version, s.user("alice").unwrap().roster.version);
    assert!(c.changed.iter().all(|i| i.ver > v1));
    // Nothing after the current version.
    let now = s.roster_changes_since("alice", c.version).unwrap();
    assert!(now.changed.is_empty() && now.removed.is_empty());
    // A replica that loaded the state cannot tell removals before it loaded.
    let loaded = State::load(s.records()).unwrap();
    assert_eq!(loaded, s);
    assert!(loaded.roster_changes_since("alice", v1).is_none());
    assert!(loaded.roster_changes_since("alice", c.version).is_some());
    // Item versions survive a reload.
    assert_eq!(
        loaded.user("alice").unwrap().roster.items[&jid("carol")].ver,
        s.user("alice").unwrap().roster.items[&jid("carol")].ver
    );
}
