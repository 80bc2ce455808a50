//! Offline messages: stored through Raft when no resource can take them, delivered
//! at the next login, then acknowledged.
//!
//! The stored payload is a versioned record ([`StoredMessage`], `"v": 2`), not the
//! router's internal [`Message`]; payloads written by the previous release (the
//! unversioned JSON of its `Message`, "v1") are still read. A payload that cannot be
//! read is never acknowledged away: it stays queued, is counted in
//! `presenced_offline_unreadable_total`, and `presencectl troubleshoot` lists it.

use serde::{Deserialize, Serialize};

use super::*;

/// The current version of stored offline messages.
pub const STORED_VERSION: u32 = 2;

/// An offline message as stored in the replicated state (version 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    pub v: u32,
    pub from: Address,
    pub to: Address,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub kind: MessageKind,
    #[serde(default = "text_plain")]
    pub content_type: String,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub thread: Option<String>,
    #[serde(default)]
    pub recipients: Vec<Recipient>,
    #[serde(default)]
    pub no_store: bool,
    #[serde(default)]
    pub extensions: Vec<Extension>,
    /// The message's uid (added without a version change: older readers ignore it).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub uid: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn text_plain() -> String {
    TEXT_PLAIN.to_string()
}

/// The previous release's payload: its `Message` as JSON, JIDs as strings.
#[derive(Deserialize)]
struct V1Message {
    from: String,
    to: String,
    id: Option<String>,
    #[serde(default)]
    kind: MessageKind,
    body: Option<String>,
    subject: Option<String>,
    thread: Option<String>,
    #[serde(default)]
    addresses: Vec<V1Address>,
    #[serde(default)]
    no_store: bool,
}

#[derive(Deserialize)]
struct V1Address {
    kind: String,
    jid: String,
}

/// Split a JID string of the previous release's payloads (`local@domain/resource`).
pub(crate) fn v1_address(domains: &Domains, jid: &str) -> Address {
    let (bare, res) = match jid.split_once('/') {
        Some((b, r)) => (b, Some(r)),
        None => (jid, None),
    };
    match bare.split_once('@') {
        Some((l, d)) => domains.classify(Some(l), d, res),
        None => domains.classify(None, bare, res),
    }
}

fn recipient_kind(k: &str) -> RecipientKind {
    match k {
        "to" => RecipientKind::To,
        "cc" => RecipientKind::Cc,
        "bcc" => RecipientKind::Bcc,
        other => RecipientKind::Other(other.to_string()),
    }
}

/// Encode a message for the offline queue.
pub fn encode(msg: &Message) -> String {
    let s = StoredMessage {
        v: STORED_VERSION,
        from: msg.from.clone(),
        to: msg.to.clone(),
        id: msg.id.clone(),
        kind: msg.kind,
        content_type: msg.content_type.clone(),
        body: msg.body.clone(),
        subject: msg.subject.clone(),
        thread: msg.thread.clone(),
        recipients: msg.recipients.clone(),
        no_store: msg.no_store,
        extensions: msg.extensions.clone(),
        uid: msg.uid,
    };
    serde_json::to_string(&s).expect("a stored message always serialises")
}

/// Decode a stored offline payload of this release or the previous one.
pub fn decode(domains: &Domains, payload: &str) -> Result<Message, String> {
    #[derive(Deserialize)]
    struct Probe {
        v: Option<u32>,
    }
    let probe: Probe = serde_json::from_str(payload).map_err(|e| e.to_string())?;
    match probe.v {
        Some(STORED_VERSION) => {
            let s: StoredMessage = serde_json::from_str(payload).map_err(|e| e.to_string())?;
            Ok(Message {
                from: s.from,
                to: s.to,
                id: s.id,
                kind: s.kind,
                content_type: s.content_type,
                body: s.body,
                subject: s.subject,
                thread: s.thread,
                recipients: s.recipients,
                delay: None,
                no_store: s.no_store,
                extensions: s.extensions,
                uid: s.uid,
                receipt: None,
            })
        }
        Some(v) => Err(format!(
            "stored message version {v} is newer than this node reads"
        )),
        None => {
            let m: V1Message = serde_json::from_str(payload).map_err(|e| e.to_string())?;
            let mut out = Message::new(v1_address(domains, &m.to));
            out.from = v1_address(domains, &m.from);
            out.id = m.id;
            out.kind = m.kind;
            out.body = m.body;
            out.subject = m.subject;
            out.thread = m.thread;
            out.no_store = m.no_store;
            out.recipients = m
                .addresses
                .into_iter()
                .map(|a| Recipient {
                    kind: recipient_kind(&a.kind),
                    address: v1_address(domains, &a.jid),
                    delivered: true,
                })
                .collect();
            Ok(out)
        }
    }
}

