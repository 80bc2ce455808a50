//! `<message/>`: client messages to the router's neutral [`Message`] and back.
//! Extended content (RFC 6120 §8.4: chat states, receipts, markers, OMEMO, ...) is
//! carried opaquely and re-emitted unchanged.

use presenced_router::{Delay, Extension, ExtensionFormat, Recipient, RecipientKind};

use super::*;

pub(super) fn message_kind(s: &str) -> MessageKind {
    match s {
        "chat" => MessageKind::Chat,
        "headline" => MessageKind::Headline,
        "groupchat" => MessageKind::Groupchat,
        "error" => MessageKind::Error,
        // RFC 6121 §5.2.2: an unknown type is treated as normal.
        _ => MessageKind::Normal,
    }
}

fn kind_str(k: MessageKind) -> &'static str {
    match k {
        MessageKind::Chat => "chat",
        MessageKind::Normal => "normal",
        MessageKind::Headline => "headline",
        MessageKind::Groupchat => "groupchat",
        MessageKind::Error => "error",
    }
}

fn recipient_kind(s: &str) -> RecipientKind {
    match s {
        "to" => RecipientKind::To,
        "cc" => RecipientKind::Cc,
        "bcc" => RecipientKind::Bcc,
        other => RecipientKind::Other(other.to_string()),
    }
}

fn recipient_kind_str(k: &RecipientKind) -> &str {
    match k {
        RecipientKind::To => "to",
        RecipientKind::Cc => "cc",
        RecipientKind::Bcc => "bcc",
        RecipientKind::Other(o) => o,
    }
}

/// An element carried opaquely.
pub(super) fn extension(el: &Element) -> Extension {
    Extension {
        format: ExtensionFormat::Xml,
        key: el.ns.clone(),
        data: el.to_fragment(),
    }
}

impl Conn {
    /// The neutral form of a client's message (`to` already parsed).
    fn parse_message(&self, el: &Element, to: Address) -> Result<Message, RouteError> {
        let mut msg = Message::new(to);
        msg.id = el.attr("id").map(str::to_string);
        msg.kind = el.attr("type").map_or(MessageKind::Normal, message_kind);
        let to_server = msg.to == Address::Server;
        for c in el.elements() {
            match (c.name.as_str(), c.ns.as_str()) {
                ("body", NS_CLIENT) if msg.body.is_none() && c.attr("xml:lang").is_none() => {
                    msg.body = Some(c.text());
                }
                ("subject", NS_CLIENT) if msg.subject.is_none() && c.attr("xml:lang").is_none() => {
                    msg.subject = Some(c.text());
                }
                ("thread", NS_CLIENT) if msg.thread.is_none() => msg.thread = Some(c.text()),
                // XEP-0033 addressing is the server's to act on only when sent to it.
                ("addresses", NS_ADDRESS) if to_server => {
                    for x in c.elements().filter(|x| x.name == "address") {
                        let (Some(k), Some(j)) = (x.attr("type"), x.attr("jid")) else {
                            continue;
                        };
                        msg.recipients.push(Recipient {
                            kind: recipient_kind(k),
                            address: self.parse_jid(j)?,
                            delivered: false,
                        });
                    }
                }
                _ => msg.extensions.push(extension(c)),
            }
        }
        Ok(msg)
    }

    pub(super) async fn message(&mut self, s: &Session, el: &Element) -> Result<(), End> {
        let kind = el.attr("type").map_or(MessageKind::Normal, message_kind);
        let to = el
            .attr("to")
            .map_or_else(|| Ok(Address::user(&s.user)), |t| self.parse_jid(t));
        let res = match to.and_then(|to| self.parse_message(el, to)) {
            Ok(msg) => s.send_message_tracked(msg, self.handled.take()).await,
            Err(e) => Err(e),
        };
        let Err(e) = res else {
            return Ok(());
        };
        // Errors are never answered with errors (RFC 6120 §8.3.1).
        if kind == MessageKind::Error {
            return Ok(());
        }
        tracing::debug!(to = el.attr("to"), "message refused: {e}");
        metrics::counter!("presenced_xmpp_messages_refused_total").increment(1);
        let mut reply = Element::new("message", NS_CLIENT)
            .with_attr("type", "error")
            .with_attr("from", el.attr("to").map(str::to_string))
            .with_attr("to", self.full_jid(s))
            .with_attr("id", el.attr("id").map(str::to_string));
        if let Some(b) = el.child("body", NS_CLIENT) {
            reply.push(b.clone());
        }
        reply.push(route_error(&e).element());
        self.out.push(&reply);
        Ok(())
    }

    pub(super) fn message_element(&self, m: &Message) -> Element {
        let mut el = Element::new("message", NS_CLIENT)
            .with_attr("from", self.render(&m.from))
            .with_attr("to", self.render(&m.to))
            .with_attr("id", m.id.clone());
        if m.kind != MessageKind::Normal {
            el.set_attr("type", kind_str(m.kind));
        }
        if let Some(s) = &m.subject {
            el.push(Element::new("subject", NS_CLIENT).with_text(s.clone()));
        }
        if let Some(b) = &m.body {
            el.push(Element::new("body", NS_CLIENT).with_text(b.clone()));
        }
        if let Some(t) = &m.thread {
            el.push(Element::new("thread", NS_CLIENT).with_text(t.clone()));
        }
        push_extensions(&mut el, &m.extensions);
        if !m.recipients.is_empty() {
            let mut a = Element::new("addresses", NS_ADDRESS);
            for x in &m.recipients {
                let mut e = Element::new("address", NS_ADDRESS)
                    .with_attr("type", recipient_kind_str(&x.kind).to_string())
                    .with_attr("jid", self.render(&x.address));
                if x.delivered {
                    e.set_attr("delivered", "true");
                }
                a.push(e);
            }
            el.push(a);
        }
        if let Some(Delay { stamp_ms }) = &m.delay {
            el.push(
                Element::new("delay", NS_DELAY)
                    .with_attr("from", self.domain().to_string())
                    .with_attr("stamp", rfc3339(*stamp_ms)),
            );
        }
        let hinted = m.extensions.iter().any(|x| x.key == NS_HINTS);
        if m.no_store && !hinted {
            el.push(Element::new("no-store", NS_HINTS));
            el.push(Element::new("no-permanent-store", NS_HINTS));
        }
        el
    }
}

/// `2026-11-24T10:00:00.123Z` from milliseconds since the Unix epoch.
pub(super) fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // civil_from_days (Howard Hinnant)
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// What the message path makes true (no iq of its own).
pub(super) const FEATURE: Feature = Feature {
    server: &[NS_ADDRESS, NS_DELAY, NS_HINTS, "msgoffline"],
    account: &[],
    iqs: &[],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_000_000_123), "2026-11-18T11:06:40.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
