//! The router's protocol-neutral vocabulary: what adapters hand in and what sessions
//! get. `docs/protocol.md` maps each type onto XMPP and SIP.

use presenced_model::{Refusal, RosterItem};
use serde::{Deserialize, Serialize};

pub use crate::address::{Address, LocalAddress, RemoteAddress};

/// What an available endpoint is doing. XMPP `<show/>` and SIP PIDF/RPID (RFC 3863,
/// RFC 4480) both map onto it; the table is in `docs/protocol.md`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activity {
    /// Available, nothing more said (XMPP: no `<show/>`; PIDF: basic open).
    #[default]
    Available,
    /// Actively interested in chatting (XMPP `chat`).
    Chatty,
    /// Temporarily away (XMPP `away`; RPID `away`).
    Away,
    /// Away for a long time (XMPP `xa`; RPID `away` with `extended-away` note class).
    ExtendedAway,
    /// Do not disturb (XMPP `dnd`; RPID `busy`).
    Busy,
    /// On a call (RPID `on-the-phone`; XMPP `away` with the activity kept here).
    OnThePhone,
    /// In a meeting (RPID `meeting`; XMPP `away`).
    InMeeting,
}

/// An opaque payload of the originating protocol that the core carries unchanged
/// (RFC 6120 §8.4: extended content is passed on): chat states, receipts, entity caps,
/// avatars, end-to-end encryption. The adapter of that protocol re-emits it; others
/// ignore it or map what they understand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extension {
    pub format: ExtensionFormat,
    /// What the payload is (for XML: its namespace), so adapters can pick or drop it
    /// without parsing.
    pub key: String,
    /// The payload, complete and self-contained (for XML: one serialised element with
    /// its namespace declared).
    pub data: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExtensionFormat {
    /// One XML element (XMPP).
    Xml,
}

/// An available endpoint's presence.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Availability {
    pub activity: Activity,
    /// Free text (XMPP `<status/>`, PIDF `<note/>`).
    pub note: Option<String>,
    /// Delivery preference for forking, -128..=127: XMPP priority as is, SIP q-value
    /// scaled (q × 127). Negative: never gets messages addressed to the bare user.
    pub preference: i8,
    /// Availability-bearing extensions (caps, avatar hash, ...): shown only to viewers
    /// who may see the availability itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<Extension>,
}

/// What a client announces (broadcast or directed presence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presence {
    Available(Availability),
    /// Going offline, optionally saying why (RFC 6121 §4.5.2 `<status/>`).
    Unavailable {
        note: Option<String>,
    },
}

impl Presence {
    pub fn availability(&self) -> Option<&Availability> {
        match self {
            Presence::Available(a) => Some(a),
            Presence::Unavailable { .. } => None,
        }
    }
}

/// A presence as delivered to a session: the policy's verdict made concrete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceState {
    Available(Availability),
    /// Offline, or not shared with this viewer (then without a note).
    Unavailable {
        note: Option<String>,
    },
    /// Neither available nor unavailable can be said (a chat-room occupant whose
    /// availability is not shared).
    Unknown,
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

/// How a broadcast recipient was named (XEP-0033 to/cc/bcc; SIP has only "to").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecipientKind {
    To,
    Cc,
    /// Not shown to the other recipients.
    Bcc,
    /// Any other kind (replyto, noreply, ...): carried, never delivered to.
    Other(String),
}

/// One entry of a message's recipient list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub kind: RecipientKind,
    pub address: Address,
    /// Set by the server on the copies it delivers (XEP-0033 §4.6).
    pub delivered: bool,
}

/// When and where a message was held (XEP-0203).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delay {
    pub stamp_ms: u64,
}

pub const TEXT_PLAIN: &str = "text/plain";

