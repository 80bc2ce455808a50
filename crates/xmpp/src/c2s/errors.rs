//! Stanza errors (RFC 6120 §8.3) as types, and how router refusals map onto them.

use super::*;

/// Error types (RFC 6120 §8.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorType {
    Cancel,
    Modify,
    Wait,
}

impl ErrorType {
    fn as_str(self) -> &'static str {
        match self {
            ErrorType::Cancel => "cancel",
            ErrorType::Modify => "modify",
            ErrorType::Wait => "wait",
        }
    }
}

/// Defined conditions (RFC 6120 §8.3.3) the server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Condition {
    BadRequest,
    Conflict,
    InternalServerError,
    ItemNotFound,
    JidMalformed,
    NotAcceptable,
    NotAllowed,
    PolicyViolation,
    RemoteServerNotFound,
    ResourceConstraint,
    ServiceUnavailable,
}

impl Condition {
    fn as_str(self) -> &'static str {
        match self {
            Condition::BadRequest => "bad-request",
            Condition::Conflict => "conflict",
            Condition::InternalServerError => "internal-server-error",
            Condition::ItemNotFound => "item-not-found",
            Condition::JidMalformed => "jid-malformed",
            Condition::NotAcceptable => "not-acceptable",
            Condition::NotAllowed => "not-allowed",
            Condition::PolicyViolation => "policy-violation",
            Condition::RemoteServerNotFound => "remote-server-not-found",
            Condition::ResourceConstraint => "resource-constraint",
            Condition::ServiceUnavailable => "service-unavailable",
        }
    }

    /// The type RFC 6120 §8.3.3 gives the condition.
    fn default_type(self) -> ErrorType {
        match self {
            Condition::BadRequest
            | Condition::JidMalformed
            | Condition::NotAcceptable
            | Condition::PolicyViolation => ErrorType::Modify,
            Condition::InternalServerError | Condition::ResourceConstraint => ErrorType::Wait,
            _ => ErrorType::Cancel,
        }
    }
}

/// `<error type=..><condition/><text/>[<app-condition xmlns='urn:presenced:errors'/>]</error>`
#[derive(Debug, Clone)]
pub(crate) struct StanzaError {
    pub ty: ErrorType,
    pub cond: Condition,
    pub text: Option<String>,
    /// Application condition in `urn:presenced:errors` (a refusal's code).
    pub app: Option<&'static str>,
}

impl StanzaError {
    pub fn new(cond: Condition) -> Self {
        StanzaError {
            ty: cond.default_type(),
            cond,
            text: None,
            app: None,
        }
    }

    pub fn text(mut self, t: impl Into<String>) -> Self {
        self.text = Some(t.into());
        self
    }

    pub fn of_type(mut self, ty: ErrorType) -> Self {
        self.ty = ty;
        self
    }

    pub fn app(mut self, code: &'static str) -> Self {
        self.app = Some(code);
        self
    }

    pub fn element(&self) -> Element {
        let mut e = Element::new("error", NS_CLIENT)
            .with_attr("type", self.ty.as_str())
            .with_child(Element::new(self.cond.as_str(), NS_STANZAS));
        if let Some(t) = &self.text {
            e.push(Element::new("text", NS_STANZAS).with_text(t.clone()));
        }
        if let Some(a) = self.app {
            e.push(Element::new(a, NS_ERRORS));
        }
        e
    }
}

pub(super) fn iq_result(req: &Element, payload: Option<Element>) -> Element {
    let mut iq = Element::new("iq", NS_CLIENT)
        .with_attr("type", "result")
        .with_attr("id", req.attr("id").map(str::to_string))
        .with_attr("from", req.attr("to").map(str::to_string));
    if let Some(p) = payload {
        iq.push(p);
    }
    iq
}

/// The error answer to an iq: from the entity it was addressed to (RFC 6120 §8.3.1),
/// carrying the request's payload back is optional and not done.
pub(super) fn iq_error(req: &Element, err: StanzaError) -> Element {
    Element::new("iq", NS_CLIENT)
        .with_attr("type", "error")
        .with_attr("id", req.attr("id").map(str::to_string))
        .with_attr("from", req.attr("to").map(str::to_string))
        .with_child(err.element())
}

pub(super) fn route_error(e: &RouteError) -> StanzaError {
    use Condition as C;
    let text = e.to_string();
    let with_text = |c: Condition| StanzaError::new(c).text(text.clone());
    match e {
        RouteError::BadAddress(_) => with_text(C::JidMalformed),
        RouteError::BadRequest(_) => with_text(C::BadRequest),
        RouteError::NotAcceptable(_) => with_text(C::NotAcceptable),
        RouteError::ImDisabled => with_text(C::NotAllowed).app("im_disabled"),
        RouteError::NoSuchUser(_) => StanzaError::new(C::ServiceUnavailable),
        RouteError::NotDeliverable(_) => StanzaError::new(C::ServiceUnavailable),
        RouteError::RemoteDomain(_) => with_text(C::RemoteServerNotFound),
        RouteError::OfflineRefused(r) => {
            let c = match r {
                Refusal::OfflineQueueFull(..) => C::ResourceConstraint,
                _ => C::ServiceUnavailable,
            };
            with_text(c).app(r.code())
        }
        RouteError::NotStored(_) => with_text(C::ServiceUnavailable),
        RouteError::TooManyRecipients(..) => with_text(C::NotAcceptable).app("too_many_recipients"),
        RouteError::NoRecipients => with_text(C::BadRequest),
        RouteError::Refused(r) => {
            let c = match (r, r.class()) {
                (Refusal::ContactListFull(..) | Refusal::WatchersFull(..), _) => C::PolicyViolation,
                (_, RefusalClass::NotFound) => C::ItemNotFound,
                (_, RefusalClass::Invalid) => C::BadRequest,
                (_, RefusalClass::Exists) => C::Conflict,
                _ => C::NotAllowed,
            };
            let err = with_text(c).app(r.code());
            if c == C::PolicyViolation {
                err.of_type(ErrorType::Cancel)
            } else {
                err
            }
        }
        RouteError::Unavailable(_) => with_text(C::InternalServerError),
        RouteError::NotAllowed(_) => with_text(C::NotAllowed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_carry_their_reason() {
        let e = RouteError::Refused(Refusal::ContactListFull("a@x".into(), "200".into()));
        let s = route_error(&e).element().to_stanza();
        assert!(
            s.contains("<policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"),
            "{s}"
        );
        assert!(
            s.contains("<contact_list_full xmlns='urn:presenced:errors'/>"),
            "{s}"
        );
        assert!(s.contains("maximum contact-list size"), "{s}");
    }
}
