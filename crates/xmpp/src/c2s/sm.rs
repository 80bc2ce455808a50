//! Stream management (XEP-0198, `urn:xmpp:sm:3`), acknowledgements only.
//!
//! - `<enable/>` after binding turns it on (`<enabled/>`, without resumption: a
//!   session is not kept after its connection ends). Before binding, or twice, it is
//!   answered `<failed/>` with `unexpected-request`; `<resume/>` with
//!   `item-not-found`.
//! - What the client sends: `h` counts a stanza once it is *handled*. A message with
//!   content to a user of the cluster is handled when its receipt is done (a
//!   recipient's client has it, it was stored offline, or the client was sent an
//!   error for it; `presenced_router::receipt`), so an acknowledged message is never
//!   lost with a node that dies after the acknowledgement. Every other stanza is
//!   handled once the router has taken it. `<r/>` is answered once every stanza
//!   received before it is handled, in order; and once every stanza received is
//!   handled, the server says so unasked if it has not yet (§4: an `<a/>` may be sent
//!   at any time).
//! - What the server sends: stanzas are counted from `<enabled/>`; after a write that
//!   carried messages the server asks `<r/>`. A message is done for its sender once
//!   the client acknowledges it; a session that ends first leaves its unacknowledged
//!   messages to be routed again (the user's other sessions, or offline), as §4
//!   advises. An `h` above what was sent is a stream error (`undefined-condition`
//!   with `<handled-count-too-high/>`, §4).

use std::collections::VecDeque;

use futures::stream::FuturesOrdered;
use presenced_router::{HandledWait, Receipt};

use super::*;

pub(super) const NS_SM: &str = "urn:xmpp:sm:3";

/// Unacknowledged messages a client may hold before the session is closed (it does
/// not answer `<r/>`): their receipts then route them again.
const MAX_UNACKED: usize = 4096;

/// Unanswered `<r/>`s kept per session.
const MAX_ASKS: usize = 64;

pub(super) struct Sm {
    /// Stanzas received since `<enabled/>` (mod 2^32).
    received: u32,
    /// For each received stanza still being handled, its number.
    waiting: VecDeque<u32>,
    /// `<r/>`s not answered yet: the `received` count each was sent at.
    asks: VecDeque<u32>,
    /// `Out::stanzas` at `<enabled/>`: stanza numbers are counted from it.
    base: u32,
    /// The client's last `h`.
    acked: u32,
    /// Messages written and not yet acknowledged, by stanza number.
    unacked: VecDeque<(u32, Receipt)>,
    /// An `<r/>` of ours is unanswered.
    asked: bool,
    /// The last `h` sent to the client.
    told: u32,
    /// The received messages being handled, in order (one future per `waiting` entry
    /// that is a message). Here rather than in the session loop: a session without
    /// stream management holds no queue at all.
    pub(super) handling: Handling,
}

/// Futures of received stanzas being handled, in order.
pub(super) type Handling = FuturesOrdered<futures::future::BoxFuture<'static, ()>>;

fn failed(cond: &str) -> Element {
    Element::new("failed", NS_SM).with_child(Element::new(cond, NS_STANZAS))
}

/// `a` is at or after `b`, counting mod 2^32.
fn at_or_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) >= 0
}

impl Conn {
    /// An `<enable/>` or `<resume/>` before binding (or any other SM element then).
    pub(super) fn sm_before_bind(&mut self, el: &Element) {
        let cond = match el.name.as_str() {
            "resume" => "item-not-found",
            "enable" => "unexpected-request",
            _ => return, // `<r/>`, `<a/>`: nothing is counted yet
        };
        self.out.push_nonza(&failed(cond));
    }

    /// The client's `h` so far: every stanza up to the first one still being handled.
    fn sm_h(sm: &Sm) -> u32 {
        sm.waiting
            .front()
            .map_or(sm.received, |first| first.wrapping_sub(1))
    }

