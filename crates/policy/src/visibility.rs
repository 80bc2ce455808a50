//! The visibility choke point.

use presenced_model::State;

/// Why the viewer might be entitled to the owner's availability beyond the roster.
/// These entitlements live in node memory (the router's), not in the replicated state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Context {
    /// The owner sent this viewer directed presence (RFC 6121 §4.6) and has not sent
    /// directed unavailable since.
    pub directed: bool,
    /// The viewer holds a temporary (ad-hoc) subscription to the owner.
    pub temporary: bool,
    /// The viewer sees the owner as a chat-room occupant.
    pub room: bool,
}

/// What a viewer is shown of an owner's availability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Seen {
    /// The owner's real availability (activity, note, preference, extensions).
    Available,
    /// "Unavailable", whatever the owner's real state: the viewer is entitled to the
    /// owner's presence, but the owner's availability is not shared.
    Unavailable,
    /// "Unknown": a chat-room occupant whose availability is not shared.
    Unknown,
    /// Nothing at all: the viewer is not entitled to the owner's presence.
    Nothing,
}

/// May `viewer` (a bare JID, local or not) see the availability of `owner` (a local
/// user name)?
///
/// - A user always sees their own resources.
/// - A viewer is entitled when the owner's roster lets them watch (`from` or `both`),
///   when the owner sent them directed presence, when they hold a temporary
///   subscription, or when both are in a chat room.
/// - An entitled viewer sees the real availability only while availability sharing is
///   on for the owner (the cluster setting, unless the owner's override says
///   otherwise); otherwise "unavailable", or "unknown" when seen as a chat-room
///   occupant (`ctx.room`: the view is the room's).
pub fn visibility(state: &State, owner: &str, viewer: &str, ctx: Context) -> Seen {
    if state.local_user(viewer) == Some(owner) {
        return Seen::Available;
    }
    let watches = state
        .user(owner)
        .and_then(|u| u.roster.items.get(viewer))
        .is_some_and(|i| i.subscription.contact_watches());
    let entitled = watches || ctx.directed || ctx.temporary || ctx.room;
    if !entitled {
        return Seen::Nothing;
    }
    if state.sharing_for(owner) {
        Seen::Available
    } else if ctx.room {
        Seen::Unknown
    } else {
        Seen::Unavailable
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use presenced_model::{Command, Credentials, NewContact, Override, PolicyKey};

    fn state() -> State {
        let mut s = State::default();
        let ok = |s: &mut State, c: Command| assert!(s.apply(&c).0.is_ok(), "{c:?}");
        ok(
            &mut s,
            Command::Init {
                domain: "ex.org".into(),
            },
        );
        for u in ["alice", "bob", "carol"] {
            ok(
                &mut s,
                Command::CreateAccount {
                    user: u.into(),
                    credentials: Credentials::derive(u, "ex.org", "pw", 4096),
                },
            );
        }
        // bob sees alice (alice: from bob; bob: to alice)
        ok(
            &mut s,
            Command::AddContacts {
                entries: vec![NewContact {
                    user: "bob".into(),
                    contact: "alice@ex.org".into(),
                    name: None,
                    groups: vec![],
                }],
            },
        );
        s
    }

    #[test]
    fn own_resources_always_see_each_other() {
        let mut s = state();
        let _ = s.apply(&Command::SetSetting {
            key: "availability_sharing".into(),
            value: "false".into(),
        });
        assert_eq!(
            visibility(&s, "alice", "alice@ex.org", Context::default()),
            Seen::Available
        );
    }

    #[test]
    fn watcher_sees_real_state_only_while_shared() {
        let mut s = state();
        let ctx = Context::default();
        assert_eq!(visibility(&s, "alice", "bob@ex.org", ctx), Seen::Available);
        // bob does not let alice watch him
        assert_eq!(visibility(&s, "bob", "alice@ex.org", ctx), Seen::Nothing);
        assert_eq!(visibility(&s, "alice", "carol@ex.org", ctx), Seen::Nothing);
        let _ = s.apply(&Command::SetSetting {
            key: "availability_sharing".into(),
            value: "off".into(),
        });
        assert_eq!(
            visibility(&s, "alice", "bob@ex.org", ctx),
            Seen::Unavailable
        );
        // alice's override turns it back on for her alone
        let _ = s.apply(&Command::SetPolicy {
            user: "alice".into(),
            key: PolicyKey::AvailabilitySharing,
            value: Override::On,
        });
        assert_eq!(visibility(&s, "alice", "bob@ex.org", ctx), Seen::Available);
    }

    #[test]
    fn per_user_off_hides_only_that_user() {
        let mut s = state();
        let _ = s.apply(&Command::SetPolicy {
            user: "alice".into(),
            key: PolicyKey::AvailabilitySharing,
            value: Override::Off,
        });
        let ctx = Context::default();
        assert_eq!(
            visibility(&s, "alice", "bob@ex.org", ctx),
            Seen::Unavailable
        );
        let directed = Context {
            directed: true,
            ..ctx
        };
        assert_eq!(
            visibility(&s, "bob", "alice@ex.org", directed),
            Seen::Available
        );
        let room = Context { room: true, ..ctx };
        assert_eq!(visibility(&s, "alice", "carol@ex.org", room), Seen::Unknown);
    }

    #[test]
    fn directed_and_temporary_entitle() {
        let s = state();
        for ctx in [
            Context {
                directed: true,
                ..Default::default()
            },
            Context {
                temporary: true,
                ..Default::default()
            },
        ] {
            assert_eq!(visibility(&s, "bob", "carol@ex.org", ctx), Seen::Available);
        }
    }
}
