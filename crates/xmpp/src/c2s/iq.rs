//! `<iq/>`: requests to the server or an account are answered by the handlers the
//! features register (`FEATURES`); requests and responses to another entity's full
//! JID are routed to it (RFC 6120 §10.5.4, RFC 6121 §8.5.3.1). Service discovery is
//! built from the same registry, so what is advertised is what is handled.

use std::future::Future;
use std::pin::Pin;

use presenced_router::{Address, Extension, ExtensionFormat, Query, QueryKind};

use super::*;

pub(super) type BoxFut<'a> = Pin<Box<dyn Future<Output = Result<(), End>> + Send + 'a>>;
pub(super) type Handler = for<'a> fn(&'a mut Conn, &'a Session, Req<'a>) -> BoxFut<'a>;

/// Whom an iq is addressed to, as far as handlers care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target {
    /// No `to`: the server on behalf of the account (RFC 6120 §10.3.3).
    Unaddressed,
    /// The server's domain.
    Server,
    /// The sender's own bare JID.
    Own,
    /// Another local user's bare JID: answered on that account's behalf
    /// (RFC 6120 §10.5.3.2).
    Contact(String),
}

/// Which targets a handler answers for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    /// The domain (or no `to`).
    Server,
    /// The sender's own account (or no `to`).
    Own,
    /// The domain, the sender's own account or no `to`.
    ServerOrOwn,
    /// Anything not routed elsewhere.
    Any,
}

impl Scope {
    fn covers(self, t: &Target) -> bool {
        matches!(
            (self, t),
            (Scope::Any, _)
                | (_, Target::Unaddressed)
                | (Scope::Server | Scope::ServerOrOwn, Target::Server)
                | (Scope::Own | Scope::ServerOrOwn, Target::Own)
        )
    }
}

/// One request being handled.
#[derive(Clone, Copy)]
pub(super) struct Req<'a> {
    pub iq: &'a Element,
    pub payload: &'a Element,
    pub target: &'a Target,
}

impl Req<'_> {
    pub fn is_get(&self) -> bool {
        self.iq.attr("type") == Some("get")
    }
}

pub(super) struct IqRoute {
    pub name: &'static str,
    pub ns: &'static str,
    pub scope: Scope,
    /// Only `get` is meaningful: a `set` is answered `bad-request` by the dispatcher.
    pub get_only: bool,
    pub handler: Handler,
}

/// What one XMPP feature contributes: iq handlers and the disco#info features it
/// makes true, for the server and for accounts.
pub(super) struct Feature {
    pub server: &'static [&'static str],
    pub account: &'static [&'static str],
    pub iqs: &'static [IqRoute],
}

/// Every feature of the adapter. Adding one here is all it takes to be dispatched
/// and advertised.
pub(super) const FEATURES: &[&Feature] = &[
    &bind::FEATURE,
    &disco::FEATURE,
    &message::FEATURE,
    &ping::FEATURE,
    &roster::FEATURE,
    &version::FEATURE,
];

fn route(name: &str, ns: &str, t: &Target) -> Option<&'static IqRoute> {
    FEATURES
        .iter()
        .flat_map(|f| f.iqs.iter())
        .find(|r| r.name == name && r.ns == ns && r.scope.covers(t))
}

fn query_kind(ty: &str) -> Option<QueryKind> {
    Some(match ty {
        "get" => QueryKind::Get,
        "set" => QueryKind::Set,
        "result" => QueryKind::Result,
        "error" => QueryKind::Error,
        _ => return None,
    })
}

