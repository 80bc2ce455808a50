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
