//! The peer-link wire format. Each frame's envelope (`proto/router.proto`) names the
//! format of its event batch:
//!
//! - format 3 (this release): JSON of [`PeerEvent`] as defined here, addresses typed,
//!   with the acknowledged forwarding of messages (`forward`, `receipt`).
//! - format 2 (the previous release): the same without those two events. New
//!   optional fields carry `#[serde(default)]`, so a node reads frames of a later
//!   one that only added fields, and unknown fields are ignored. Spoken to a peer
//!   that refuses format 3: messages then go as plain deliveries (see [`downgrade`]).
//! - format 0/1 (the previous release, no format field): its JSON with JID strings
//!   and XMPP-shaped availability, read by [`decode_v1`], so a node talks to a peer
//!   one release older while a cluster is upgraded.

use presenced_model::RosterItem;
use serde::Deserialize;

use crate::address::Domains;
use crate::directory::SessionInfo;
use crate::offline;
use crate::peer::PeerEvent;
use crate::{Activity, Availability, Delivery, PresenceState, SubscriptionKind};

/// The format this release writes.
pub const FORMAT: u32 = 3;
/// The previous release's format.
pub const FORMAT_2: u32 = 2;

pub fn encode(events: &[PeerEvent]) -> Vec<u8> {
    serde_json::to_vec(events).expect("peer events always serialise")
}

pub fn decode(format: u32, domains: &Domains, bytes: &[u8]) -> Result<Vec<PeerEvent>, String> {
    match format {
        FORMAT | FORMAT_2 => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
        0 | 1 => decode_v1(domains, bytes),
        other => Err(format!(
            "peer-link format {other} is newer than this node reads"
        )),
    }
}

#[derive(Deserialize)]
struct V1Avail {
    #[serde(default)]
    show: String,
    status: Option<String>,
    #[serde(default)]
    priority: i8,
}

