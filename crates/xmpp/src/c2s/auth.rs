//! SASL negotiation on the stream (RFC 6120 §6); the mechanisms are rsasl's, the
//! account lookup is `crate::sasl`.

use super::*;
use crate::guard::Attempt;

impl Conn {
    pub(super) fn mechanisms(&self) -> Vec<&'static str> {
        let mut m = vec![sasl::SCRAM_SHA256, sasl::SCRAM_SHA1];
        if self.tls {
            m.push(sasl::PLAIN);
        }
        m
    }

    /// One SASL exchange; `Ok(true)` when authenticated. Before anything is verified
    /// the throttle is asked (the address, then the account once the client named
    /// it); a refusal is `<temporary-auth-failure/>` (RFC 6120 §6.5.12).
    pub(super) async fn authenticate(&mut self, auth: &Element) -> Result<bool, End> {
        let mech = auth.attr("mechanism").unwrap_or_default().to_string();
        if !self.mechanisms().contains(&mech.as_str()) {
            self.sasl_failure("invalid-mechanism", None).await?;
            return Ok(false);
        }
        if let Err(why) = self.shared.guard.check(self.peer.ip(), None) {
            return self.auth_refused(why).await;
        }
        let Ok(name) = Mechname::parse(mech.as_bytes()) else {
            self.sasl_failure("invalid-mechanism", None).await?;
            return Ok(false);
        };
        let mut input = match decode_sasl(&auth.text()) {
            Ok(i) => i,
            Err(()) => {
                self.sasl_failure("incorrect-encoding", None).await?;
                return Ok(false);
            }
        };
        if mech == sasl::PLAIN {
            return self.plain(input).await;
        }
        if input.is_none() {
            // No initial response (RFC 6120 §6.4.2): an empty challenge asks for the
            // client's first message (rsasl's SCRAM cannot start without it).
            self.out.push(&Element::new("challenge", NS_SASL));
            self.out.flush().await?;
            match self.sasl_response().await? {
                Some(i) => input = Some(i),
                None => return Ok(false),
            }
        }
        let mut session =
            match SASLServer::<sasl::User>::new(self.shared.sasl.clone()).start_suggested(name) {
                Ok(s) => s,
                Err(_) => {
                    self.sasl_failure("invalid-mechanism", None).await?;
                    return Ok(false);
                }
            };
        // The account the client names (SCRAM's client-first message), once it has,
        // and the attempt's place in the throttle from then on.
        let mut account: Option<String> = None;
        let mut attempt = None;
        loop {
            if let Some(msg) = input.as_deref().filter(|m| !m.is_empty())
                && sasl::scram_message_breaks_parser(account.is_none(), msg)
            {
                // rsasl would panic on it (found by fuzzing): refused before it sees it.
                self.sasl_failure("malformed-request", None).await?;
                return Ok(false);
            }
            // This step reads the client-first message (it names the account), or the
            // client-final message with the proof.
            let names_account = account.is_none();
            if names_account && let Some(msg) = input.as_deref().filter(|m| !m.is_empty()) {
                let key = self.account_key(&scram_authcid(msg).unwrap_or_default());
                match self.shared.guard.begin(self.peer.ip(), &key) {
                    Ok(a) => attempt = Some(a),
                    Err(why) => return self.auth_refused(why).await,
                }
                account = Some(key);
            }
            // The client's final message carries its proof: the decisive step, taken
            // only while the budget allows (failures of parallel attempts count).
            if !names_account
                && let Some(a) = attempt.as_mut()
                && let Err(why) = self.shared.guard.decide(a)
            {
                return self.auth_refused(why).await;
            }
            let mut out = Vec::new();
            let mut state = session.step(input.as_deref(), &mut out);
            // rsasl draws SCRAM server nonces from every printable character but ','
            // (RFC 5802 allows that); clients such as xmpp.js mis-parse a '"' in it. Draw
            // again until the nonce is one every client reads (about 1 in 4 need it).
            let mut redraws = 0;
            while names_account && state.is_ok() && quoted_nonce(&out) && redraws < 64 {
                redraws += 1;
                let Ok(fresh) =
                    SASLServer::<sasl::User>::new(self.shared.sasl.clone()).start_suggested(name)
                else {
                    break;
                };
                session = fresh;
                out.clear();
                state = session.step(input.as_deref(), &mut out);
            }
            match state {
                Err(e) => {
                    tracing::debug!("sasl step failed: {e}");
                    return self.auth_failed(account.as_deref(), attempt).await;
                }
                Ok(s) if s.is_running() => {
                    let ch = Element::new("challenge", NS_SASL).with_text(B64.encode(&out));
                    self.out.push(&ch);
                    self.out.flush().await?;
                    match self.sasl_response().await? {
                        Some(i) => input = Some(i),
                        None => return Ok(false),
                    }
                }
                Ok(_) => {
                    let Some(user) = session.validation() else {
                        return self.auth_failed(account.as_deref(), attempt).await;
                    };
                    return self.auth_succeeded(user, &mech, &out, attempt).await;
                }
            }
        }
    }

    /// The client's answer to a challenge: `None` when the exchange ended (aborted,
    /// or badly encoded, already answered).
    async fn sasl_response(&mut self) -> Result<Option<Vec<u8>>, End> {
        let resp = self.next_stanza().await?;
        match (resp.name.as_str(), resp.ns.as_str()) {
            ("response", NS_SASL) => match decode_sasl(&resp.text()) {
                Ok(i) => Ok(Some(i.unwrap_or_default())),
                Err(()) => {
                    self.sasl_failure("incorrect-encoding", None).await?;
                    Ok(None)
                }
            },
            ("abort", NS_SASL) => {
                self.sasl_failure("aborted", None).await?;
                Ok(None)
            }
            _ => Err(End::Error(
                StreamError::NotAuthorized,
                "expected a SASL response".into(),
            )),
        }
    }

    /// SASL PLAIN (RFC 4616), only offered inside TLS. The password derivation (PBKDF2
    /// over the stored SCRAM-SHA-256 salt) runs off the async workers, a bounded number
    /// at once (`Guard::verify`), and outside any lock on the replicated state; an
    /// unknown user costs the same derivation against made-up keys.
    async fn plain(&mut self, input: Option<Vec<u8>>) -> Result<bool, End> {
        let msg = match input {
            Some(m) => m,
            None => {
                self.out.push(&Element::new("challenge", NS_SASL));
                self.out.flush().await?;
                match self.sasl_response().await? {
                    Some(m) => m,
                    None => return Ok(false),
                }
            }
        };
        let Some((authzid, authcid, password)) = parse_plain(&msg) else {
            self.sasl_failure("malformed-request", None).await?;
            return Ok(false);
        };
        let account = self.account_key(&authcid);
        let mut attempt = match self.shared.guard.begin(self.peer.ip(), &account) {
            Ok(a) => a,
            Err(why) => return self.auth_refused(why).await,
        };
        let router = &self.shared.router;
        let user = router.auth_user(&authcid);
        // An authorization identity, if given, must be the user itself.
        let authz_ok = user.as_deref().is_some_and(|u| {
            authzid.is_empty()
                || authzid == format!("{u}@{}", router.domain())
                || router.auth_user(&authzid).as_deref() == Some(u)
        });
        let keys = user
            .as_deref()
            .and_then(|u| router.scram_keys(u, presenced_router::ScramHash::Sha256));
        let decoy = self.shared.decoy_salt;
        let verified = self
            .shared
            .guard
            .verify(&mut attempt, move || {
                plain_matches(&password, keys.as_ref(), &decoy)
            })
            .await;
        match verified {
            Err(why) => self.auth_refused(why).await,
            Ok(true) if authz_ok => {
                let user = user.unwrap_or_default();
                self.auth_succeeded(user, sasl::PLAIN, &[], Some(attempt))
                    .await
            }
            Ok(_) => self.auth_failed(Some(&account), Some(attempt)).await,
        }
    }

    /// How the throttle names the account a client claims: the normalised local user
    /// name, or the claim itself (bounded) when it cannot be one.
    fn account_key(&self, authcid: &str) -> String {
        self.shared.router.auth_user(authcid).unwrap_or_else(|| {
            let mut s: String = authcid.chars().take(64).collect();
            s.make_ascii_lowercase();
            s
        })
    }

    async fn auth_succeeded(
        &mut self,
        user: String,
        mech: &str,
        out: &[u8],
        attempt: Option<Attempt>,
    ) -> Result<bool, End> {
        let mut ok = Element::new("success", NS_SASL);
        if !out.is_empty() {
            ok = ok.with_text(B64.encode(out));
        }
        self.out.push(&ok);
        self.out.flush().await?;
        metrics::counter!("presenced_xmpp_auth_total", "result" => "ok").increment(1);
        tracing::debug!(user, mechanism = mech, "authenticated");
        self.shared.guard.succeeded(self.peer.ip(), &user, attempt);
        self.slot.authenticated();
        self.user = Some(user);
        Ok(true)
    }

    pub(super) async fn auth_failed(
        &mut self,
        account: Option<&str>,
        attempt: Option<Attempt>,
    ) -> Result<bool, End> {
        metrics::counter!("presenced_xmpp_auth_total", "result" => "failed").increment(1);
        self.shared.guard.failed(self.peer.ip(), account, attempt);
        self.auth_failures += 1;
        // A short pause blunts password guessing without holding a thread.
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.sasl_failure("not-authorized", Some("wrong user name or password"))
            .await?;
        self.end_after_failures()
    }

    /// An attempt the throttle (or the bound on verifications) refused: nothing was
    /// checked; the client may try again later.
    async fn auth_refused(&mut self, why: Refused) -> Result<bool, End> {
        why.count();
        self.auth_failures += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let text = match why {
            Refused::AuthBusy => "the server is busy; try again later",
            _ => "too many failed attempts; try again later",
        };
        self.sasl_failure("temporary-auth-failure", Some(text))
            .await?;
        self.end_after_failures()
    }

    fn end_after_failures(&mut self) -> Result<bool, End> {
        if self.auth_failures >= self.shared.cfg.max_auth_attempts {
            guard::closed("auth_failures");
            return Err(End::Error(
                StreamError::PolicyViolation,
                "too many failed authentication attempts".into(),
            ));
        }
        Ok(false)
    }

    pub(super) async fn sasl_failure(&mut self, cond: &str, text: Option<&str>) -> Result<(), End> {
        let mut f = Element::new("failure", NS_SASL).with_child(Element::new(cond, NS_SASL));
        if let Some(t) = text {
            f.push(Element::new("text", NS_SASL).with_text(t));
        }
        self.out.push(&f);
        self.out.flush().await?;
        Ok(())
    }
}

