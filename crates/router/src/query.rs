//! Requests between endpoints (XMPP `<iq/>` to another entity's full address, RFC
//! 6120 §10.5.4, RFC 6121 §8.5.3.1), routed across nodes. A request reaches another
//! user's endpoint only when the sender may see that user's availability (or it is
//! the sender's own): otherwise the answer is the same as for an endpoint that is
//! not connected, so a query cannot reveal what visibility hides.

use super::*;

impl Router {
    /// May `requester` (a local user) get an answer about `owner`'s account on the
    /// owner's behalf (RFC 6120 §10.5.3.2, e.g. disco#info on the bare address)?
    pub fn account_visible(&self, requester: &str, owner: &str) -> Result<(), RouteError> {
        self.read(|s| {
            if s.user(owner).is_none() {
                return Err(RouteError::NoSuchUser(owner.to_string()));
            }
            match visibility(s, owner, &s.jid_of(requester), Context::default()) {
                Seen::Nothing => Err(RouteError::NotDeliverable(format!(
                    "{owner} does not share its account information with {requester}"
                ))),
                _ => Ok(()),
            }
        })
    }
}

impl Session {
    /// Send a request or response to another endpoint. Requests to an endpoint that
    /// is not connected (or not visible to this user) fail with
    /// [`RouteError::NotDeliverable`]; responses that cannot be delivered are dropped
    /// (RFC 6121 §8.5.3.2.1). A request to a bare user address is the adapter's to
    /// answer on the account's behalf, not routed.
    pub fn send_query(&self, mut q: Query) -> Result<(), RouteError> {
        let r = &self.router;
        q.from = self.address();
        let request = q.kind.is_request();
        let target = match &q.to {
            Address::Local(l) => l.clone(),
            Address::Remote(rem) => {
                let rem = rem.clone();
                return r
                    .query_out(&self.user, &rem)
                    .or_else(|e| if request { Err(e) } else { Ok(()) });
            }
            Address::Server | Address::Room { .. } => {
                return if request {
                    Err(RouteError::NotDeliverable("no such entity".into()))
                } else {
                    Ok(())
                };
            }
        };
        let not_here = || {
            if request {
                Err(RouteError::NotDeliverable(
                    "no such resource is connected".into(),
                ))
            } else {
                Ok(())
            }
        };
        let Some(res) = target.endpoint.clone() else {
            return not_here();
        };
        let allowed = target.user == self.user
            || r.read(|s| {
                visibility(s, &target.user, &s.jid_of(&self.user), Context::default())
                    == Seen::Available
            });
        if !allowed && request {
            return not_here();
        }
        let dir = r.inner.dir.lock();
        if dir.get(&target.user, &res).is_none() {
            return not_here();
        }
        metrics::counter!("presenced_queries_routed_total").increment(1);
        if !r.send_to(&dir, &target.user, &res, Delivery::Query(Box::new(q))) {
            return not_here();
        }
        Ok(())
    }
}