/// A one-to-one (or broadcast copy of a) message, neutral form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The sending endpoint; stamped by the router, never taken from the client.
    pub from: Address,
    /// As addressed by the sender.
    pub to: Address,
    pub id: Option<String>,
    pub kind: MessageKind,
    /// MIME type of `body` (`text/plain` unless an adapter says otherwise).
    pub content_type: String,
    pub body: Option<String>,
    pub subject: Option<String>,
    pub thread: Option<String>,
    /// Broadcast recipients (XEP-0033), empty for one-to-one.
    pub recipients: Vec<Recipient>,
    pub delay: Option<Delay>,
    /// Ask clients not to store the message (history logging is off).
    pub no_store: bool,
    pub extensions: Vec<Extension>,
    /// Unique per message accepted from a client (0: none), kept when it is routed
    /// again, forwarded or stored, so a session handed it twice takes it once.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub uid: u64,
    /// Who answers for the message until it is taken ([`crate::receipt`]); never
    /// stored nor sent between nodes. An adapter takes it with
    /// [`Message::take_receipt`] and calls [`crate::Receipt::done`] once its client
    /// has the message.
    #[serde(skip)]
    pub receipt: Option<crate::Receipt>,
}

impl Message {
    pub fn new(to: Address) -> Message {
        Message {
            from: Address::Server,
            to,
            id: None,
            kind: MessageKind::Normal,
            content_type: TEXT_PLAIN.to_string(),
            body: None,
            subject: None,
            thread: None,
            recipients: Vec::new(),
            delay: None,
            no_store: false,
            extensions: Vec::new(),
            uid: 0,
            receipt: None,
        }
    }

    /// The message's receipt, if it has one (the adapter holds it until its client
    /// has the message; dropping it unhandled routes the message again).
    pub fn take_receipt(&mut self) -> Option<crate::Receipt> {
        self.receipt.take()
    }

    /// A one-to-one message the router answers for until it is taken (see
    /// [`crate::receipt`]): one that would be kept offline.
    pub(crate) fn wants_receipt(&self) -> bool {
        matches!(self.kind, MessageKind::Chat | MessageKind::Normal)
            && self.recipients.is_empty()
            && self.has_content()
    }

    /// Worth keeping for later when nobody can take it now: text, not only
    /// notifications (chat states, receipts).
    pub fn has_content(&self) -> bool {
        self.body.is_some() || self.subject.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueryKind {
    Get,
    Set,
    Result,
    Error,
}

impl QueryKind {
    pub fn is_request(self) -> bool {
        matches!(self, QueryKind::Get | QueryKind::Set)
    }
}

/// A request/response exchanged between two endpoints (XMPP `<iq/>` between clients:
/// ping, disco, version, Jingle, file transfer). The payload is opaque to the core.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    pub from: Address,
    pub to: Address,
    pub id: String,
    pub kind: QueryKind,
    pub payload: Vec<Extension>,
}

/// What the router hands a session, through the queue the adapter drains (see
/// [`crate::Session`] for the whole contract). Every variant but the last two is
/// rendered in the adapter's protocol and sent; the adapter decides nothing about
/// them (visibility and routing were decided before they were queued).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    Presence {
        from: Address,
        state: PresenceState,
    },
    Subscription {
        from: Address,
        kind: SubscriptionKind,
    },
    Message(Box<Message>),
    Query(Box<Query>),
    /// A roster change; `item` is `None` when `jid` was removed.
    RosterPush {
        jid: String,
        item: Option<Box<RosterItem>>,
        version: u64,
    },
    /// Another login took this session's endpoint (XMPP: RFC 6120 §7.7.2.2
    /// `conflict`). The adapter must end the client's connection with its protocol's
    /// error and drop the `Session`; nothing more will be delivered.
    Replaced,
    /// The server ends the session (account removed, node shutting down, ...). The
    /// adapter closes the connection, telling the client `reason`, and drops the
    /// `Session`.
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
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("not acceptable: {0}")]
    NotAcceptable(String),
    #[error("instant messaging is disabled on this cluster")]
    ImDisabled,
    #[error("no such user {0}")]
    NoSuchUser(String),
    /// Nobody can take it (RFC 6121 §8.5: no such resource, groupchat to a bare JID).
    #[error("{0}")]
    NotDeliverable(String),
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

impl RouteError {
    /// A failure of the moment (no leader, a cut-off node): the same request may
    /// succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, RouteError::Unavailable(_))
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