impl Conn {
    pub(super) async fn iq(&mut self, s: &Session, el: &Element) -> Result<(), End> {
        let ty = el.attr("type").unwrap_or_default().to_string();
        let Some(kind) = query_kind(&ty).filter(|_| el.attr("id").is_some()) else {
            let err = StanzaError::new(Condition::BadRequest)
                .text("an iq has an id and a type of get, set, result or error");
            self.out.push(&iq_error(el, err));
            return Ok(());
        };
        let to = match el.attr("to").map(|t| self.parse_jid(t)) {
            None => None,
            Some(Ok(a)) => Some(a),
            Some(Err(e)) => {
                if kind.is_request() {
                    self.out.push(&iq_error(el, route_error(&e)));
                }
                return Ok(());
            }
        };
        let target = match &to {
            None => Target::Unaddressed,
            Some(Address::Server) => Target::Server,
            Some(Address::Local(l)) if l.endpoint.is_none() && l.user == s.user => Target::Own,
            Some(Address::Local(l)) if l.endpoint.is_none() => Target::Contact(l.user.clone()),
            Some(other) => return self.route_query(s, el, other.clone(), kind),
        };
        if !kind.is_request() {
            return Ok(()); // answers to the server's pushes and pings
        }
        let payloads: Vec<&Element> = el.elements().collect();
        let [p] = payloads.as_slice() else {
            let err = StanzaError::new(Condition::BadRequest)
                .text("an iq get/set has exactly one payload");
            self.out.push(&iq_error(el, err));
            return Ok(());
        };
        if let Target::Contact(u) = &target
            && let Err(e) = s.router().account_visible(&s.user, u)
        {
            self.out.push(&iq_error(el, route_error(&e)));
            return Ok(());
        }
        match route(&p.name, &p.ns, &target) {
            Some(r) if r.get_only && kind != QueryKind::Get => {
                let err = StanzaError::new(Condition::BadRequest).text("only get is defined");
                self.out.push(&iq_error(el, err));
                Ok(())
            }
            Some(r) => {
                let req = Req {
                    iq: el,
                    payload: p,
                    target: &target,
                };
                (r.handler)(self, s, req).await
            }
            None => {
                let err = StanzaError::new(Condition::ServiceUnavailable);
                self.out.push(&iq_error(el, err));
                Ok(())
            }
        }
    }

    /// An iq for another entity: handed to the router, errors answered here.
    fn route_query(
        &mut self,
        s: &Session,
        el: &Element,
        to: Address,
        kind: QueryKind,
    ) -> Result<(), End> {
        let q = Query {
            from: s.address(),
            to,
            id: el.attr("id").unwrap_or_default().to_string(),
            kind,
            payload: el
                .elements()
                .map(|p| Extension {
                    format: ExtensionFormat::Xml,
                    key: p.ns.clone(),
                    data: p.to_fragment(),
                })
                .collect(),
        };
        if let Err(e) = s.send_query(q)
            && kind.is_request()
        {
            self.out.push(&iq_error(el, route_error(&e)));
        }
        Ok(())
    }

    /// A routed iq from another entity, as a stanza for this client.
    pub(super) fn deliver_query(&mut self, s: &Session, q: &Query) {
        let ty = match q.kind {
            QueryKind::Get => "get",
            QueryKind::Set => "set",
            QueryKind::Result => "result",
            QueryKind::Error => "error",
        };
        let mut iq = Element::new("iq", NS_CLIENT)
            .with_attr("type", ty)
            .with_attr("id", q.id.clone())
            .with_attr("from", self.render(&q.from))
            .with_attr("to", self.full_jid(s));
        push_extensions(&mut iq, &q.payload);
        self.out.push(&iq);
    }
}

/// Append opaque XML extensions, skipping any that is not one well-formed element.
pub(super) fn push_extensions(el: &mut Element, exts: &[Extension]) {
    for x in exts {
        if x.format == ExtensionFormat::Xml && crate::xml::check_fragment(&x.data) {
            el.push_raw(x.data.clone());
        } else {
            metrics::counter!("presenced_xmpp_extensions_dropped_total").increment(1);
        }
    }
}

/// The disco#info features of the server or of an account, from the registry.
pub(super) fn disco_features(account: bool) -> std::collections::BTreeSet<&'static str> {
    FEATURES
        .iter()
        .flat_map(|f| if account { f.account } else { f.server }.iter().copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_advertised_server_feature_with_an_iq_has_a_handler() {
        for ns in [
            NS_ROSTER,
            NS_PING,
            NS_VERSION,
            NS_DISCO_INFO,
            NS_DISCO_ITEMS,
        ] {
            assert!(disco_features(false).contains(ns), "{ns} advertised");
            let handled = FEATURES.iter().flat_map(|f| f.iqs.iter()).any(|r| {
                r.ns == ns && (r.scope.covers(&Target::Server) || r.scope.covers(&Target::Own))
            });
            assert!(handled, "{ns} handled");
        }
        assert!(disco_features(true).contains(NS_DISCO_INFO));
    }
}