impl From<V1Avail> for Availability {
    fn from(a: V1Avail) -> Availability {
        Availability {
            activity: match a.show.as_str() {
                "chat" => Activity::Chatty,
                "away" => Activity::Away,
                "xa" => Activity::ExtendedAway,
                "dnd" => Activity::Busy,
                _ => Activity::Available,
            },
            note: a.status,
            preference: a.priority,
            extensions: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
struct V1Session {
    user: String,
    resource: String,
    sid: u64,
    avail: Option<V1Avail>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum V1State {
    Available(V1Avail),
    Unavailable,
}

#[derive(Deserialize)]
#[serde(tag = "d", rename_all = "snake_case")]
enum V1Delivery {
    Presence {
        from: String,
        state: V1State,
    },
    Subscription {
        from: String,
        kind: SubscriptionKind,
    },
    Message(serde_json::Value),
    RosterPush {
        jid: String,
        item: Option<Box<RosterItem>>,
        version: u64,
    },
    Replaced,
    Close {
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(tag = "e", rename_all = "snake_case")]
enum V1Event {
    Hello {
        sessions: Vec<V1Session>,
    },
    Up {
        user: String,
        resource: String,
        sid: u64,
    },
    Presence {
        user: String,
        resource: String,
        avail: Option<V1Avail>,
    },
    Down {
        user: String,
        resource: String,
        sid: u64,
    },
    Deliver {
        user: String,
        resource: String,
        delivery: V1Delivery,
    },
    Heartbeat,
}

/// Read a batch written by the previous release.
pub fn decode_v1(domains: &Domains, bytes: &[u8]) -> Result<Vec<PeerEvent>, String> {
    let events: Vec<V1Event> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(events.len());
    for ev in events {
        out.push(match ev {
            V1Event::Hello { sessions } => PeerEvent::Hello {
                sessions: sessions
                    .into_iter()
                    .map(|s| SessionInfo {
                        user: s.user,
                        resource: s.resource,
                        sid: s.sid,
                        avail: s.avail.map(Into::into),
                    })
                    .collect(),
            },
            V1Event::Up {
                user,
                resource,
                sid,
            } => PeerEvent::Up {
                user,
                resource,
                sid,
            },
            V1Event::Presence {
                user,
                resource,
                avail,
            } => PeerEvent::Presence {
                user,
                resource,
                avail: avail.map(Into::into),
                note: None,
            },
            V1Event::Down {
                user,
                resource,
                sid,
            } => PeerEvent::Down {
                user,
                resource,
                sid,
            },
            V1Event::Deliver {
                user,
                resource,
                delivery,
            } => {
                let delivery = match delivery {
                    V1Delivery::Presence { from, state } => Delivery::Presence {
                        from: offline::v1_address(domains, &from),
                        state: match state {
                            V1State::Available(a) => PresenceState::Available(a.into()),
                            V1State::Unavailable => PresenceState::Unavailable { note: None },
                        },
                    },
                    V1Delivery::Subscription { from, kind } => Delivery::Subscription {
                        from: offline::v1_address(domains, &from),
                        kind,
                    },
                    V1Delivery::Message(m) => {
                        Delivery::Message(Box::new(offline::decode(domains, &m.to_string())?))
                    }
                    V1Delivery::RosterPush { jid, item, version } => {
                        Delivery::RosterPush { jid, item, version }
                    }
                    V1Delivery::Replaced => Delivery::Replaced,
                    V1Delivery::Close { reason } => Delivery::Close { reason },
                };
                PeerEvent::Deliver {
                    user,
                    resource,
                    delivery,
                }
            }
            V1Event::Heartbeat => PeerEvent::Heartbeat,
        });
    }
    Ok(out)
}

/// Write a batch in the previous release's format, for a peer that has not been
/// upgraded yet (it refuses format 2). What that format cannot say is left out:
/// queries between endpoints (the old peer does not route them), extension payloads,
/// activities beyond XMPP's five (sent as their XMPP rendering).
pub fn encode_v1(domains: &Domains, events: &[PeerEvent]) -> Vec<u8> {
    use serde_json::{Value, json};
    let render = |a: &crate::Address| -> String {
        use crate::Address as A;
        match a {
            A::Server => domains.users.clone(),
            A::Local(l) => match &l.endpoint {
                Some(r) => format!("{}@{}/{r}", l.user, domains.users),
                None => format!("{}@{}", l.user, domains.users),
            },
            A::Room { room, nick } => {
                let d = domains.rooms.as_deref().unwrap_or(&domains.users);
                match nick {
                    Some(n) => format!("{room}@{d}/{n}"),
                    None => format!("{room}@{d}"),
                }
            }
            A::Remote(r) => {
                let mut s = r
                    .local
                    .as_ref()
                    .map(|l| format!("{l}@"))
                    .unwrap_or_default();
                s.push_str(&r.domain);
                if let Some(res) = &r.resource {
                    s.push('/');
                    s.push_str(res);
                }
                s
            }
        }
    };
    let avail = |a: &Availability| -> Value {
        let show = match a.activity {
            Activity::Available => "online",
            Activity::Chatty => "chat",
            Activity::Away | Activity::OnThePhone | Activity::InMeeting => "away",
            Activity::ExtendedAway => "xa",
            Activity::Busy => "dnd",
        };
        json!({"show": show, "status": a.note, "priority": a.preference})
    };
    let mut out: Vec<Value> = Vec::with_capacity(events.len());
    for ev in events {
        out.push(match ev {
            PeerEvent::Hello { sessions } => json!({"e": "hello", "sessions": sessions.iter().map(|s| json!({
                "user": s.user, "resource": s.resource, "sid": s.sid,
                "avail": s.avail.as_ref().map(avail),
            })).collect::<Vec<_>>()}),
            PeerEvent::Up {
                user,
                resource,
                sid,
            } => json!({"e": "up", "user": user, "resource": resource, "sid": sid}),
            PeerEvent::Presence {
                user,
                resource,
                avail: a,
                ..
            } => json!({"e": "presence", "user": user, "resource": resource,
                        "avail": a.as_ref().map(avail)}),
            PeerEvent::Down {
                user,
                resource,
                sid,
            } => json!({"e": "down", "user": user, "resource": resource, "sid": sid}),
            PeerEvent::Heartbeat => json!({"e": "heartbeat"}),
            PeerEvent::Deliver {
                user,
                resource,
                delivery,
            } => {
                let d = match delivery {
                    Delivery::Presence { from, state } => {
                        let state = match state {
                            PresenceState::Available(a) => json!({"available": avail(a)}),
                            _ => json!("unavailable"),
                        };
                        json!({"d": "presence", "from": render(from), "state": state})
                    }
                    Delivery::Subscription { from, kind } => {
                        json!({"d": "subscription", "from": render(from), "kind": kind})
                    }
                    Delivery::Message(m) => json!({
                        "d": "message", "from": render(&m.from), "to": render(&m.to),
                        "id": m.id, "kind": m.kind, "body": m.body, "subject": m.subject,
                        "thread": m.thread,
                        "addresses": m.recipients.iter().map(|r| json!({
                            "kind": match &r.kind {
                                crate::RecipientKind::To => "to",
                                crate::RecipientKind::Cc => "cc",
                                crate::RecipientKind::Bcc => "bcc",
                                crate::RecipientKind::Other(o) => o.as_str(),
                            },
                            "jid": render(&r.address), "delivered": r.delivered,
                        })).collect::<Vec<_>>(),
                        "delay": m.delay.as_ref().map(|d| json!({"stamp_ms": d.stamp_ms, "from": domains.users})),
                        "no_store": m.no_store,
                    }),
                    Delivery::RosterPush { jid, item, version } => {
                        json!({"d": "roster_push", "jid": jid, "item": item, "version": version})
                    }
                    Delivery::Replaced => json!({"d": "replaced"}),
                    Delivery::Close { reason } => json!({"d": "close", "reason": reason}),
                    Delivery::Query(_) => continue,
                };
                json!({"e": "deliver", "user": user, "resource": resource, "delivery": d})
            }
            // Downgraded before (see `encode_for`).
            PeerEvent::Forward { .. } | PeerEvent::Receipt { .. } => continue,
        });
    }
    serde_json::to_vec(&out).expect("JSON values serialise")
}

/// The format to speak to a peer next, given how its last link ended: a peer that
/// refused this release's frames as undecodable is of the previous release.
pub fn next_format(current: u32, refusal: Option<&str>) -> u32 {
    match refusal {
        Some(m) if m.contains("undecodable frame") || m.contains("newer") => match current {
            FORMAT => FORMAT_2,
            _ => 0,
        },
        _ => current,
    }
}

/// Whether a link speaking `format` carries acknowledged forwarding.
pub fn forwards(format: u32) -> bool {
    format >= FORMAT
}

pub fn encode_for(format: u32, domains: &Domains, events: &[PeerEvent]) -> Vec<u8> {
    match format {
        FORMAT => encode(events),
        FORMAT_2 => encode(&downgrade(events)),
        _ => encode_v1(domains, &downgrade(events)),
    }
}

/// The events as a peer of format 2 or older reads them: a forwarded message as a
/// plain delivery, receipts left out (such a peer sends none either; see
/// [`crate::forward`]).
pub fn downgrade(events: &[PeerEvent]) -> Vec<PeerEvent> {
    events
        .iter()
        .filter_map(|ev| match ev {
            PeerEvent::Forward {
                user,
                resource,
                message,
                ..
            } => Some(PeerEvent::Deliver {
                user: user.clone(),
                resource: resource.clone(),
                delivery: Delivery::Message(Box::new(crate::Message::clone(message))),
            }),
            PeerEvent::Receipt { .. } => None,
            other => Some(other.clone()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Address, Message, MessageKind};

    fn domains() -> Domains {
        Domains {
            users: "example.test".into(),
            rooms: None,
        }
    }

    #[test]
    fn the_previous_format_round_trips_what_it_can_say() {
        let a = Availability {
            activity: Activity::Away,
            note: Some("lunch".into()),
            preference: 3,
            extensions: vec![],
        };
        let mut m = Message::new(Address::user("bob"));
        m.from = Address::endpoint("alice", "a");
        m.kind = MessageKind::Chat;
        m.body = Some("hi".into());
        let events = vec![
            PeerEvent::Hello {
                sessions: vec![SessionInfo {
                    user: "alice".into(),
                    resource: "a".into(),
                    sid: 7,
                    avail: Some(a.clone()),
                }],
            },
            PeerEvent::Presence {
                user: "alice".into(),
                resource: "a".into(),
                avail: None,
                note: None,
            },
            PeerEvent::Deliver {
                user: "bob".into(),
                resource: "b".into(),
                delivery: Delivery::Message(Box::new(m.clone())),
            },
            PeerEvent::Deliver {
                user: "bob".into(),
                resource: "b".into(),
                delivery: Delivery::Presence {
                    from: Address::endpoint("alice", "a"),
                    state: PresenceState::Available(a.clone()),
                },
            },
            PeerEvent::Heartbeat,
        ];
        let back = decode(0, &domains(), &encode_v1(&domains(), &events)).unwrap();
        let text = |v: &[PeerEvent]| serde_json::to_string(v).unwrap();
        assert_eq!(text(&back), text(&events));
    }

    #[test]
    fn a_peer_refusing_this_format_is_spoken_to_in_the_previous_one() {
        assert_eq!(
            next_format(FORMAT, Some("undecodable frame: unknown variant `forward`")),
            FORMAT_2
        );
        assert_eq!(
            next_format(FORMAT_2, Some("undecodable frame: unknown field")),
            0
        );
        assert_eq!(next_format(FORMAT, Some("connection reset")), FORMAT);
        assert_eq!(next_format(FORMAT, None), FORMAT);
        assert_eq!(next_format(0, Some("undecodable frame")), 0);
    }
}
