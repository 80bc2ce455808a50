//! `route_remote`: the one path for everything addressed to another domain. Each
//! event first passes `policy::egress`; federation plugs in here. Until it exists,
//! egress refuses everything and the sender gets the error it always got.

use presenced_policy::{Egress, EgressRefusal, Outbound, OutboundKind, egress};

use super::*;

impl Router {
    /// Hand one event to another domain, if policy lets it leave. `state` is the
    /// replica the caller already reads (fan-out runs inside a read: taking the lock
    /// again there could wait behind a queued writer).
    pub(crate) fn route_remote(
        &self,
        state: &State,
        from_user: Option<&str>,
        domain: &str,
        kind: OutboundKind,
    ) -> Result<(), RouteError> {
        let ev = Outbound {
            from_user,
            domain,
            kind,
        };
        let verdict = egress(state, &ev);
        metrics::counter!("presenced_egress_total", "verdict" => match verdict {
            Egress::Send => "send",
            Egress::SendUnavailable => "send_unavailable",
            Egress::Refuse(_) => "refused",
        })
        .increment(1);
        match verdict {
            Egress::Refuse(EgressRefusal::NotFederated) => {
                Err(RouteError::RemoteDomain(domain.to_string()))
            }
            // No outside link exists yet to carry what policy would let out.
            Egress::Send | Egress::SendUnavailable => {
                Err(RouteError::RemoteDomain(domain.to_string()))
            }
        }
    }

    pub(crate) fn message_out(&self, msg: &Message, to: &RemoteAddress) -> Result<(), RouteError> {
        let from = msg.from.local().map(|l| l.user.as_str());
        self.read(|s| self.route_remote(s, from, &to.domain, OutboundKind::Message))
    }

    pub(crate) fn query_out(&self, from_user: &str, to: &RemoteAddress) -> Result<(), RouteError> {
        self.read(|s| self.route_remote(s, Some(from_user), &to.domain, OutboundKind::Query))
    }

    pub(crate) fn probe_out(&self, from_user: &str, to: &Address) -> Result<(), RouteError> {
        match to {
            Address::Remote(r) => {
                self.read(|s| self.route_remote(s, Some(from_user), &r.domain, OutboundKind::Probe))
            }
            _ => Ok(()),
        }
    }

    /// A local owner's presence for a watcher in another domain (`viewer`, a bare
    /// JID), with the visibility verdict for the pair. Nothing is reported back:
    /// presence errors are not answered.
    pub(crate) fn presence_out(
        &self,
        state: &State,
        owner: Option<&str>,
        viewer: &str,
        real: &Presence,
        seen: Seen,
    ) {
        if seen == Seen::Nothing {
            return;
        }
        let Address::Remote(r) = self.addr_of_jid(viewer) else {
            return;
        };
        let kind = match (seen, real) {
            (Seen::Available, Presence::Available(_)) => OutboundKind::Availability,
            _ => OutboundKind::Unavailable,
        };
        if let Err(e) = self.route_remote(state, owner, &r.domain, kind) {
            tracing::trace!(viewer, "presence not sent out: {e}");
        }
    }

    /// A subscription notice for a contact in another domain.
    pub(crate) fn notice_out(&self, from: &str, to: &str) {
        let Address::Remote(r) = self.addr_of_jid(to) else {
            return;
        };
        let res = self.read(|s| {
            self.route_remote(s, s.local_user(from), &r.domain, OutboundKind::Subscription)
        });
        if let Err(e) = res {
            tracing::debug!(to, "subscription notice not sent out: {e}");
        }
    }
}
