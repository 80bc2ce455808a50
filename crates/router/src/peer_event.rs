//! The events of a peer link, and how they are read off the wire.
//!
//! An event is a JSON object tagged by its `e` field (formats 2 and 3, see
//! [`crate::wire`]). serde's derived reader of such an enum first buffers every
//! object whole (its strings copied into a tree of `Content` values), then reads the
//! variant from the tree: on a busy cluster that was a tenth of a node's CPU. The
//! writer (serde's derive, as before) puts the tag first, so this reader takes the
//! tag and reads the rest of the object straight into the variant's fields. An
//! object whose tag is not first (another writer) is still read, through a
//! [`serde_json::Value`]: the format is the same either way.

use std::fmt;

use serde::de::{self, DeserializeOwned, IntoDeserializer, MapAccess, Visitor};
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
        message: Box<crate::Message>,
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
enum Tag {
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

impl PeerEvent {
    /// The variant `tag` names, its fields read by `read` (the rest of the object).
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
                    message: b.message,
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
        d.deserialize_map(EventVisitor)
    }
}

struct EventVisitor;

impl<'de> Visitor<'de> for EventVisitor {
    type Value = PeerEvent;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a peer event: an object tagged by its `e` field")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PeerEvent, A::Error> {
        let first = match map.next_key::<Key>()? {
            None => return Err(de::Error::missing_field("e")),
            Some(Key::Tag) => {
                let tag: Tag = map.next_value()?;
                return PeerEvent::read(tag, de::value::MapAccessDeserializer::new(map));
            }
            Some(Key::Other(k)) => k,
        };
        // The tag comes later: gather the object, then read it.
        let mut obj = serde_json::Map::new();
        obj.insert(first, map.next_value()?);
        while let Some((k, v)) = map.next_entry::<String, serde_json::Value>()? {
            obj.insert(k, v);
        }
        let tag = obj
            .remove("e")
            .ok_or_else(|| de::Error::missing_field("e"))?;
        let tag = value::<Tag, A::Error>(tag)?;
        PeerEvent::read(tag, serde_json::Value::Object(obj).into_deserializer())
            .map_err(de::Error::custom)
    }
}

fn value<T: DeserializeOwned, E: de::Error>(v: serde_json::Value) -> Result<T, E> {
    T::deserialize(v).map_err(E::custom)
}

/// An object's key: the tag, or another field's name.
enum Key {
    Tag,
    Other(String),
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(if v == "e" {
                    Key::Tag
                } else {
                    Key::Other(v.to_string())
                })
            }
        }
        d.deserialize_identifier(KeyVisitor)
    }
}

#[cfg(test)]
mod tests;
