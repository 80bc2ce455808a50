//! The peer-link wire format. Each frame's envelope (`proto/router.proto`) names the
//! format of its event batch:
//!
//! - format 2 (this release): JSON of [`PeerEvent`] as defined here, addresses typed.
//!   New optional fields carry `#[serde(default)]`, so this release reads frames of
//!   a later one that only added fields, and unknown fields are ignored.
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
pub const FORMAT: u32 = 2;

pub fn encode(events: &[PeerEvent]) -> Vec<u8> {
    serde_json::to_vec(events).expect("peer events always serialise")
}

pub fn decode(format: u32, domains: &Domains, bytes: &[u8]) -> Result<Vec<PeerEvent>, String> {
    match format {
        FORMAT => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
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
