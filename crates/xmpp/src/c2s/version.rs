//! Software Version (XEP-0092) of the server.

use super::*;

pub(super) const FEATURE: Feature = Feature {
    server: &[NS_VERSION],
    account: &[],
    iqs: &[IqRoute {
        name: "query",
        ns: NS_VERSION,
        scope: Scope::Server,
        get_only: true,
        handler: |c, _s, req| {
            Box::pin(async move {
                let q = Element::new("query", NS_VERSION)
                    .with_child(Element::new("name", NS_VERSION).with_text("presenced"))
                    .with_child(
                        Element::new("version", NS_VERSION).with_text(env!("CARGO_PKG_VERSION")),
                    );
                c.out.push(&iq_result(req.iq, Some(q)));
                Ok(())
            })
        },
    }],
};
