//! Properties of the two choke points over random states and contexts:
//! - nobody but the owner ever gets `Available` for an owner whose sharing is off;
//! - the candidate lists agree with `visibility` for every pair;
//! - egress lets nothing out while federation does not exist.

use presenced_model::{Command, Credentials, NewContact, Override, PolicyKey, State};
use presenced_policy::{
    Context, Egress, Grants, Outbound, OutboundKind, Seen, egress, visibility, visible_to,
    watchers_of,
};
use proptest::prelude::*;

const D: &str = "ex.test";
const USERS: [&str; 5] = ["u0", "u1", "u2", "u3", "u4"];

fn jid(u: &str) -> String {
    format!("{u}@{D}")
}

/// One random step that shapes rosters and sharing.
#[derive(Debug, Clone)]
enum Step {
    Add(usize, usize),
    Subscribe(usize, usize),
    Approve(usize, usize),
    Unsubscribe(usize, usize),
    Revoke(usize, usize),
    Remove(usize, usize),
    Remote(usize),
    Sharing(bool),
    Override(usize, u8),
}

fn step() -> impl Strategy<Value = Step> {
    let u = 0..USERS.len();
    prop_oneof![
        (u.clone(), u.clone()).prop_map(|(a, b)| Step::Add(a, b)),
        (u.clone(), u.clone()).prop_map(|(a, b)| Step::Subscribe(a, b)),
        (u.clone(), u.clone()).prop_map(|(a, b)| Step::Approve(a, b)),
        (u.clone(), u.clone()).prop_map(|(a, b)| Step::Unsubscribe(a, b)),
        (u.clone(), u.clone()).prop_map(|(a, b)| Step::Revoke(a, b)),
        (u.clone(), u.clone()).prop_map(|(a, b)| Step::Remove(a, b)),
        u.clone().prop_map(Step::Remote),
        any::<bool>().prop_map(Step::Sharing),
        (u, 0u8..3).prop_map(|(a, o)| Step::Override(a, o)),
    ]
}

fn build(steps: &[Step]) -> State {
    let mut s = State::default();
    let _ = s.apply(&Command::Init { domain: D.into() });
    for u in USERS {
        let _ = s.apply(&Command::CreateAccount {
            user: u.into(),
            credentials: Credentials::derive(u, D, "pw", 1),
        });
    }
    for st in steps {
        let cmd = match st {
            Step::Add(a, b) => Command::AddContacts {
                entries: vec![NewContact {
                    user: USERS[*a].into(),
                    contact: jid(USERS[*b]),
                    name: None,
                    groups: vec![],
                }],
            },
            Step::Subscribe(a, b) => Command::Subscribe {
                user: USERS[*a].into(),
                contact: jid(USERS[*b]),
            },
            Step::Approve(a, b) => Command::Approve {
                user: USERS[*a].into(),
                requester: jid(USERS[*b]),
            },
            Step::Unsubscribe(a, b) => Command::Unsubscribe {
                user: USERS[*a].into(),
                contact: jid(USERS[*b]),
            },
            Step::Revoke(a, b) => Command::Revoke {
                user: USERS[*a].into(),
                watcher: jid(USERS[*b]),
            },
            Step::Remove(a, b) => Command::RemoveContact {
                user: USERS[*a].into(),
                contact: jid(USERS[*b]),
            },
            Step::Remote(a) => Command::AddContacts {
                entries: vec![NewContact {
                    user: USERS[*a].into(),
                    contact: "friend@elsewhere.test".into(),
                    name: None,
                    groups: vec![],
                }],
            },
            Step::Sharing(on) => Command::SetSetting {
                key: "availability_sharing".into(),
                value: if *on { "on" } else { "off" }.into(),
            },
            Step::Override(a, o) => Command::SetPolicy {
                user: USERS[*a].into(),
                key: PolicyKey::AvailabilitySharing,
                value: [Override::Inherit, Override::On, Override::Off][*o as usize],
            },
        };
        let _ = s.apply(&cmd);
    }
    s
}

