//! SASL negotiation on the stream (RFC 6120 §6); the mechanisms are rsasl's, the
//! account lookup is `crate::sasl`.

use super::*;

impl Conn {
    pub(super) fn mechanisms(&self) -> Vec<&'static str> {
        let mut m = vec![sasl::SCRAM_SHA256, sasl::SCRAM_SHA1];
        if self.tls {
            m.push(sasl::PLAIN);
        }
        m
    }

    /// One SASL exchange; `Ok(true)` when authenticated.
    pub(super) async fn authenticate(&mut self, auth: &Element) -> Result<bool, End> {
        let mech = auth.attr("mechanism").unwrap_or_default().to_string();
        if !self.mechanisms().contains(&mech.as_str()) {
            self.sasl_failure("invalid-mechanism", None).await?;
            return Ok(false);
        }
        let Ok(name) = Mechname::parse(mech.as_bytes()) else {
            self.sasl_failure("invalid-mechanism", None).await?;
            return Ok(false);
        };
        let mut session =
            match SASLServer::<sasl::User>::new(self.shared.sasl.clone()).start_suggested(name) {
                Ok(s) => s,
                Err(_) => {
                    self.sasl_failure("invalid-mechanism", None).await?;
                    return Ok(false);
                }
            };
        let mut input = match decode_sasl(&auth.text()) {
            Ok(i) => i,
            Err(()) => {
                self.sasl_failure("incorrect-encoding", None).await?;
                return Ok(false);
            }
        };
        let mut first = true;
        loop {
            let mut out = Vec::new();
            let mut state = session.step(input.as_deref(), &mut out);
            // rsasl draws SCRAM server nonces from every printable character but ','
            // (RFC 5802 allows that); clients such as xmpp.js mis-parse a '"' in it. Draw
            // again until the nonce is one every client reads (about 1 in 4 need it).
            let mut redraws = 0;
            while first && state.is_ok() && quoted_nonce(&out) && redraws < 64 {
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
            first = false;
            match state {
                Err(e) => {
                    tracing::debug!("sasl step failed: {e}");
                    return self.auth_failed().await;
                }
                Ok(s) if s.is_running() => {
                    let ch = Element::new("challenge", NS_SASL).with_text(B64.encode(&out));
                    self.out.push(&ch);
                    self.out.flush().await?;
                    let resp = self.next_stanza().await?;
                    match (resp.name.as_str(), resp.ns.as_str()) {
                        ("response", NS_SASL) => match decode_sasl(&resp.text()) {
                            Ok(i) => input = Some(i.unwrap_or_default()),
                            Err(()) => {
                                self.sasl_failure("incorrect-encoding", None).await?;
                                return Ok(false);
                            }
                        },
                        ("abort", NS_SASL) => {
                            self.sasl_failure("aborted", None).await?;
                            return Ok(false);
                        }
                        _ => {
                            return Err(End::Error(
                                StreamError::NotAuthorized,
                                "expected a SASL response".into(),
                            ));
                        }
                    }
                }
                Ok(_) => {
                    let Some(user) = session.validation() else {
                        return self.auth_failed().await;
                    };
                    let mut ok = Element::new("success", NS_SASL);
                    if !out.is_empty() {
                        ok = ok.with_text(B64.encode(&out));
                    }
                    self.out.push(&ok);
                    self.out.flush().await?;
                    metrics::counter!("presenced_xmpp_auth_total", "result" => "ok").increment(1);
                    tracing::debug!(user, mechanism = mech, "authenticated");
                    self.user = Some(user);
                    return Ok(true);
                }
            }
        }
    }

    pub(super) async fn auth_failed(&mut self) -> Result<bool, End> {
        metrics::counter!("presenced_xmpp_auth_total", "result" => "failed").increment(1);
        self.auth_failures += 1;
        // A short pause blunts password guessing without holding a thread.
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.sasl_failure("not-authorized", Some("wrong user name or password"))
            .await?;
        if self.auth_failures >= self.shared.cfg.max_auth_attempts {
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

pub(super) fn decode_sasl(text: &str) -> Result<Option<Vec<u8>>, ()> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(None);
    }
    if t == "=" {
        return Ok(Some(Vec::new()));
    }
    B64.decode(t).map(Some).map_err(|_| ())
}
