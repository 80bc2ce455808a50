//! Read-only queries adapters need, so that no adapter reads the replicated state
//! itself: credentials for authentication, a roster view, the settings an adapter
//! advertises.

use presenced_model::RosterItem;
use presenced_model::credentials::ScramKeys;

use super::*;

/// A user's roster as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterView {
    pub version: u64,
    pub items: Vec<RosterItem>,
}

/// The messaging settings an adapter advertises to clients (XMPP: the disco form).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advertised {
    pub allow_history_logging: bool,
    pub allow_cut_paste: bool,
    pub im_enabled: bool,
    pub broadcast_max_recipients: u32,
}

/// Which SCRAM hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramHash {
    Sha1,
    Sha256,
}

impl Router {
    /// The local user name an authentication identity names (`alice` or
    /// `alice@domain`), normalised; `None` when it cannot be one of ours.
    pub fn auth_user(&self, authid: &str) -> Option<String> {
        presenced_model::names::normalize_user(authid, &self.inner.domain).ok()
    }

    /// The stored SCRAM keys of an account.
    pub fn scram_keys(&self, user: &str, hash: ScramHash) -> Option<ScramKeys> {
        self.read(|s| {
            s.user(user).map(|u| match hash {
                ScramHash::Sha1 => u.account.credentials.scram_sha1.clone(),
                ScramHash::Sha256 => u.account.credentials.scram_sha256.clone(),
            })
        })
    }

    /// Check a clear-text password (SASL PLAIN over TLS) against the stored keys.
    pub fn verify_password(&self, user: &str, password: &str) -> bool {
        self.read(|s| {
            s.user(user)
                .is_some_and(|u| u.account.credentials.verify_password(password))
        })
    }

    pub fn advertised(&self) -> Advertised {
        self.read(|s| {
            let st = s.settings();
            Advertised {
                allow_history_logging: st.allow_history_logging,
                allow_cut_paste: st.allow_cut_paste,
                im_enabled: st.im_enabled,
                broadcast_max_recipients: st.broadcast_max_recipients,
            }
        })
    }
}

impl Session {
    /// This user's roster.
    pub fn roster(&self) -> RosterView {
        self.router.read(|s| match s.user(&self.user) {
            Some(u) => RosterView {
                version: u.roster.version,
                items: u.roster.items.values().cloned().collect(),
            },
            None => RosterView {
                version: 0,
                items: Vec::new(),
            },
        })
    }
}
