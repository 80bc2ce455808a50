//! XMPP Ping (XEP-0199): answered for the server and the sender's own account.

use super::*;

pub(super) const FEATURE: Feature = Feature {
    server: &[NS_PING],
    account: &[],
    iqs: &[IqRoute {
        name: "ping",
        ns: NS_PING,
        scope: Scope::ServerOrOwn,
        handler: |c, _s, req| {
            Box::pin(async move {
                if req.is_get() {
                    c.out.push(&iq_result(req.iq, None));
                } else {
                    c.out
                        .push(&iq_error(req.iq, StanzaError::new(Condition::BadRequest)));
                }
                Ok(())
            })
        },
    }],
};