/// Does a SCRAM server-first message (`r=NONCE,s=..,i=..`) carry a nonce with a
/// character some clients cannot read?
fn quoted_nonce(server_first: &[u8]) -> bool {
    server_first.starts_with(b"r=")
        && server_first
            .iter()
            .take_while(|b| **b != b',')
            .any(|b| matches!(b, b'"' | b'\\' | b'\''))
}

pub(crate) fn decode_sasl(text: &str) -> Result<Option<Vec<u8>>, ()> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(None);
    }
    if t == "=" {
        return Ok(Some(Vec::new()));
    }
    B64.decode(t).map(Some).map_err(|_| ())
}

/// The authentication identity of a SCRAM client-first message
/// (`gs2-header n=NAME,r=...`, RFC 5802 §7), unescaped; `None` when there is none.
fn scram_authcid(msg: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(msg).ok()?;
    let name = text.split(',').nth(2)?.strip_prefix("n=")?;
    Some(name.replace("=2C", ",").replace("=3D", "="))
}

/// `authzid NUL authcid NUL password` (RFC 4616 §2), each UTF-8, the last two not
/// empty, none over 255 bytes.
pub(crate) fn parse_plain(msg: &[u8]) -> Option<(String, String, String)> {
    let mut parts = msg.split(|b| *b == 0);
    let (z, c, p) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || c.is_empty() || p.is_empty() {
        return None;
    }
    if [z, c, p].iter().any(|f| f.len() > 255) {
        return None;
    }
    let s = |b: &[u8]| String::from_utf8(b.to_vec()).ok();
    Some((s(z)?, s(c)?, s(p)?))
}

