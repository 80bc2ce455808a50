//! The events of a peer link, and how they are read off the wire.
//!
//! An event is a JSON object tagged by its `e` field (formats 2 and 3, see
//! [`crate::wire`]), read tag first ([`presenced_model::tag_first`]): serde's derived
//! reader buffered every event whole, a tenth of a busy cluster node's CPU.

use presenced_model::tag_first::{TagFirst, TagFirstVisitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::directory::SessionInfo;
use crate::{Availability, Delivery};

/// What travels on a link.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "e", rename_all = "snake_case")]
pub enum PeerEvent {
    /// First event of every stream: all the sender's sessions (replaces the old copy).
    Hello {
        sessions: Vec<SessionInfo>,
    },
    Up {
        user: String,
        resource: String,
        sid: u64,
    },
    Presence {
        user: String,
        resource: String,
        avail: Option<Availability>,
        /// The note of an unavailable presence (RFC 6121 §4.5.2).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    Down {
        user: String,
        resource: String,
        sid: u64,
    },
    /// Hand this to a session of the receiving node.
    Deliver {
        user: String,
        resource: String,
        delivery: Delivery,
    },
    Heartbeat,
    /// Format 3: a message the sending node answers for until this node's
    /// `Receipt` for `id` comes back ([`crate::forward`]); for the session `sid`
    /// only (a later session on the same resource is another recipient).
    Forward {
        user: String,
        resource: String,
        sid: u64,
        id: u64,
        /// Shared with the sender's held copy (it is sent again from there).
        message: std::sync::Arc<crate::Message>,
    },
    /// Format 3: what became of forwarded message `id`: its recipient's client has it
    /// (`done`), or the session was gone or ended first and the sender routes it again.
    Receipt {
        id: u64,
        done: bool,
    },
}

/// The tags, as written (`rename_all = "snake_case"` above).
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tag {
    Hello,
    Up,
    Presence,
    Down,
    Deliver,
    Heartbeat,
    Forward,
    Receipt,
}

/// The fields of each variant, with the same names and defaults as above (a field
/// missing here, or extra, does not compile: every one is moved into the variant).
mod body {
    use serde::Deserialize;

    use crate::directory::SessionInfo;
    use crate::{Availability, Delivery, Message};

    #[derive(Deserialize)]
    pub(super) struct Hello {
        pub(super) sessions: Vec<SessionInfo>,
    }

    /// `up` and `down`.
    #[derive(Deserialize)]
    pub(super) struct Session {
        pub(super) user: String,
        pub(super) resource: String,
        pub(super) sid: u64,
    }

    #[derive(Deserialize)]
    pub(super) struct Presence {
        pub(super) user: String,
        pub(super) resource: String,
        pub(super) avail: Option<Availability>,
        #[serde(default)]
        pub(super) note: Option<String>,
    }

    #[derive(Deserialize)]
    pub(super) struct Deliver {
        pub(super) user: String,
        pub(super) resource: String,
        pub(super) delivery: Delivery,
    }

    #[derive(Deserialize)]
    pub(super) struct Empty {}

    #[derive(Deserialize)]
    pub(super) struct Forward {
        pub(super) user: String,
        pub(super) resource: String,
        pub(super) sid: u64,
        pub(super) id: u64,
        pub(super) message: Box<Message>,
    }

    #[derive(Deserialize)]
    pub(super) struct Receipt {
        pub(super) id: u64,
        pub(super) done: bool,
    }
}

impl TagFirst for PeerEvent {
    const TAG: &'static str = "e";
    type Tag = Tag;

    fn read<'de, D: Deserializer<'de>>(tag: Tag, rest: D) -> Result<PeerEvent, D::Error> {
        Ok(match tag {
            Tag::Hello => {
                let b = body::Hello::deserialize(rest)?;
                PeerEvent::Hello {
                    sessions: b.sessions,
                }
            }
            Tag::Up => {
                let b = body::Session::deserialize(rest)?;
                PeerEvent::Up {
                    user: b.user,
                    resource: b.resource,
                    sid: b.sid,
                }
            }
            Tag::Down => {
                let b = body::Session::deserialize(rest)?;
                PeerEvent::Down {
                    user: b.user,
                    resource: b.resource,
                    sid: b.sid,
                }
            }
            Tag::Presence => {
                let b = body::Presence::deserialize(rest)?;
                PeerEvent::Presence {
                    user: b.user,
                    resource: b.resource,
                    avail: b.avail,
                    note: b.note,
                }
            }
            Tag::Deliver => {
                let b = body::Deliver::deserialize(rest)?;
                PeerEvent::Deliver {
                    user: b.user,
                    resource: b.resource,
                    delivery: b.delivery,
                }
            }
            Tag::Heartbeat => {
                body::Empty::deserialize(rest)?;
                PeerEvent::Heartbeat
            }
            Tag::Forward => {
                let b = body::Forward::deserialize(rest)?;
                PeerEvent::Forward {
                    user: b.user,
                    resource: b.resource,
                    sid: b.sid,
                    id: b.id,
                    message: b.message.into(),
                }
            }
            Tag::Receipt => {
                let b = body::Receipt::deserialize(rest)?;
                PeerEvent::Receipt {
                    id: b.id,
                    done: b.done,
                }
            }
        })
    }
}

impl<'de> Deserialize<'de> for PeerEvent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<PeerEvent, D::Error> {
        d.deserialize_map(TagFirstVisitor::new())
    }
}

#[cfg(test)]
mod tests;
