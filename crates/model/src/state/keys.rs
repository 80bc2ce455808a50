//! The byte encoding of persisted record keys.

/// A persisted record's identity. Encoded as bytes with a one-letter prefix and NUL
/// separators (user names and JIDs never contain NUL).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Key {
    Meta,
    Settings,
    Account(String),
    Version(String),
    Item(String, String),
    PendingIn(String, String),
    OfflineNext(String),
    Offline(String, u64),
}

impl Key {
    /// The user a per-user record belongs to.
    pub(super) fn user(&self) -> Option<&str> {
        match self {
            Key::Meta | Key::Settings => None,
            Key::Account(u)
            | Key::Version(u)
            | Key::Item(u, _)
            | Key::PendingIn(u, _)
            | Key::OfflineNext(u)
            | Key::Offline(u, _) => Some(u),
        }
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        let join = |p: &str, a: &str, b: &[u8]| {
            let mut v = Vec::with_capacity(p.len() + a.len() + b.len() + 1);
            v.extend_from_slice(p.as_bytes());
            v.extend_from_slice(a.as_bytes());
            if !b.is_empty() {
                v.push(0);
                v.extend_from_slice(b);
            }
            v
        };
        match self {
            Key::Meta => b"m".to_vec(),
            Key::Settings => b"s".to_vec(),
            Key::Account(u) => join("a", u, b""),
            Key::Version(u) => join("v", u, b""),
            Key::Item(u, j) => join("r", u, j.as_bytes()),
            Key::PendingIn(u, j) => join("p", u, j.as_bytes()),
            Key::OfflineNext(u) => join("n", u, b""),
            Key::Offline(u, s) => join("o", u, &s.to_be_bytes()),
        }
    }

    pub(super) fn decode(b: &[u8]) -> Option<Key> {
        let (&p, rest) = b.split_first()?;
        let two = || -> Option<(String, &[u8])> {
            let at = rest.iter().position(|&c| c == 0)?;
            Some((
                String::from_utf8(rest[..at].to_vec()).ok()?,
                &rest[at + 1..],
            ))
        };
        let one = || String::from_utf8(rest.to_vec()).ok();
        Some(match p {
            b'm' => Key::Meta,
            b's' => Key::Settings,
            b'a' => Key::Account(one()?),
            b'v' => Key::Version(one()?),
            b'n' => Key::OfflineNext(one()?),
            b'r' => {
                let (u, j) = two()?;
                Key::Item(u, String::from_utf8(j.to_vec()).ok()?)
            }
            b'p' => {
                let (u, j) = two()?;
                Key::PendingIn(u, String::from_utf8(j.to_vec()).ok()?)
            }
            b'o' => {
                let (u, s) = two()?;
                Key::Offline(u, u64::from_be_bytes(s.try_into().ok()?))
            }
            _ => return None,
        })
    }
}