impl Router {
    /// Commit `msg` to `user`'s offline queue; its receipt is done once it is.
    pub(crate) async fn store_offline(
        &self,
        user: &str,
        mut msg: Message,
    ) -> Result<(), RouteError> {
        let receipt = msg.take_receipt();
        let stamp_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        let from = match &msg.from {
            Address::Local(l) => match &l.endpoint {
                Some(r) => format!("{}/{r}", self.jid(&l.user)),
                None => self.jid(&l.user),
            },
            other => self.jid_of_addr(other).unwrap_or_default(),
        };
        let cmd = Command::OfflineEnqueue {
            user: user.to_string(),
            message: OfflineMessage {
                from,
                stamp_ms,
                payload: encode(&msg),
            },
        };
        let r = match self.write(cmd).await {
            Err(e) => Err(e),
            Ok(Ok(_)) => {
                metrics::counter!("presenced_messages_offline_total").increment(1);
                Ok(())
            }
            Ok(Err(r)) => Err(RouteError::OfflineRefused(r)),
        };
        // Stored: handled. Refused, the caller decides (a client is told; a message
        // routed again is retried) and holds the receipt meanwhile.
        if r.is_ok()
            && let Some(rc) = receipt
        {
            rc.done();
        }
        r
    }

    /// Whether a stored payload can be read (for the troubleshoot report).
    pub fn offline_readable(&self, payload: &str) -> Result<(), String> {
        decode(&self.inner.domains, payload).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn domains() -> Domains {
        Domains {
            users: "example.test".into(),
            rooms: None,
        }
    }

    #[test]
    pub(crate) fn current_format_round_trips() {
        let mut m = Message::new(Address::user("bob"));
        m.from = Address::endpoint("alice", "phone");
        m.kind = MessageKind::Chat;
        m.body = Some("hi".into());
        m.extensions.push(Extension {
            format: ExtensionFormat::Xml,
            key: "http://jabber.org/protocol/chatstates".into(),
            data: "<active xmlns='http://jabber.org/protocol/chatstates'/>".into(),
        });
        let back = decode(&domains(), &encode(&m)).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    pub(crate) fn previous_release_payload_is_read() {
        // Written by the release before versioned payloads (its `Message` as JSON).
        let v1 = r#"{"from":"alice@example.test/a","to":"bob@example.test","id":"m1","kind":"chat","body":"while you were out","subject":null,"thread":null,"addresses":[],"delay":null,"no_store":false}"#;
        let m = decode(&domains(), v1).unwrap();
        assert_eq!(m.from, Address::endpoint("alice", "a"));
        assert_eq!(m.to, Address::user("bob"));
        assert_eq!(m.body.as_deref(), Some("while you were out"));
        assert_eq!(m.kind, MessageKind::Chat);
        assert_eq!(m.content_type, TEXT_PLAIN);
    }

    #[test]
    pub(crate) fn unreadable_and_future_payloads_are_errors() {
        assert!(decode(&domains(), "not json").is_err());
        assert!(decode(&domains(), r#"{"v":99}"#).is_err());
        // A new optional field of this version is ignored.
        let mut m = Message::new(Address::user("bob"));
        m.from = Address::user("alice");
        let mut j: serde_json::Value = serde_json::from_str(&encode(&m)).unwrap();
        j["future_field"] = serde_json::json!(1);
        assert_eq!(decode(&domains(), &j.to_string()).unwrap(), m);
    }
}
