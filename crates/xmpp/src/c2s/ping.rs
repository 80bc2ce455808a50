//! XMPP Ping (XEP-0199): answered for the server and the sender's own account.

use super::*;

pub(super) const FEATURE: Feature = Feature {
    server: &[NS_PING],
    account: &[],
    iqs: &[IqRoute {
        name: "ping",
        ns: NS_PING,
        scope: Scope::ServerOrOwn,
        get_only: true,
        handler: |c, _s, req| {
            Box::pin(async move {
                c.out.push(&iq_result(req.iq, None));
                Ok(())
            })
        },
    }],
};