fn context() -> impl Strategy<Value = Context> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(directed, temporary, room)| Context {
        directed,
        temporary,
        room,
    })
}

/// Grants that entitle some random pairs beyond the roster.
#[derive(Debug, Clone)]
struct RandomGrants(Vec<(usize, usize, Context)>);

impl Grants for RandomGrants {
    fn viewers_of(&self, owner: &str) -> Vec<(String, Context)> {
        self.0
            .iter()
            .filter(|(o, _, _)| USERS[*o] == owner)
            .map(|(_, v, c)| (jid(USERS[*v]), *c))
            .collect()
    }
    fn owners_for(&self, viewer: &str) -> Vec<(String, Context)> {
        self.0
            .iter()
            .filter(|(_, v, _)| jid(USERS[*v]) == viewer)
            .map(|(o, _, c)| (USERS[*o].to_string(), *c))
            .collect()
    }
    fn context(&self, owner: &str, viewer: &str) -> Context {
        let mut out = Context::default();
        for (o, v, c) in &self.0 {
            if USERS[*o] == owner && jid(USERS[*v]) == viewer {
                out.directed |= c.directed;
                out.temporary |= c.temporary;
                out.room |= c.room;
            }
        }
        out
    }
}

fn grants() -> impl Strategy<Value = RandomGrants> {
    proptest::collection::vec((0..USERS.len(), 0..USERS.len(), context()), 0..6)
        .prop_map(RandomGrants)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn unshared_availability_reaches_nobody_but_the_owner(
        steps in proptest::collection::vec(step(), 0..40),
        ctx in context(),
    ) {
        let s = build(&steps);
        for owner in USERS {
            if s.sharing_for(owner) {
                continue;
            }
            for viewer in USERS.iter().map(|v| jid(v)).chain(["friend@elsewhere.test".to_string()]) {
                let seen = visibility(&s, owner, &viewer, ctx);
                if viewer != jid(owner) {
                    prop_assert_ne!(seen, Seen::Available, "{} saw {}", viewer, owner);
                }
            }
            for (viewer, seen) in watchers_of(&s, owner, &()) {
                if viewer != jid(owner) {
                    prop_assert_ne!(seen, Seen::Available);
                }
            }
        }
    }

    #[test]
    fn candidate_lists_agree_with_visibility(
        steps in proptest::collection::vec(step(), 0..40),
        g in grants(),
    ) {
        let s = build(&steps);
        for owner in USERS {
            let listed: Vec<(String, Seen)> = watchers_of(&s, owner, &g);
            for viewer in USERS.iter().map(|v| jid(v)).chain(["friend@elsewhere.test".to_string()]) {
                let seen = visibility(&s, owner, &viewer, g.context(owner, &viewer));
                let got = listed.iter().find(|(v, _)| *v == viewer).map(|(_, s)| *s);
                match seen {
                    Seen::Nothing => prop_assert_eq!(got, None, "{} listed for {}", viewer, owner),
                    other => prop_assert_eq!(got, Some(other), "{} for {}", viewer, owner),
                }
            }
        }
        for viewer in USERS {
            let listed = visible_to(&s, viewer, &g);
            for owner in USERS {
                let seen = visibility(&s, owner, &jid(viewer), g.context(owner, &jid(viewer)));
                let got = listed.iter().find(|(o, _)| o == owner).map(|(_, s)| *s);
                match seen {
                    Seen::Nothing => prop_assert_eq!(got, None, "{} listed for {}", owner, viewer),
                    other => prop_assert_eq!(got, Some(other), "{} for {}", owner, viewer),
                }
            }
        }
    }

    #[test]
    fn nothing_leaves_without_federation(steps in proptest::collection::vec(step(), 0..10)) {
        let s = build(&steps);
        for kind in [OutboundKind::Availability, OutboundKind::Unavailable, OutboundKind::Probe,
                     OutboundKind::Subscription, OutboundKind::Message, OutboundKind::Query] {
            let ev = Outbound { from_user: Some("u0"), domain: "elsewhere.test", kind };
            prop_assert!(matches!(egress(&s, &ev), Egress::Refuse(_)));
        }
    }
}
