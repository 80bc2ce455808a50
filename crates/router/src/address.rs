//! Typed addresses. Adapters parse their own syntax (a JID, a SIP URI) at the edge and
//! hand the router one of these; the router renders nothing and parses nothing.

use serde::{Deserialize, Serialize};

/// A user of this cluster, optionally one endpoint (XMPP resource, SIP instance).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LocalAddress {
    /// The normalised local user name (the part before `@`).
    pub user: String,
    pub endpoint: Option<String>,
}

/// An address in another domain, kept in its parts as the edge parsed them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RemoteAddress {
    pub local: Option<String>,
    pub domain: String,
    pub resource: Option<String>,
}

/// Where a stanza comes from or goes to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Address {
    /// The cluster itself (its domain): the server answers.
    Server,
    Local(LocalAddress),
    /// An occupant of a chat room (or the room itself when `nick` is `None`).
    Room {
        room: String,
        nick: Option<String>,
    },
    /// Another domain: everything to it goes through `route_remote` and
    /// `policy::egress`.
    Remote(RemoteAddress),
}

impl Address {
    pub fn user(user: &str) -> Address {
        Address::Local(LocalAddress {
            user: user.to_string(),
            endpoint: None,
        })
    }

    pub fn endpoint(user: &str, endpoint: &str) -> Address {
        Address::Local(LocalAddress {
            user: user.to_string(),
            endpoint: Some(endpoint.to_string()),
        })
    }

    /// The local user, if this is one.
    pub fn local(&self) -> Option<&LocalAddress> {
        match self {
            Address::Local(l) => Some(l),
            _ => None,
        }
    }

    /// The same address without its endpoint/resource (a user, a room, a domain).
    pub fn bare(&self) -> Address {
        match self {
            Address::Local(l) => Address::user(&l.user),
            Address::Room { room, .. } => Address::Room {
                room: room.clone(),
                nick: None,
            },
            Address::Remote(r) => Address::Remote(RemoteAddress {
                resource: None,
                ..r.clone()
            }),
            Address::Server => Address::Server,
        }
    }
}

/// How the router's domain names are laid out, to classify parsed addresses.
#[derive(Debug, Clone)]
pub struct Domains {
    /// The cluster's user domain.
    pub users: String,
    /// The chat-room service's domain, once rooms exist.
    pub rooms: Option<String>,
}

impl Domains {
    /// Classify an address an adapter parsed into its parts (`domain` already
    /// normalised by the adapter's own rules).
    pub fn classify(&self, local: Option<&str>, domain: &str, resource: Option<&str>) -> Address {
        let own = |d: &str| d.eq_ignore_ascii_case(domain);
        if own(&self.users) {
            return match local {
                None => Address::Server,
                Some(u) => Address::Local(LocalAddress {
                    user: u.to_string(),
                    endpoint: resource.map(str::to_string),
                }),
            };
        }
        if let (Some(rooms), Some(room)) = (&self.rooms, local)
            && own(rooms)
        {
            return Address::Room {
                room: room.to_string(),
                nick: resource.map(str::to_string),
            };
        }
        Address::Remote(RemoteAddress {
            local: local.map(str::to_string),
            domain: domain.to_ascii_lowercase(),
            resource: resource.map(str::to_string),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_by_domain() {
        let d = Domains {
            users: "ex.org".into(),
            rooms: Some("rooms.ex.org".into()),
        };
        assert_eq!(d.classify(None, "EX.org", None), Address::Server);
        assert_eq!(
            d.classify(Some("a"), "ex.org", Some("r")),
            Address::endpoint("a", "r")
        );
        assert_eq!(
            d.classify(Some("lobby"), "rooms.ex.org", Some("nick")),
            Address::Room {
                room: "lobby".into(),
                nick: Some("nick".into())
            }
        );
        let Address::Remote(r) = d.classify(Some("x"), "Other.net", None) else {
            panic!("remote expected");
        };
        assert_eq!(r.domain, "other.net");
        assert_eq!(
            Address::endpoint("a", "r").bare(),
            Address::user("a"),
            "bare drops the endpoint"
        );
    }
}