    /// An element of the SM namespace in a bound session.
    pub(super) fn sm_element(&mut self, el: &Element) -> Result<(), End> {
        match (el.name.as_str(), self.sm.as_mut()) {
            ("enable", None) => {
                self.sm = Some(Box::new(Sm {
                    received: 0,
                    waiting: VecDeque::new(),
                    asks: VecDeque::new(),
                    base: self.out.stanzas,
                    acked: 0,
                    unacked: VecDeque::new(),
                    asked: false,
                    told: 0,
                    handling: Handling::new(),
                }));
                self.out.push_nonza(&Element::new("enabled", NS_SM));
                metrics::counter!("presenced_xmpp_sm_enabled_total").increment(1);
            }
            ("enable", Some(_)) => self.out.push_nonza(&failed("unexpected-request")),
            ("resume", _) => self.out.push_nonza(&failed("unexpected-request")),
            ("r", Some(sm)) => {
                let at = sm.received;
                if at_or_after(Self::sm_h(sm), at) {
                    let h = Self::sm_h(sm);
                    sm.told = h;
                    self.out.push_nonza(&ack(h));
                } else {
                    // Bounded: targets only grow, so the answer to a later `<r/>` covers
                    // an earlier one dropped here (a client asking in a loop while a
                    // message waits must not grow the session without bound).
                    if sm.asks.len() >= MAX_ASKS {
                        sm.asks.pop_front();
                    }
                    sm.asks.push_back(at);
                }
            }
            ("a", Some(sm)) => {
                let h: u32 = el.attr("h").and_then(|h| h.parse().ok()).ok_or_else(|| {
                    End::Error(
                        StreamError::BadFormat,
                        "<a/> needs an h attribute (XEP-0198 §4)".into(),
                    )
                })?;
                let sent = self.out.stanzas.wrapping_sub(sm.base);
                if !at_or_after(sent, h) {
                    return Err(End::ErrorWith(
                        StreamError::UndefinedCondition,
                        format!("acknowledged {h} stanzas of {sent} sent"),
                        format!(
                            "<handled-count-too-high xmlns='{NS_SM}' h='{h}' send-count='{sent}'/>"
                        ),
                    ));
                }
                sm.acked = h;
                sm.asked = false;
                while let Some((n, _)) = sm.unacked.front() {
                    if !at_or_after(h, *n) {
                        break;
                    }
                    if let Some((_, r)) = sm.unacked.pop_front() {
                        r.done();
                    }
                }
            }
            // `<r/>` or `<a/>` before `<enable/>`: nothing to count (XEP-0198 §4
            // leaves it undefined; ignoring it is what a lenient server does).
            ("r" | "a", None) => {}
            (other, _) => {
                return Err(End::Error(
                    StreamError::UnsupportedStanzaType,
                    format!("<{other}/> in {NS_SM}"),
                ));
            }
        }
        Ok(())
    }

    /// A stanza of the client arrives: count it; a message gets something to wait on.
    pub(super) fn sm_received(&mut self, el: &Element) {
        let Some(sm) = self.sm.as_mut() else {
            return;
        };
        sm.received = sm.received.wrapping_add(1);
        if el.name == "message" {
            let (h, wait): (_, HandledWait) = presenced_router::handled();
            self.handled = Some(h);
            sm.waiting.push_back(sm.received);
            sm.handling.push_back(Box::pin(wait.wait()));
        }
    }

    /// The oldest stanza being handled is handled: answer the `<r/>`s it held up.
    pub(super) fn sm_handled(&mut self) {
        let Some(sm) = self.sm.as_mut() else {
            return;
        };
        sm.waiting.pop_front();
        let h = Self::sm_h(sm);
        let mut answer = false;
        while sm.asks.front().is_some_and(|at| at_or_after(h, *at)) {
            sm.asks.pop_front();
            answer = true;
        }
        // Everything received is handled and the client has not heard so: tell it
        // unasked (§4 allows an `<a/>` at any time). Clients that ask before the
        // stanza they mean (slixmpp's `<r/>` goes out ahead of it) learn it this way.
        if sm.waiting.is_empty() && h != sm.told {
            answer = true;
        }
        if answer {
            sm.told = h;
            self.out.push_nonza(&ack(h));
        }
    }

    /// After a write reached the client: the messages in it are done (without SM),
    /// or wait for the client's acknowledgement (with SM, which is then asked for).
    pub(super) fn sm_written(&mut self) -> Result<(), End> {
        if self.taken.is_empty() {
            return Ok(());
        }
        let Some(sm) = self.sm.as_mut() else {
            for (_, r) in self.taken.drain(..) {
                r.done();
            }
            return Ok(());
        };
        let base = sm.base;
        sm.unacked
            .extend(self.taken.drain(..).map(|(n, r)| (n.wrapping_sub(base), r)));
        if sm.unacked.len() > MAX_UNACKED {
            guard::closed("sm_unacked");
            return Err(End::Error(
                StreamError::PolicyViolation,
                "too many stanzas left unacknowledged".into(),
            ));
        }
        if !sm.asked {
            sm.asked = true;
            self.out.raw("<r xmlns='urn:xmpp:sm:3'/>");
        }
        Ok(())
    }
}

fn ack(h: u32) -> Element {
    Element::new("a", NS_SM).with_attr("h", h.to_string())
}

/// Some received message is being handled.
pub(super) fn handling_any(sm: &Option<Box<Sm>>) -> bool {
    sm.as_ref().is_some_and(|sm| !sm.handling.is_empty())
}

/// The oldest received message being handled is (never, without stream management).
pub(super) async fn next_handled(sm: &mut Option<Box<Sm>>) -> Option<()> {
    match sm {
        Some(sm) => futures::StreamExt::next(&mut sm.handling).await,
        None => std::future::pending().await,
    }
}
