//! The namespaces the adapter speaks.

pub(crate) const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
pub(crate) const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
pub(crate) const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
pub(crate) const NS_SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
pub(crate) const NS_STREAMS_ERR: &str = "urn:ietf:params:xml:ns:xmpp-streams";
pub(crate) const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
pub(crate) const NS_ROSTER: &str = "jabber:iq:roster";
pub(crate) const NS_PING: &str = "urn:xmpp:ping";
pub(crate) const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
pub(crate) const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
pub(crate) const NS_VERSION: &str = "jabber:iq:version";
pub(crate) const NS_ADDRESS: &str = "http://jabber.org/protocol/address";
pub(crate) const NS_DELAY: &str = "urn:xmpp:delay";
pub(crate) const NS_HINTS: &str = "urn:xmpp:hints";
pub(crate) const NS_DATA: &str = "jabber:x:data";
pub(crate) const NS_ROSTERVER: &str = "urn:xmpp:features:rosterver";
/// Application-specific stanza error conditions (the refusal's code).
pub const NS_ERRORS: &str = "urn:presenced:errors";
/// FORM_TYPE of the messaging-policy form in the server's disco#info (XEP-0128).
pub const NS_POLICY_FORM: &str = "urn:presenced:im-policy";
