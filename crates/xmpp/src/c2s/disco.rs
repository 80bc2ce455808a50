//! Service discovery (XEP-0030): the server's identity and features with the
//! messaging-policy form (XEP-0128), and accounts' (RFC 6120 §10.5.3.2: the server
//! answers for a bare JID). Features come from the registry in `iq`.

use super::*;

fn feature_list(q: &mut Element, account: bool) {
    for f in iq::disco_features(account) {
        q.push(Element::new("feature", NS_DISCO_INFO).with_attr("var", f));
    }
}

fn server_info(router: &presenced_router::Router) -> Element {
    let mut q = Element::new("query", NS_DISCO_INFO).with_child(
        Element::new("identity", NS_DISCO_INFO)
            .with_attr("category", "server")
            .with_attr("type", "im")
            .with_attr("name", "presenced"),
    );
    feature_list(&mut q, false);
    let a = router.advertised();
    let field = |var: &str, v: String| {
        Element::new("field", NS_DATA)
            .with_attr("var", var)
            .with_child(Element::new("value", NS_DATA).with_text(v))
    };
    let b = |v: bool| if v { "1".to_string() } else { "0".to_string() };
    let form = Element::new("x", NS_DATA)
        .with_attr("type", "result")
        .with_child(
            Element::new("field", NS_DATA)
                .with_attr("var", "FORM_TYPE")
                .with_attr("type", "hidden")
                .with_child(Element::new("value", NS_DATA).with_text(NS_POLICY_FORM)),
        )
        .with_child(field("allow_history_logging", b(a.allow_history_logging)))
        .with_child(field("allow_cut_paste", b(a.allow_cut_paste)))
        .with_child(field("im_enabled", b(a.im_enabled)))
        .with_child(field(
            "broadcast_max_recipients",
            a.broadcast_max_recipients.to_string(),
        ));
    q.push(form);
    q
}

fn account_info() -> Element {
    let mut q = Element::new("query", NS_DISCO_INFO).with_child(
        Element::new("identity", NS_DISCO_INFO)
            .with_attr("category", "account")
            .with_attr("type", "registered"),
    );
    feature_list(&mut q, true);
    q
}

pub(super) const FEATURE: Feature = Feature {
    server: &[NS_DISCO_INFO, NS_DISCO_ITEMS],
    account: &[NS_DISCO_INFO, NS_DISCO_ITEMS],
    iqs: &[
        IqRoute {
            name: "query",
            ns: NS_DISCO_INFO,
            scope: Scope::Any,
            get_only: true,
            handler: |c, s, req| {
                Box::pin(async move {
                    if req.payload.attr("node").is_some() {
                        c.out
                            .push(&iq_error(req.iq, StanzaError::new(Condition::ItemNotFound)));
                        return Ok(());
                    }
                    let q = match req.target {
                        iq::Target::Server | iq::Target::Unaddressed => server_info(s.router()),
                        iq::Target::Own | iq::Target::Contact(_) => account_info(),
                    };
                    c.out.push(&iq_result(req.iq, Some(q)));
                    Ok(())
                })
            },
        },
        IqRoute {
            name: "query",
            ns: NS_DISCO_ITEMS,
            scope: Scope::Any,
            get_only: true,
            handler: |c, _s, req| {
                Box::pin(async move {
                    let q = Element::new("query", NS_DISCO_ITEMS);
                    c.out.push(&iq_result(req.iq, Some(q)));
                    Ok(())
                })
            },
        },
    ],
};
