//! SASL with rsasl: SCRAM-SHA-256 and SCRAM-SHA-1 against the stored SCRAM keys of an
//! account in the replicated state, PLAIN (only offered inside TLS) against the same
//! keys. Unknown users get made-up keys so that they fail exactly like a wrong
//! password.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use presenced_router::ScramKeys;
use presenced_router::{Router, ScramHash};
use rsasl::callback::{Context, Request, SessionCallback, SessionData};
use rsasl::mechanisms::scram::properties::ScramStoredPassword;
use rsasl::prelude::{SASLConfig, SessionError};
use rsasl::property::{AuthId, AuthzId, Password};
use rsasl::validate::{Validate, Validation, ValidationError};

pub const SCRAM_SHA256: &str = "SCRAM-SHA-256";
pub const SCRAM_SHA1: &str = "SCRAM-SHA-1";
pub const PLAIN: &str = "PLAIN";

/// The authenticated local user name.
pub struct User;
impl Validation for User {
    type Value = String;
}

struct Accounts {
    router: Router,
    /// Stand-in keys for unknown users (random per node start).
    decoy_salt: [u8; 16],
}

impl Accounts {
    fn user(&self, authid: &str) -> Option<String> {
        self.router.auth_user(authid)
    }

    fn keys(&self, user: &str, sha256: bool) -> Option<ScramKeys> {
        let hash = if sha256 {
            ScramHash::Sha256
        } else {
            ScramHash::Sha1
        };
        self.router.scram_keys(user, hash)
    }
}

impl SessionCallback for Accounts {
    fn callback(
        &self,
        sd: &SessionData,
        ctx: &Context,
        req: &mut Request,
    ) -> Result<(), SessionError> {
        if !req.is::<ScramStoredPassword>() {
            return Ok(());
        }
        let sha256 = sd.mechanism().mechanism.as_str() == SCRAM_SHA256;
        let authid = ctx.get_ref::<AuthId>().unwrap_or_default();
        let keys = self.user(authid).and_then(|u| self.keys(&u, sha256));
        let decoded = keys.and_then(|k| {
            Some((
                k.iterations,
                B64.decode(&k.salt).ok()?,
                B64.decode(&k.stored_key).ok()?,
                B64.decode(&k.server_key).ok()?,
            ))
        });
        let len = if sha256 { 32 } else { 20 };
        let (it, salt, stored, server) = decoded.unwrap_or_else(|| {
            let mut stored = vec![0u8; len];
            let mut server = vec![0u8; len];
            rand::fill(&mut stored[..]);
            rand::fill(&mut server[..]);
            (4096, self.decoy_salt.to_vec(), stored, server)
        });
        req.satisfy::<ScramStoredPassword>(&ScramStoredPassword::new(it, &salt, &stored, &server))?;
        Ok(())
    }

    fn validate(
        &self,
        sd: &SessionData,
        ctx: &Context,
        v: &mut Validate<'_>,
    ) -> Result<(), ValidationError> {
        let authid = ctx.get_ref::<AuthId>().unwrap_or_default();
        let Some(user) = self.user(authid) else {
            return Ok(());
        };
        // An authorization identity, if given, must be the user itself.
        if let Some(z) = ctx.get_ref::<AuthzId>().filter(|z| !z.is_empty()) {
            let me = format!("{user}@{}", self.router.domain());
            if z != me && self.user(z).as_deref() != Some(user.as_str()) {
                return Ok(());
            }
        }
        if sd.mechanism().mechanism.as_str() == PLAIN {
            let pw = ctx.get_ref::<Password>().unwrap_or_default();
            let pw = String::from_utf8_lossy(pw);
            if !self.router.verify_password(&user, &pw) {
                return Ok(());
            }
        }
        v.with::<User, _>(|| Ok(user))?;
        Ok(())
    }
}

pub fn config(router: Router) -> anyhow::Result<Arc<SASLConfig>> {
    let mut decoy_salt = [0u8; 16];
    rand::fill(&mut decoy_salt);
    SASLConfig::builder()
        .with_defaults()
        .with_callback(Accounts { router, decoy_salt })
        .map_err(|e| anyhow::anyhow!("sasl config: {e}"))
}

/// Would rsasl's SCRAM parser (2.3.1) panic on this client message? It slices every
/// attribute as `attr[0..2]` before checking its length, so an attribute (or an
/// authorization identity) shorter than two bytes panics instead of failing the
/// exchange; found by fuzzing (fuzz/fuzz_targets/sasl_server.rs). `first` is the
/// client-first message, else the client-final one. Refuse such a message before
/// `Session::step` sees it (as `c2s/auth.rs` does: a malformed-request failure).
/// Errs on the side of refusing: every such message is malformed anyway.
pub fn scram_message_breaks_parser(first: bool, msg: &[u8]) -> bool {
    let fields: Vec<&[u8]> = msg.split(|&b| b == b',').collect();
    if first {
        // gs2-cbind-flag (parsed safely), authzid ("" or "a=..."), n=..., r=...
        fields.get(1).is_some_and(|a| a.len() == 1)
            || fields.iter().skip(2).take(2).any(|f| f.len() < 2)
    } else {
        // c=..., r=..., extensions, p=...: each attribute up to the proof.
        fields.iter().any(|f| f.len() < 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsasl::mechname::Mechname;
    use rsasl::prelude::SASLServer;

    struct NoAccounts;
    impl SessionCallback for NoAccounts {
        fn callback(
            &self,
            _: &SessionData,
            _: &Context,
            _: &mut Request,
        ) -> Result<(), SessionError> {
            Ok(())
        }
    }

    /// Found by fuzzing: the crashing client-first message, and its relatives.
    #[test]
    fn scram_messages_that_break_rsasl_are_recognised() {
        let config = SASLConfig::builder()
            .with_defaults()
            .with_callback(NoAccounts)
            .unwrap();
        let breaking: [&[u8]; 4] = [
            b"n,,n,bob,r=fyko+d2lSbbFgONRv8qkxdawL",
            b"n,a,n=bob,r=abc",
            b"n,,n=bob,",
            b"n,,,r=abc",
        ];
        for msg in breaking {
            assert!(scram_message_breaks_parser(true, msg), "{msg:?}");
            // Upstream still panics: when this fails, rsasl is fixed and the guard can go.
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut s = SASLServer::<User>::new(config.clone())
                    .start_suggested(Mechname::parse(SCRAM_SHA256.as_bytes()).unwrap())
                    .unwrap();
                let mut out = Vec::new();
                let _ = s.step(Some(msg), &mut out);
            }));
            assert!(run.is_err(), "rsasl no longer panics on {msg:?}");
        }
        for (first, msg) in [
            (true, &b"n,,n=alice,r=fyko+d2lbbFgONRv9qkxdawL"[..]),
            (true, b"y,a=alice@example.test,n=alice,r=abc,x=ext"),
            (false, b"c=biws,r=abcdef,p=dHpbWH0="),
        ] {
            assert!(!scram_message_breaks_parser(first, msg), "{msg:?}");
        }
        assert!(scram_message_breaks_parser(false, b"c=biws,r,p=x"));
    }
}
