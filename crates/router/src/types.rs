//! The router's protocol-neutral vocabulary: what adapters hand in and what sessions get.

use presenced_model::{Refusal, RosterItem};
use serde::{Deserialize, Serialize};

/// The `show` part of an availability (RFC 6121 §4.7.2.1; "online" is no `show`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Show {
    #[default]
    Online,
    Chat,
    Away,
    Xa,
    Dnd,
}

impl Show {
    pub fn parse(s: &str) -> Option<Show> {
        Some(match s {
            "chat" => Show::Chat,
            "away" => Show::Away,
            "xa" => Show::Xa,
            "dnd" => Show::Dnd,
            _ => return None,
        })
    }
    /// The XMPP `<show/>` value, `None` for plain online.
    pub fn as_xmpp(self) -> Option<&'static str> {
        match self {
            Show::Online => None,
            Show::Chat => Some("chat"),
            Show::Away => Some("away"),
            Show::Xa => Some("xa"),
            Show::Dnd => Some("dnd"),
        }
    }
}

/// An available session's presence.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Availability {
    pub show: Show,
    pub status: Option<String>,
    pub priority: i8,
}

/// A presence as delivered to a session: available with details, or unavailable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceState {
    Available(Availability),
    Unavailable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionKind {
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
}

impl SubscriptionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionKind::Subscribe => "subscribe",
            SubscriptionKind::Subscribed => "subscribed",
            SubscriptionKind::Unsubscribe => "unsubscribe",
            SubscriptionKind::Unsubscribed => "unsubscribed",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    Chat,
    #[default]
    Normal,
    Headline,
    Groupchat,
    Error,
}

impl MessageKind {
    pub fn parse(s: &str) -> Option<MessageKind> {
        Some(match s {
            "chat" => MessageKind::Chat,
            "normal" => MessageKind::Normal,
            "headline" => MessageKind::Headline,
            "groupchat" => MessageKind::Groupchat,
            "error" => MessageKind::Error,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Chat => "chat",
            MessageKind::Normal => "normal",
            MessageKind::Headline => "headline",
            MessageKind::Groupchat => "groupchat",
            MessageKind::Error => "error",
        }
    }
}

/// One XEP-0033 address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    /// to, cc, bcc, replyto, ...
    pub kind: String,
    pub jid: String,
    /// Set by the server on the copies it delivers (XEP-0033 §4.6).
    pub delivered: bool,
}

/// When and where a message was held (XEP-0203).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delay {
    pub stamp_ms: u64,
    /// The JID of the entity that delayed it (the server's domain).
    pub from: String,
}

/// A one-to-one (or broadcast copy of a) message, neutral form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Full JID of the sender; stamped by the router, never taken from the client.
    pub from: String,
    /// As addressed by the sender (full or bare JID).
    pub to: String,
    pub id: Option<String>,
    pub kind: MessageKind,
    pub body: Option<String>,
    pub subject: Option<String>,
    pub thread: Option<String>,
    pub addresses: Vec<Address>,
    pub delay: Option<Delay>,
    /// Ask clients not to store the message (XEP-0334), when history logging is off.
    pub no_store: bool,
}

/// What the router hands a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "d", rename_all = "snake_case")]
pub enum Delivery {
    Presence {
        from: String,
        state: PresenceState,
    },
    Subscription {
        from: String,
        kind: SubscriptionKind,
    },
    Message(Box<Message>),
    /// A roster change; `item` is `None` when `jid` was removed.
    RosterPush {
        jid: String,
        item: Option<Box<RosterItem>>,
        version: u64,
    },
    /// Another login took this session's resource (RFC 6120 §7.7.2.2 conflict).
    Replaced,
    /// The server ends the session (account removed, node shutting down, ...).
    Close {
        reason: String,
    },
}

/// Why the router did not carry out a client's request; adapters map it onto their
/// error vocabulary (an XMPP stanza error, a SIP status).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("bad address {0}")]
    BadAddress(String),
    #[error("instant messaging is disabled on this cluster")]
    ImDisabled,
    #[error("no such user {0}")]
    NoSuchUser(String),
    #[error("{0} is not served by this cluster and federation is not configured")]
    RemoteDomain(String),
    #[error("the recipient is offline and the message could not be stored: {0}")]
    OfflineRefused(Refusal),
    #[error("the recipient is offline and {0} messages are not stored")]
    NotStored(&'static str),
    #[error("too many recipients: {0} (maximum {1})")]
    TooManyRecipients(usize, u32),
    #[error("no recipients")]
    NoRecipients,
    #[error("{0}")]
    Refused(Refusal),
    #[error("the cluster cannot commit right now: {0}")]
    Unavailable(String),
    #[error("not allowed: {0}")]
    NotAllowed(String),
}
