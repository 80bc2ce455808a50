//! User names, JIDs and roster labels: normalisation (on the proposer, with the `jid`
//! crate's stringprep) and the cheap validation that `apply` repeats.

use std::collections::BTreeSet;

use crate::Refusal;

/// Longest local part, domain and resource (RFC 7622 §3: 1023 bytes each).
const MAX_PART: usize = 1023;
const MAX_LABEL: usize = 1024;
const MAX_GROUPS: usize = 64;

/// Normalise a user name typed by an operator or a client (`Alice` -> `alice`).
pub fn normalize_user(user: &str, domain: &str) -> Result<String, Refusal> {
    let jid = jid::BareJid::new(&format!("{}@{domain}", user.trim()))
        .map_err(|e| Refusal::BadValue(format!("user name {user:?}: {e}")))?;
    let node = jid
        .node()
        .ok_or_else(|| Refusal::BadValue(format!("user name {user:?} is empty")))?;
    Ok(node.as_str().to_string())
}

/// Normalise a contact: a bare JID, or a bare user name meaning `name@domain`.
pub fn normalize_contact(contact: &str, domain: &str) -> Result<String, Refusal> {
    let c = contact.trim();
    let full = if c.contains('@') {
        c.to_string()
    } else {
        format!("{c}@{domain}")
    };
    let jid = jid::BareJid::new(&full)
        .map_err(|e| Refusal::BadValue(format!("contact {contact:?}: {e}")))?;
    if jid.node().is_none() {
        return Err(Refusal::BadValue(format!(
            "contact {contact:?} has no user part"
        )));
    }
    Ok(jid.to_string())
}

/// Normalise a domain name (`Example.TEST` -> `example.test`).
pub fn normalize_domain(domain: &str) -> Result<String, Refusal> {
    let jid = jid::BareJid::new(domain.trim())
        .map_err(|e| Refusal::BadValue(format!("domain {domain:?}: {e}")))?;
    if jid.node().is_some() {
        return Err(Refusal::BadValue(format!(
            "domain {domain:?} must not contain '@'"
        )));
    }
    Ok(jid.to_string())
}

fn plain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_PART
        && !s.chars().any(|c| {
            c.is_control()
                || c.is_whitespace()
                || matches!(c, '@' | '/' | '"' | '&' | '\'' | ':' | '<' | '>')
        })
}

pub fn validate_user(user: &str) -> Result<(), Refusal> {
    if plain(user) && user.chars().all(|c| !c.is_uppercase()) {
        Ok(())
    } else {
        Err(Refusal::BadValue(format!(
            "user name {user:?} is not a valid, normalised JID local part"
        )))
    }
}

pub fn validate_domain(domain: &str) -> Result<(), Refusal> {
    if plain(domain) && domain.chars().all(|c| !c.is_uppercase()) {
        Ok(())
    } else {
        Err(Refusal::BadValue(format!(
            "domain {domain:?} is not a valid, normalised domain"
        )))
    }
}

pub fn validate_bare_jid(jid: &str) -> Result<(), Refusal> {
    match jid.split_once('@') {
        Some((node, domain)) if validate_user(node).is_ok() && validate_domain(domain).is_ok() => {
            Ok(())
        }
        _ => Err(Refusal::BadValue(format!(
            "{jid:?} is not a normalised bare JID"
        ))),
    }
}

/// Check and normalise an item's display name and groups.
pub fn validate_item_labels(
    name: Option<&str>,
    groups: &[String],
) -> Result<(Option<String>, BTreeSet<String>), Refusal> {
    let name = name.map(str::trim).filter(|n| !n.is_empty());
    if name.is_some_and(|n| n.len() > MAX_LABEL || n.chars().any(char::is_control)) {
        return Err(Refusal::BadValue(
            "contact name is too long or has control characters".into(),
        ));
    }
    let groups: BTreeSet<String> = groups
        .iter()
        .map(|g| g.trim())
        .filter(|g| !g.is_empty())
        .map(str::to_string)
        .collect();
    if groups.len() > MAX_GROUPS
        || groups
            .iter()
            .any(|g| g.len() > MAX_LABEL || g.chars().any(char::is_control))
    {
        return Err(Refusal::BadValue(format!(
            "at most {MAX_GROUPS} groups of up to {MAX_LABEL} bytes each"
        )));
    }
    Ok((name.map(str::to_string), groups))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises() {
        assert_eq!(normalize_user("Alice", "example.test").unwrap(), "alice");
        assert_eq!(
            normalize_contact("Bob", "example.test").unwrap(),
            "bob@example.test"
        );
        assert_eq!(
            normalize_contact("carol@Other.Example", "example.test").unwrap(),
            "carol@other.example"
        );
        assert!(normalize_user("a b@c", "example.test").is_err());
        assert!(normalize_contact("other.example", "example.test").is_ok());
        assert!(normalize_contact("@x", "example.test").is_err());
        assert_eq!(normalize_domain("Example.TEST").unwrap(), "example.test");
        assert!(validate_bare_jid("bob@example.test").is_ok());
        assert!(validate_bare_jid("Bob@example.test").is_err());
    }
}
