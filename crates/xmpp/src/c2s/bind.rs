//! Resource binding (RFC 6120 §7) and the legacy session IQ (RFC 3921 §3).

use super::*;

impl Conn {
    pub(super) async fn bind(
        &mut self,
        iq: &Element,
    ) -> Result<Option<(Session, Receiver<Delivery>)>, End> {
        let Some(b) = iq
            .child("bind", NS_BIND)
            .filter(|_| iq.attr("type") == Some("set"))
        else {
            if iq.child("session", NS_SESSION).is_some() {
                self.out.push(&iq_result(iq, None));
                self.out.flush().await?;
                return Ok(None);
            }
            return Err(End::Error(
                StreamError::NotAuthorized,
                "resource binding is required first".into(),
            ));
        };
        let user = self.user.clone().unwrap_or_default();
        let asked = b
            .child("resource", NS_BIND)
            .map(|r| r.text())
            .filter(|r| !r.trim().is_empty());
        let opened = match asked {
            Some(r) => addr::resource(self.domain(), &user, r.trim())
                .and_then(|r| self.shared.router.open_session(&user, Some(&r))),
            None => self.shared.router.open_session(&user, None),
        };
        match opened {
            Ok((session, rx)) => {
                let res = Element::new("bind", NS_BIND)
                    .with_child(Element::new("jid", NS_BIND).with_text(self.full_jid(&session)));
                self.out.push(&iq_result(iq, Some(res)));
                self.out.flush().await?;
                Ok(Some((session, rx)))
            }
            Err(e) => {
                let err = StanzaError::new(Condition::BadRequest).text(e.to_string());
                self.out.push(&iq_error(iq, err));
                self.out.flush().await?;
                Ok(None)
            }
        }
    }
}

/// `bind` is negotiated, never an iq of a bound session.
pub(super) const FEATURE: Feature = Feature {
    server: &[],
    account: &[],
    iqs: &[
        IqRoute {
            name: "bind",
            ns: NS_BIND,
            scope: Scope::Any,
            get_only: false,
            handler: |c, _s, req| {
                Box::pin(async move {
                    let err = StanzaError::new(Condition::NotAllowed)
                        .text("the session is already bound");
                    c.out.push(&iq_error(req.iq, err));
                    Ok(())
                })
            },
        },
        IqRoute {
            name: "session",
            ns: NS_SESSION,
            scope: Scope::ServerOrOwn,
            get_only: false,
            handler: |c, _s, req| {
                Box::pin(async move {
                    c.out.push(&iq_result(req.iq, None));
                    Ok(())
                })
            },
        },
    ],
};
