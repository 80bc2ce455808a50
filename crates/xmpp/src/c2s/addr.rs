//! JIDs at the edge: parsing what clients address into the router's typed
//! [`Address`], and rendering addresses back. The `jid` crate stays in this adapter.

use presenced_router::{Address, Domains, LocalAddress, RemoteAddress};

use super::*;

/// Parse a JID a client wrote into an address of the router.
pub(crate) fn parse(domains: &Domains, s: &str) -> Result<Address, RouteError> {
    let j = jid::Jid::new(s).map_err(|e| RouteError::BadAddress(format!("{s}: {e}")))?;
    Ok(domains.classify(
        j.node().map(|n| n.as_str()),
        j.domain().as_str(),
        j.resource().map(|r| r.as_str()),
    ))
}

/// A resource a client asked to bind, prepared by the JID rules (RFC 7622).
pub(crate) fn resource(domain: &str, user: &str, r: &str) -> Result<String, RouteError> {
    let full = format!("{user}@{domain}/{r}");
    let j = jid::FullJid::new(&full)
        .map_err(|e| RouteError::BadAddress(format!("resource {r:?}: {e}")))?;
    Ok(j.resource().as_str().to_string())
}

/// Render an address as a JID.
pub(crate) fn render(domains: &Domains, a: &Address) -> String {
    match a {
        Address::Server => domains.users.clone(),
        Address::Local(LocalAddress { user, endpoint }) => match endpoint {
            Some(r) => format!("{user}@{}/{r}", domains.users),
            None => format!("{user}@{}", domains.users),
        },
        Address::Room { room, nick } => {
            let d = domains.rooms.as_deref().unwrap_or(&domains.users);
            match nick {
                Some(n) => format!("{room}@{d}/{n}"),
                None => format!("{room}@{d}"),
            }
        }
        Address::Remote(RemoteAddress {
            local,
            domain,
            resource,
        }) => {
            let mut s = String::new();
            if let Some(l) = local {
                s.push_str(l);
                s.push('@');
            }
            s.push_str(domain);
            if let Some(r) = resource {
                s.push('/');
                s.push_str(r);
            }
            s
        }
    }
}

impl Conn {
    pub(super) fn parse_jid(&self, s: &str) -> Result<Address, RouteError> {
        parse(self.shared.router.domains(), s)
    }

    pub(super) fn render(&self, a: &Address) -> String {
        render(self.shared.router.domains(), a)
    }

    pub(super) fn full_jid(&self, s: &Session) -> String {
        self.render(&s.address())
    }

    pub(super) fn bare_jid(&self, s: &Session) -> String {
        self.render(&Address::user(&s.user))
    }
}
