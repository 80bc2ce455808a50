//! Stream setup and teardown (RFC 6120 §4): headers, features, negotiation order,
//! stream errors.

use super::*;

impl Conn {
    pub(super) async fn finish(&mut self, end: End) {
        match end {
            End::Lost => return,
            End::Closed => {}
            End::Error(cond, text) => self.stream_error(cond, &text, ""),
            End::ErrorWith(cond, text, app) => self.stream_error(cond, &text, &app),
        }
        self.out.raw("</stream:stream>");
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = self.out.write_buffered().await;
            let _ = self.out.w.shutdown().await;
        })
        .await;
    }

    fn stream_error(&mut self, cond: StreamError, text: &str, app: &str) {
        let cond = cond.as_str();
        metrics::counter!("presenced_xmpp_stream_errors_total", "condition" => cond).increment(1);
        tracing::info!(condition = cond, "stream error: {text}");
        if !self.header_sent {
            self.send_header();
        }
        let mut s = String::new();
        stream_error_into(&mut s, cond, text, app);
        self.out.raw(&s);
    }

    pub(super) fn send_header(&mut self) {
        let id = format!("{:016x}", rand::random::<u64>());
        let mut s = String::from(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='",
        );
        s.push_str(&id);
        s.push_str("' from='");
        escape_into(&mut s, self.shared.router.domain());
        s.push_str("' version='1.0' xml:lang='en'>");
        self.out.raw(&s);
        self.header_sent = true;
    }

    /// Read the client's stream header and answer with ours and the features.
    pub(super) async fn open_stream(&mut self) -> Result<(), End> {
        let h = loop {
            match self.next().await? {
                Frame::Header(h) => break h,
                Frame::Keepalive => continue,
                Frame::End => return Err(End::Closed),
                Frame::Stanza(_) => {
                    return Err(End::Error(
                        StreamError::BadFormat,
                        "expected a stream header".into(),
                    ));
                }
            }
        };
        self.send_header();
        if h.content_ns != NS_CLIENT {
            return Err(End::Error(
                StreamError::InvalidNamespace,
                format!("the stream's namespace must be {NS_CLIENT}"),
            ));
        }
        let to_ok =
            h.to.as_deref()
                .is_some_and(|t| t.eq_ignore_ascii_case(self.domain()));
        if !to_ok {
            return Err(End::Error(
                StreamError::HostUnknown,
                format!("this server serves {}", self.domain()),
            ));
        }
        if h.version.as_deref().is_none_or(|v| !v.starts_with("1.")) {
            return Err(End::Error(
                StreamError::UnsupportedVersion,
                "version 1.0 is required".into(),
            ));
        }
        let mut f = Element::new("stream:features", NS_CLIENT);
        if self.user.is_none() {
            if !self.tls {
                let mut st = Element::new("starttls", NS_TLS);
                if self.shared.cfg.require_tls {
                    st.push(Element::new("required", NS_TLS));
                }
                f.push(st);
            }
            if self.tls || !self.shared.cfg.require_tls {
                let mut m = Element::new("mechanisms", NS_SASL);
                for mech in self.mechanisms() {
                    m.push(Element::new("mechanism", NS_SASL).with_text(mech));
                }
                f.push(m);
            }
        } else {
            f.push(Element::new("bind", NS_BIND));
            f.push(
                Element::new("session", NS_SESSION)
                    .with_child(Element::new("optional", NS_SESSION)),
            );
            f.push(Element::new("ver", NS_ROSTERVER));
            f.push(Element::new("sm", sm::NS_SM));
        }
        // stream:features is written with the header's `stream` prefix.
        let mut s = String::new();
        f.write_to(&mut s, NS_CLIENT);
        self.out.raw(&s);
        self.out.flush().await?;
        Ok(())
    }

    /// STARTTLS, SASL and resource binding; returns the bound session.
    pub(super) async fn negotiate(&mut self) -> Result<(Session, Receiver<Delivery>), End> {
        self.open_stream().await?;
        loop {
            let el = self.next_stanza().await?;
            super::hot::STANZAS_IN.increment(1);
            match (el.name.as_str(), el.ns.as_str()) {
                ("starttls", NS_TLS) if !self.tls && self.user.is_none() => {
                    self.starttls().await?;
                    self.open_stream().await?;
                }
                ("auth", NS_SASL)
                    if self.user.is_none() && (self.tls || !self.shared.cfg.require_tls) =>
                {
                    if self.authenticate(&el).await? {
                        let r = self.reader.take().ok_or(End::Lost)?.into_inner();
                        self.reader = Some(Box::new(StreamReader::new(r, self.shared.limits())));
                        self.open_stream().await?;
                    }
                }
                ("iq", NS_CLIENT) if self.user.is_some() => {
                    if let Some(bound) = self.bind(&el).await? {
                        return Ok(bound);
                    }
                }
                (_, sm::NS_SM) if self.user.is_some() => {
                    self.sm_before_bind(&el);
                    self.out.flush().await?;
                }
                _ if self.user.is_none() => {
                    return Err(End::Error(
                        StreamError::NotAuthorized,
                        format!("<{}/> before authentication", el.name),
                    ));
                }
                _ => {
                    return Err(End::Error(
                        StreamError::NotAuthorized,
                        format!("<{}/> before resource binding", el.name),
                    ));
                }
            }
        }
    }
}
