//! `route_remote`: the one path for everything addressed to another domain. Each
//! event first passes `policy::egress`; federation plugs in here. Until it exists,
//! egress refuses everything and the sender gets the error it always got.

use presenced_policy::{Egress, EgressRefusal, Outbound, OutboundKind, egress};

use super::*;

impl Router {
    /// Hand one event to another domain, if policy lets it leave.
    pub(crate) fn route_remote(
        &self,
        from_user: Option<&str>,
        domain: &str,
        kind: OutboundKind,
    ) -> Result<(), RouteError> {
        let ev = Outbound {
            from_user,
            domain,
            kind,
        };
        let verdict = self.read(|s| egress(s, &ev));
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
        self.route_remote(from, &to.domain, OutboundKind::Message)
    }

    pub(crate) fn query_out(&self, from_user: &str, to: &RemoteAddress) -> Result<(), RouteError> {
        self.route_remote(Some(from_user), &to.domain, OutboundKind::Query)
    }

    pub(crate) fn probe_out(&self, from_user: &str, to: &Address) -> Result<(), RouteError> {
        match to {
            Address::Remote(r) => {
                self.route_remote(Some(from_user), &r.domain, OutboundKind::Probe)
            }
            _ => Ok(()),
        }
    }

    /// A local owner's presence for a watcher in another domain (`viewer`, a bare
    /// JID), with the visibility verdict for the pair. Nothing is reported back:
    /// presence errors are not answered.
    pub(crate) fn presence_out(
        &self,
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
        if let Err(e) = self.route_remote(owner, &r.domain, kind) {
            tracing::trace!(viewer, "presence not sent out: {e}");
        }
    }

    /// A subscription notice for a contact in another domain.
    pub(crate) fn notice_out(&self, from: &str, to: &str) {
        let Address::Remote(r) = self.addr_of_jid(to) else {
            return;
        };
        let from_user = self.read(|s| s.local_user(from).map(str::to_string));
        if let Err(e) =
            self.route_remote(from_user.as_deref(), &r.domain, OutboundKind::Subscription)
        {
            tracing::debug!(to, "subscription notice not sent out: {e}");
        }
    }
}
