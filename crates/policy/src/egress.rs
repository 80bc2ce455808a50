//! The egress choke point: every event addressed to another domain passes
//! [`egress`] before it may leave the cluster. Federation does not exist yet, so it
//! refuses everything; the federation issue makes it decide (allowed domains, and
//! availability that is not shared stripped or dropped).

use presenced_model::State;

/// What is about to leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundKind {
    /// Availability of a local user (broadcast to a remote watcher, directed, a probe
    /// answer).
    Availability,
    /// "Unavailable" of a local user.
    Unavailable,
    /// A probe asking a remote contact's availability.
    Probe,
    /// A subscription notice (subscribe, subscribed, unsubscribe, unsubscribed).
    Subscription,
    Message,
    /// A request/response between endpoints (XMPP iq).
    Query,
}

/// An event addressed to another domain.
#[derive(Debug, Clone, Copy)]
pub struct Outbound<'a> {
    /// The local user it is from (`None`: the server itself).
    pub from_user: Option<&'a str>,
    /// The domain it goes to.
    pub domain: &'a str,
    pub kind: OutboundKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressRefusal {
    /// No federation with this domain is configured.
    NotFederated,
}

/// The verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Egress {
    /// Send it as it is.
    Send,
    /// Send "unavailable" in place of the availability (not shared).
    SendUnavailable,
    /// Send nothing, say why.
    Refuse(EgressRefusal),
}

/// May `ev` leave the cluster?
pub fn egress(state: &State, ev: &Outbound<'_>) -> Egress {
    let _ = (state, ev);
    Egress::Refuse(EgressRefusal::NotFederated)
}