/// Does `password` derive the stored SCRAM-SHA-256 key (in constant time)? Without
/// keys (an unknown user) the same work is done against made-up ones.
fn plain_matches(
    password: &str,
    keys: Option<&presenced_router::ScramKeys>,
    decoy_salt: &[u8],
) -> bool {
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    let decoded = keys.and_then(|k| {
        Some((
            k.iterations,
            B64.decode(&k.salt).ok()?,
            B64.decode(&k.stored_key).ok()?,
        ))
    });
    let known = decoded.is_some();
    let (iterations, salt, stored) =
        decoded.unwrap_or_else(|| (4096, decoy_salt.to_vec(), vec![0u8; 32]));
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2::<Hmac<Sha256>>(password.as_bytes(), &salt, iterations, &mut salted)
        .expect("HMAC takes keys of any length");
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&salted).expect("any key length");
    mac.update(b"Client Key");
    let stored_again = Sha256::digest(mac.finalize().into_bytes());
    known && bool::from(stored_again.as_slice().ct_eq(&stored))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_messages_are_parsed_per_rfc_4616() {
        assert_eq!(
            parse_plain(b"\0alice\0pw"),
            Some(("".into(), "alice".into(), "pw".into()))
        );
        assert_eq!(
            parse_plain(b"alice@example.test\0alice\0pw"),
            Some(("alice@example.test".into(), "alice".into(), "pw".into()))
        );
        for bad in [
            &b"alice\0pw"[..],
            b"\0\0pw",
            b"\0alice\0",
            b"\0a\0b\0c",
            b"\0a\0\xff",
        ] {
            assert_eq!(parse_plain(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_scram_authcid_is_read_and_unescaped() {
        assert_eq!(scram_authcid(b"n,,n=alice,r=abc").as_deref(), Some("alice"));
        assert_eq!(
            scram_authcid(b"y,a=x,n=a=2Cb=3Dc,r=abc").as_deref(),
            Some("a,b=c")
        );
        assert_eq!(scram_authcid(b"n,,r=abc"), None);
        assert_eq!(scram_authcid(b"garbage"), None);
    }

    #[test]
    fn plain_passwords_are_checked_against_the_stored_keys() {
        // RFC 7677's example user (password "pencil"); StoredKey computed independently
        // (Python's hashlib.pbkdf2_hmac and hmac).
        let keys = presenced_router::ScramKeys {
            iterations: 4096,
            salt: "W22ZaJ0SNY7soEsUEjb6gQ==".into(),
            stored_key: "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=".into(),
            server_key: "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=".into(),
        };
        assert!(plain_matches("pencil", Some(&keys), &[1; 16]));
        assert!(!plain_matches("pencil!", Some(&keys), &[1; 16]));
        assert!(!plain_matches("pencil", None, &[1; 16]));
    }
}
