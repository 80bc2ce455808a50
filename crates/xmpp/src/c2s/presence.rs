//! `<presence/>` (RFC 6121 §3, §4): broadcast, directed, subscription and probe
//! presence in, and the router's presence deliveries out. `<show/>` maps onto the
//! neutral [`Activity`] (table in `docs/protocol.md`); other children (caps, avatar
//! hashes, ...) travel as opaque extensions with the availability.

use presenced_router::{Activity, Presence, SubscriptionKind};

use super::*;

/// Say the server cannot tell whether the contact is available (a room occupant
/// whose availability is not shared): XMPP has no such state.
const NS_PRESENCE_EXT: &str = "urn:presenced:presence";

fn activity(show: Option<&str>) -> Result<Activity, String> {
    Ok(match show {
        None => Activity::Available,
        Some("chat") => Activity::Chatty,
        Some("away") => Activity::Away,
        Some("xa") => Activity::ExtendedAway,
        Some("dnd") => Activity::Busy,
        Some(other) => return Err(format!("unknown show value {other:?}")),
    })
}

fn show(a: Activity) -> Option<&'static str> {
    match a {
        Activity::Available => None,
        Activity::Chatty => Some("chat"),
        Activity::Away | Activity::OnThePhone | Activity::InMeeting => Some("away"),
        Activity::ExtendedAway => Some("xa"),
        Activity::Busy => Some("dnd"),
    }
}

pub(super) fn parse_availability(el: &Element) -> Result<Availability, String> {
    let mut a = Availability::default();
    let (mut seen_show, mut seen_status, mut seen_prio) = (false, false, false);
    for c in el.elements() {
        match (c.name.as_str(), c.ns.as_str()) {
            ("show", NS_CLIENT) if !seen_show => {
                seen_show = true;
                a.activity = activity(Some(c.text().trim()))?;
            }
            ("status", NS_CLIENT) if !seen_status && c.attr("xml:lang").is_none() => {
                seen_status = true;
                a.note = Some(c.text());
            }
            ("priority", NS_CLIENT) if !seen_prio => {
                seen_prio = true;
                let p = c.text();
                a.preference = p
                    .trim()
                    .parse::<i8>()
                    .map_err(|_| format!("priority {p:?} is not an integer from -128 to 127"))?;
            }
            _ => a.extensions.push(message::extension(c)),
        }
    }
    Ok(a)
}

fn append_availability(p: &mut Element, a: &Availability) {
    if let Some(sh) = show(a.activity) {
        p.push(Element::new("show", NS_CLIENT).with_text(sh));
    }
    if let Some(st) = &a.note {
        p.push(Element::new("status", NS_CLIENT).with_text(st.clone()));
    }
    if a.preference != 0 {
        p.push(Element::new("priority", NS_CLIENT).with_text(a.preference.to_string()));
    }
    push_extensions(p, &a.extensions);
}

fn kind_str(k: SubscriptionKind) -> &'static str {
    match k {
        SubscriptionKind::Subscribe => "subscribe",
        SubscriptionKind::Subscribed => "subscribed",
        SubscriptionKind::Unsubscribe => "unsubscribe",
        SubscriptionKind::Unsubscribed => "unsubscribed",
    }
}

impl Conn {
    pub(super) async fn presence(&mut self, s: &Session, el: &Element) -> Result<(), End> {
        let ty = el.attr("type").unwrap_or("available");
        let to = match el.attr("to").map(|t| self.parse_jid(t)) {
            None => None,
            Some(Ok(a)) => Some(a),
            Some(Err(e)) => {
                self.presence_error(s, el, route_error(&e));
                return Ok(());
            }
        };
        let res: Result<(), RouteError> = match (ty, to) {
            ("available" | "unavailable", to) => {
                let p = if ty == "available" {
                    match parse_availability(el) {
                        Ok(a) => Presence::Available(a),
                        Err(msg) => {
                            let err = StanzaError::new(Condition::BadRequest).text(msg);
                            self.presence_error(s, el, err);
                            return Ok(());
                        }
                    }
                } else {
                    // RFC 6121 §4.5.2: unavailable may say why.
                    Presence::Unavailable {
                        note: el.child_text("status"),
                    }
                };
                match to {
                    None => {
                        s.set_presence(p);
                        Ok(())
                    }
                    Some(t) => s.directed_presence(&t, p),
                }
            }
            ("subscribe", Some(t)) => s.subscribe(&t).await.map(drop),
            ("subscribed", Some(t)) => s.approve(&t).await,
            ("unsubscribe", Some(t)) => s.unsubscribe(&t).await,
            ("unsubscribed", Some(t)) => s.revoke(&t).await,
            ("probe", Some(t)) => s.probe(&t),
            ("error", _) => Ok(()),
            ("subscribe" | "subscribed" | "unsubscribe" | "unsubscribed" | "probe", None) => Err(
                RouteError::BadRequest(format!("presence of type {ty} needs a 'to'")),
            ),
            (other, _) => Err(RouteError::BadRequest(format!(
                "{other:?} is not a presence type"
            ))),
        };
        if let Err(e) = res {
            self.presence_error(s, el, route_error(&e));
        }
        Ok(())
    }

    fn presence_error(&mut self, s: &Session, el: &Element, err: StanzaError) {
        let reply = Element::new("presence", NS_CLIENT)
            .with_attr("type", "error")
            .with_attr("from", el.attr("to").map(str::to_string))
            .with_attr("to", self.full_jid(s))
            .with_attr("id", el.attr("id").map(str::to_string))
            .with_child(err.element());
        self.out.push(&reply);
    }

    /// A presence delivery as a stanza.
    pub(super) fn deliver_presence(&mut self, s: &Session, from: &Address, state: PresenceState) {
        let mut p = Element::new("presence", NS_CLIENT)
            .with_attr("from", self.render(from))
            .with_attr("to", self.full_jid(s));
        match state {
            PresenceState::Available(a) => append_availability(&mut p, &a),
            PresenceState::Unavailable { note } => {
                p.set_attr("type", "unavailable");
                if let Some(n) = note {
                    p.push(Element::new("status", NS_CLIENT).with_text(n));
                }
            }
            PresenceState::Unknown => {
                p.push(Element::new("unknown", NS_PRESENCE_EXT));
            }
        }
        self.out.push(&p);
    }

    pub(super) fn deliver_subscription(
        &mut self,
        s: &Session,
        from: &Address,
        k: SubscriptionKind,
    ) {
        let p = Element::new("presence", NS_CLIENT)
            .with_attr("from", self.render(from))
            .with_attr("to", self.bare_jid(s))
            .with_attr("type", kind_str(k));
        self.out.push(&p);
    }
}
