//! Who a certificate names. A node certificate carries the DNS name
//! `n<ID>.node.presenced.invalid`, an operator certificate `<NAME>.operator.presenced.invalid`
//! (`.invalid` is reserved by RFC 6761: these names never resolve and never collide
//! with a real host). Exactly one such name per certificate; the addresses a node
//! listens on are extra IP/DNS names that identify nothing.

use std::fmt;

use rustls_pki_types::CertificateDer;

const NODE_SUFFIX: &str = ".node.presenced.invalid";
const OPERATOR_SUFFIX: &str = ".operator.presenced.invalid";

/// The party a verified certificate belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    /// A cluster node, by its Raft node id.
    Node(u64),
    /// A person or tool administering the cluster.
    Operator(String),
}

impl Identity {
    /// The DNS name that carries this identity in a certificate.
    pub fn dns_name(&self) -> String {
        match self {
            Identity::Node(id) => format!("n{id}{NODE_SUFFIX}"),
            Identity::Operator(name) => format!("{name}{OPERATOR_SUFFIX}"),
        }
    }

    /// Parse one DNS name; `None` when it names no identity.
    fn from_dns_name(name: &str) -> Option<Result<Identity, String>> {
        let name = name.to_ascii_lowercase();
        if let Some(id) = name.strip_suffix(NODE_SUFFIX) {
            let id = id.strip_prefix('n').and_then(|d| {
                (!d.starts_with('0') || d == "0")
                    .then(|| d.parse::<u64>().ok())
                    .flatten()
            });
            return Some(match id {
                Some(id) if id > 0 => Ok(Identity::Node(id)),
                _ => Err(format!("malformed node name {name:?}")),
            });
        }
        let op = name.strip_suffix(OPERATOR_SUFFIX)?;
        Some(check_operator_name(op).map(|()| Identity::Operator(op.to_string())))
    }

    /// The identity a certificate names (its chain is not checked here).
    pub fn from_cert(der: &CertificateDer<'_>) -> Result<Identity, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("unreadable certificate: {e}"))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| format!("bad subjectAltName: {e}"))?
            .ok_or("the certificate has no subjectAltName")?;
        let mut found: Option<Identity> = None;
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n
                && let Some(id) = Identity::from_dns_name(d)
            {
                let id = id?;
                if found.as_ref().is_some_and(|f| *f != id) {
                    return Err("the certificate names more than one identity".into());
                }
                found = Some(id);
            }
        }
        found.ok_or_else(|| "the certificate names no presenced node or operator".into())
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Node(id) => write!(f, "node {id}"),
            Identity::Operator(n) => write!(f, "operator {n}"),
        }
    }
}

/// Operator names are DNS labels: 1-63 of `a-z 0-9 -`, not starting or ending with `-`.
pub fn check_operator_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "operator name {name:?}: use 1-63 of a-z, 0-9 and '-', not starting or ending with '-'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_ones_are_refused() {
        for id in [
            Identity::Node(1),
            Identity::Node(u64::MAX),
            Identity::Operator("ops-1".into()),
        ] {
            assert_eq!(Identity::from_dns_name(&id.dns_name()), Some(Ok(id)));
        }
        for bad in [
            "n0.node.presenced.invalid",
            "n01.node.presenced.invalid",
            "3.node.presenced.invalid",
            "nx.node.presenced.invalid",
            "-a.operator.presenced.invalid",
            "a_b.operator.presenced.invalid",
        ] {
            assert!(
                matches!(Identity::from_dns_name(bad), Some(Err(_))),
                "{bad}"
            );
        }
        assert_eq!(Identity::from_dns_name("example.test"), None);
    }
}
