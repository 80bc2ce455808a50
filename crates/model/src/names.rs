//! User names, JIDs and roster labels: normalisation (on the proposer, with
//! stringprep's nodeprep and nameprep) and the cheap validation that `apply` repeats.

use std::collections::BTreeSet;

use crate::Refusal;

/// Longest local part, domain and resource (RFC 7622 §3: 1023 bytes each).
const MAX_PART: usize = 1023;
const MAX_LABEL: usize = 1024;
const MAX_GROUPS: usize = 64;

/// Normalise a user name typed by an operator or a client (`Alice` -> `alice`):
/// nodeprep (RFC 6122 appendix A), as XMPP local parts are compared.
pub fn normalize_user(user: &str, domain: &str) -> Result<String, Refusal> {
    let _ = domain;
    let u = user.trim();
    let bad = |why: &str| Refusal::BadValue(format!("user name {user:?}: {why}"));
    if u.is_empty() {
        return Err(bad("empty"));
    }
    let node = stringprep::nodeprep(u).map_err(|_| bad("not a valid local part"))?;
    if node.is_empty() || node.len() > MAX_PART {
        return Err(bad("empty or longer than 1023 bytes"));
    }
    // What `apply` accepts: nodeprep case-folds by Unicode 3.2, which leaves letters
    // that are capitals today (Georgian ones) as they are.
    validate_user(&node).map_err(|_| bad("not a valid local part"))?;
    Ok(node.into_owned())
}

/// Normalise a contact: a bare JID, or a bare user name meaning `name@domain`.
pub fn normalize_contact(contact: &str, domain: &str) -> Result<String, Refusal> {
    let c = contact.trim();
    let bad = |why: &str| Refusal::BadValue(format!("contact {contact:?}: {why}"));
    let (node, dom) = match c.split_once('@') {
        Some((n, d)) => (n, d),
        None => (c, domain),
    };
    if node.is_empty() {
        return Err(bad("has no user part"));
    }
    if dom.contains('/') || dom.contains('@') {
        return Err(bad("not a bare JID"));
    }
    let node = normalize_user(node, domain).map_err(|_| bad("not a valid local part"))?;
    let dom = normalize_domain(dom).map_err(|_| bad("not a valid domain"))?;
    Ok(format!("{node}@{dom}"))
}

/// Normalise a domain name (`Example.TEST` -> `example.test`): nameprep, no trailing dot.
pub fn normalize_domain(domain: &str) -> Result<String, Refusal> {
    let d = domain.trim().trim_end_matches('.');
    let bad = |why: &str| Refusal::BadValue(format!("domain {domain:?}: {why}"));
    if d.contains('@') {
        return Err(bad("must not contain '@'"));
    }
    if d.is_empty() || d.contains('/') {
        return Err(bad("not a domain name"));
    }
    // nameprep case-folds (by Unicode 3.2: lowercasing by a later Unicode made names
    // that nameprep then refused), and the result must be what `apply` accepts
    // (nameprep lets through `&`, `:`, `<` and the like).
    let d = stringprep::nameprep(d).map_err(|_| bad("not a valid domain name"))?;
    // NFKC makes dots of full-width and other stops: trim what it made too.
    let d = d.trim_end_matches('.');
    validate_domain(d).map_err(|_| bad("not a valid domain name"))?;
    Ok(d.to_string())
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

    /// Found by fuzzing (fuzz/fuzz_targets/admin_input.rs): the admin accepted domains
    /// and user names that `apply` then refused (nameprep allows characters a JID
    /// domain may not have; neither prep folds capitals newer than Unicode 3.2).
    #[test]
    fn normalised_names_pass_validation() {
        // Georgian capitals: no case folding in nameprep's Unicode 3.2, a lowercase
        // form (unassigned there) in today's.
        for d in [
            "example.&t.",
            "a:b",
            "a<b",
            "x'y",
            "a\"b",
            "\u{10AB}n\u{116B}stan",
        ] {
            assert!(normalize_domain(d).is_err(), "{d:?}");
            assert!(
                normalize_contact(&format!("bob@{d}"), "example.test").is_err(),
                "{d:?}"
            );
        }
        assert_eq!(normalize_domain("Example.TEST.").unwrap(), "example.test");
        // A full-width stop is a dot after nameprep: trimmed as one.
        assert_eq!(
            normalize_domain("example.test\u{FF0E}").unwrap(),
            "example.test"
        );
        assert!(normalize_domain("\u{FF0E}").is_err());
        // The same for user names.
        assert!(normalize_user("n\u{10AB}", "example.test").is_err());
        assert!(normalize_contact("n\u{10AB}", "example.test").is_err());
    }
}
