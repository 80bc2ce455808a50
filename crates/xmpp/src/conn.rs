//! One client connection: stream negotiation (STARTTLS, SASL, resource binding), then
//! the session loop translating stanzas to router calls and deliveries to stanzas.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use presenced_model::{Refusal, RefusalClass, RosterItem};
use presenced_router::queue::{self, Receiver};
use presenced_router::{
    Address, Availability, Delivery, Message, MessageKind, PresenceState, RouteError, Session, Show,
};
use rsasl::mechname::Mechname;
use rsasl::prelude::SASLServer;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tracing::Instrument;

use crate::xml::{Element, Frame, NS_CLIENT, StreamReader, XmlError, escape_into};
use crate::{Shared, sasl};

const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
const NS_SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
const NS_STREAMS_ERR: &str = "urn:ietf:params:xml:ns:xmpp-streams";
const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
const NS_ROSTER: &str = "jabber:iq:roster";
const NS_PING: &str = "urn:xmpp:ping";
const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
const NS_VERSION: &str = "jabber:iq:version";
const NS_ADDRESS: &str = "http://jabber.org/protocol/address";
const NS_DELAY: &str = "urn:xmpp:delay";
const NS_HINTS: &str = "urn:xmpp:hints";
const NS_DATA: &str = "jabber:x:data";
const NS_ROSTERVER: &str = "urn:xmpp:features:rosterver";
/// Application-specific stanza error conditions (the refusal's code).
pub const NS_ERRORS: &str = "urn:presenced:errors";
/// FORM_TYPE of the messaging-policy form in the server's disco#info (XEP-0128).
pub const NS_POLICY_FORM: &str = "urn:presenced:im-policy";

pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}
type BoxIo = Box<dyn Io>;
type Reader = StreamReader<ReadHalf<BoxIo>>;

/// What the reader task hands the session: small, so the channel's slots are small.
enum Item {
    Stanza(Box<Element>),
    Keepalive,
    Header,
    End,
}

/// Why a stream ends.
enum End {
    /// Send this stream error (RFC 6120 §4.9.3 condition, text), then close.
    Error(&'static str, String),
    /// The client closed the stream (or the connection): close ours.
    Closed,
    /// The connection is gone; nothing can be sent.
    Lost,
}

impl From<XmlError> for End {
    fn from(e: XmlError) -> End {
        match e {
            XmlError::Io(_) => End::Lost,
            other => End::Error(other.condition(), other.to_string()),
        }
    }
}

impl From<std::io::Error> for End {
    fn from(_: std::io::Error) -> End {
        End::Lost
    }
}

/// The write side: stanzas are collected into one buffer and flushed together.
struct Out {
    w: WriteHalf<BoxIo>,
    buf: String,
}

impl Out {
    fn push(&mut self, el: &Element) {
        el.write_to(&mut self.buf, NS_CLIENT);
        metrics::counter!("presenced_xmpp_stanzas_out_total").increment(1);
    }

    fn raw(&mut self, s: &str) {
        self.buf.push_str(s);
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.w.write_all(self.buf.as_bytes()).await?;
        self.w.flush().await?;
        self.buf.clear();
        if self.buf.capacity() > 256 {
            // Idle sessions should not keep a burst's buffer.
            self.buf = String::new();
        }
        Ok(())
    }
}

pub(crate) async fn handle(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    direct_tls: bool,
) {
    let span = tracing::info_span!("xmpp", %peer, jid = tracing::field::Empty);
    async move {
        metrics::gauge!("presenced_xmpp_connections").increment(1.0);
        let io: BoxIo = if direct_tls {
            let acc = &shared.tls;
            // Boxed (as below): the handshake state is large and short-lived; an idle
            // session's task should hold only what the session needs.
            match tokio::time::timeout(shared.cfg.auth_timeout, Box::pin(acc.accept(tcp))).await {
                Ok(Ok(t)) => Box::new(t),
                _ => {
                    metrics::gauge!("presenced_xmpp_connections").decrement(1.0);
                    return;
                }
            }
        } else {
            Box::new(tcp)
        };
        Box::pin(run(io, direct_tls, &shared)).await;
        metrics::gauge!("presenced_xmpp_connections").decrement(1.0);
    }
    .instrument(span)
    .await
}

async fn run(io: BoxIo, tls: bool, shared: &Arc<Shared>) {
    let (r, w) = tokio::io::split(io);
    let mut conn = Conn {
        shared: shared.clone(),
        reader: Some(StreamReader::new(r, shared.limits())),
        out: Out {
            w,
            buf: String::new(),
        },
        tls,
        user: None,
        header_sent: false,
        auth_failures: 0,
    };
    // Boxed: negotiation state (TLS handshake, SASL) is large and is freed once the
    // session runs, so an idle session does not carry it.
    let negotiated =
        tokio::time::timeout(shared.cfg.auth_timeout, Box::pin(conn.negotiate())).await;
    let end = match negotiated {
        Err(_) => End::Error("connection-timeout", "authentication took too long".into()),
        Ok(Err(end)) => end,
        Ok(Ok((session, rx))) => {
            tracing::Span::current().record("jid", session.jid.as_str());
            conn.session_loop(session, rx).await
        }
    };
    Box::pin(conn.finish(end)).await;
}

struct Conn {
    shared: Arc<Shared>,
    reader: Option<Reader>,
    out: Out,
    tls: bool,
    user: Option<String>,
    header_sent: bool,
    auth_failures: u32,
}

impl Conn {
    fn domain(&self) -> &str {
        self.shared.router.domain()
    }

    async fn next(&mut self) -> Result<Frame, End> {
        let r = self.reader.as_mut().ok_or(End::Lost)?;
        Ok(r.next().await?)
    }

    /// The next stanza of a stream being negotiated (whitespace skipped).
    async fn next_stanza(&mut self) -> Result<Element, End> {
        loop {
            match self.next().await? {
                Frame::Stanza(el) => return Ok(el),
                Frame::Keepalive => continue,
                Frame::End => return Err(End::Closed),
                Frame::Header(_) => {
                    return Err(End::Error("bad-format", "unexpected stream header".into()));
                }
            }
        }
    }

    async fn finish(&mut self, end: End) {
        match end {
            End::Lost => return,
            End::Closed => {}
            End::Error(cond, text) => {
                metrics::counter!("presenced_xmpp_stream_errors_total", "condition" => cond)
                    .increment(1);
                tracing::info!(condition = cond, "stream error: {text}");
                if !self.header_sent {
                    self.send_header();
                }
                let mut s = String::from("<stream:error><");
                s.push_str(cond);
                s.push_str(" xmlns='");
                s.push_str(NS_STREAMS_ERR);
                s.push_str("'/><text xmlns='");
                s.push_str(NS_STREAMS_ERR);
                s.push_str("'>");
                escape_into(&mut s, &text);
                s.push_str("</text></stream:error>");
                self.out.raw(&s);
            }
        }
        self.out.raw("</stream:stream>");
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = self.out.flush().await;
            let _ = self.out.w.shutdown().await;
        })
        .await;
    }

    fn send_header(&mut self) {
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
    async fn open_stream(&mut self) -> Result<(), End> {
        let h = loop {
            match self.next().await? {
                Frame::Header(h) => break h,
                Frame::Keepalive => continue,
                Frame::End => return Err(End::Closed),
                Frame::Stanza(_) => {
                    return Err(End::Error("bad-format", "expected a stream header".into()));
                }
            }
        };
        self.send_header();
        if h.content_ns != NS_CLIENT {
            return Err(End::Error(
                "invalid-namespace",
                format!("the stream's namespace must be {NS_CLIENT}"),
            ));
        }
        let to_ok =
            h.to.as_deref()
                .is_some_and(|t| t.eq_ignore_ascii_case(self.domain()));
        if !to_ok {
            return Err(End::Error(
                "host-unknown",
                format!("this server serves {}", self.domain()),
            ));
        }
        if h.version.as_deref().is_none_or(|v| !v.starts_with("1.")) {
            return Err(End::Error(
                "unsupported-version",
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
        }
        // stream:features is written with the header's `stream` prefix.
        let mut s = String::new();
        f.write_to(&mut s, NS_CLIENT);
        self.out.raw(&s);
        self.out.flush().await?;
        Ok(())
    }

    fn mechanisms(&self) -> Vec<&'static str> {
        let mut m = vec![sasl::SCRAM_SHA256, sasl::SCRAM_SHA1];
        if self.tls {
            m.push(sasl::PLAIN);
        }
        m
    }

    /// STARTTLS, SASL and resource binding; returns the bound session.
    async fn negotiate(&mut self) -> Result<(Session, Receiver<Delivery>), End> {
        self.open_stream().await?;
        loop {
            let el = self.next_stanza().await?;
            metrics::counter!("presenced_xmpp_stanzas_in_total").increment(1);
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
                        self.reader = Some(StreamReader::new(r, self.shared.limits()));
                        self.open_stream().await?;
                    }
                }
                ("iq", NS_CLIENT) if self.user.is_some() => {
                    if let Some(bound) = self.bind(&el).await? {
                        return Ok(bound);
                    }
                }
                _ if self.user.is_none() => {
                    return Err(End::Error(
                        "not-authorized",
                        format!("<{}/> before authentication", el.name),
                    ));
                }
                _ => {
                    return Err(End::Error(
                        "not-authorized",
                        format!("<{}/> before resource binding", el.name),
                    ));
                }
            }
        }
    }

    async fn starttls(&mut self) -> Result<(), End> {
        let reader = self.reader.take().ok_or(End::Lost)?;
        if reader.has_buffered() {
            // Data pipelined after <starttls/> would be processed as if it were encrypted.
            return Err(End::Error(
                "policy-violation",
                "data sent after <starttls/>".into(),
            ));
        }
        self.out.raw(&format!("<proceed xmlns='{NS_TLS}'/>"));
        self.out.flush().await?;
        let r = reader.into_inner();
        let w = std::mem::replace(
            &mut self.out.w,
            tokio::io::split(Box::new(tokio::io::empty()) as BoxIo).1,
        );
        let io = r.unsplit(w);
        let acc = self.shared.tls.clone();
        let tls = acc.accept(io).await.map_err(|e| {
            tracing::info!("TLS handshake failed: {e}");
            End::Lost
        })?;
        let (r, w) = tokio::io::split(Box::new(tls) as BoxIo);
        self.out.w = w;
        self.reader = Some(StreamReader::new(r, self.shared.limits()));
        self.tls = true;
        Ok(())
    }

    /// One SASL exchange; `Ok(true)` when authenticated.
    async fn authenticate(&mut self, auth: &Element) -> Result<bool, End> {
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
        loop {
            let mut out = Vec::new();
            let state = session.step(input.as_deref(), &mut out);
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
                                "not-authorized",
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

    async fn auth_failed(&mut self) -> Result<bool, End> {
        metrics::counter!("presenced_xmpp_auth_total", "result" => "failed").increment(1);
        self.auth_failures += 1;
        // A short pause blunts password guessing without holding a thread.
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.sasl_failure("not-authorized", Some("wrong user name or password"))
            .await?;
        if self.auth_failures >= self.shared.cfg.max_auth_attempts {
            return Err(End::Error(
                "policy-violation",
                "too many failed authentication attempts".into(),
            ));
        }
        Ok(false)
    }

    async fn sasl_failure(&mut self, cond: &str, text: Option<&str>) -> Result<(), End> {
        let mut f = Element::new("failure", NS_SASL).with_child(Element::new(cond, NS_SASL));
        if let Some(t) = text {
            f.push(Element::new("text", NS_SASL).with_text(t));
        }
        self.out.push(&f);
        self.out.flush().await?;
        Ok(())
    }

    async fn bind(&mut self, iq: &Element) -> Result<Option<(Session, Receiver<Delivery>)>, End> {
        let id = iq.attr("id").unwrap_or_default().to_string();
        let Some(b) = iq
            .child("bind", NS_BIND)
            .filter(|_| iq.attr("type") == Some("set"))
        else {
            if iq.child("session", NS_SESSION).is_some() {
                self.out.push(&iq_result(&id, None, None));
                self.out.flush().await?;
                return Ok(None);
            }
            return Err(End::Error(
                "not-authorized",
                "resource binding is required first".into(),
            ));
        };
        let resource = b.child("resource", NS_BIND).map(|r| r.text());
        let user = self.user.clone().unwrap_or_default();
        match self.shared.router.open_session(&user, resource.as_deref()) {
            Ok((session, rx)) => {
                let res = Element::new("bind", NS_BIND)
                    .with_child(Element::new("jid", NS_BIND).with_text(session.jid.clone()));
                self.out.push(&iq_result(&id, None, Some(res)));
                self.out.flush().await?;
                Ok(Some((session, rx)))
            }
            Err(e) => {
                let err = stanza_error("modify", "bad-request", Some(&e.to_string()), None);
                self.out.push(&iq_error(iq, err, None));
                self.out.flush().await?;
                Ok(None)
            }
        }
    }

    // ------------------------------------------------------------ the session

    async fn session_loop(&mut self, session: Session, mut rx: Receiver<Delivery>) -> End {
        let reader = self.reader.take();
        let (stx, mut srx) = queue::queue::<Result<Item, XmlError>>(8);
        // The XML reader is not cancel-safe: it lives in its own task for the whole
        // session and hands over complete stanzas.
        let reader_fut = async move {
            let Some(mut reader) = reader else { return };
            loop {
                let f = reader.next().await.map(|f| match f {
                    Frame::Stanza(el) => Item::Stanza(Box::new(el)),
                    Frame::Keepalive => Item::Keepalive,
                    Frame::Header(_) => Item::Header,
                    Frame::End => Item::End,
                });
                let more = matches!(f, Ok(Item::Stanza(_)) | Ok(Item::Keepalive));
                if stx.send(f).await.is_err() || !more {
                    return;
                }
            }
        };
        let reader_task = tokio::spawn(reader_fut);
        let end = self.session_inner(&session, &mut srx, &mut rx).await;
        reader_task.abort();
        drop(session);
        end
    }

    async fn session_inner(
        &mut self,
        s: &Session,
        srx: &mut Receiver<Result<Item, XmlError>>,
        rx: &mut Receiver<Delivery>,
    ) -> End {
        let cfg = self.shared.cfg.clone();
        let mut last_in = Instant::now();
        let mut pinged = false;
        let mut tick = tokio::time::interval(cfg.ping_after.min(Duration::from_secs(30)) / 2);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                f = srx.recv() => {
                    last_in = Instant::now();
                    pinged = false;
                    match f {
                        Some(Ok(Item::Stanza(el))) => {
                            metrics::counter!("presenced_xmpp_stanzas_in_total").increment(1);
                            // Boxed: handling may await a Raft write, a large future
                            // that an idle session should not carry.
                            if let Err(e) = Box::pin(self.stanza(s, *el)).await {
                                return e;
                            }
                        }
                        Some(Ok(Item::Keepalive)) => {}
                        Some(Ok(Item::End)) | None => return End::Closed,
                        Some(Ok(Item::Header)) => return End::Error("bad-format", "unexpected stream header".into()),
                        Some(Err(e)) => return e.into(),
                    }
                }
                d = rx.recv() => {
                    let Some(d) = d else {
                        return End::Error("policy-violation", "the client did not read its stanzas fast enough".into());
                    };
                    if let Err(e) = self.deliver(s, d) {
                        return e;
                    }
                    // Drain what else is queued into the same write.
                    for _ in 0..64 {
                        match rx.try_recv() {
                            Some(d) => if let Err(e) = self.deliver(s, d) { return e; },
                            None => break,
                        }
                    }
                }
                _ = tick.tick() => {
                    let idle = last_in.elapsed();
                    if idle >= cfg.idle_timeout {
                        return End::Error("connection-timeout", "no traffic from the client".into());
                    }
                    if idle >= cfg.ping_after && !pinged {
                        pinged = true;
                        let ping = Element::new("iq", NS_CLIENT)
                            .with_attr("type", "get")
                            .with_attr("id", format!("ping-{:x}", rand::random::<u32>()))
                            .with_attr("from", self.domain().to_string())
                            .with_attr("to", s.jid.clone())
                            .with_child(Element::new("ping", NS_PING));
                        self.out.push(&ping);
                    }
                }
            }
            if self.out.flush().await.is_err() {
                return End::Lost;
            }
        }
    }

    /// Turn a router delivery into stanzas.
    fn deliver(&mut self, s: &Session, d: Delivery) -> Result<(), End> {
        match d {
            Delivery::Presence { from, state } => {
                let mut p = Element::new("presence", NS_CLIENT)
                    .with_attr("from", from)
                    .with_attr("to", s.jid.clone());
                match state {
                    PresenceState::Unavailable => p.set_attr("type", "unavailable"),
                    PresenceState::Available(a) => append_availability(&mut p, &a),
                }
                self.out.push(&p);
            }
            Delivery::Subscription { from, kind } => {
                let p = Element::new("presence", NS_CLIENT)
                    .with_attr("from", from)
                    .with_attr("to", s.bare.clone())
                    .with_attr("type", kind.as_str());
                self.out.push(&p);
            }
            Delivery::Message(m) => {
                let el = message_element(&m, self.domain());
                self.out.push(&el);
            }
            Delivery::RosterPush { jid, item, version } => {
                let item_el = match item {
                    Some(i) => roster_item(&i),
                    None => Element::new("item", NS_ROSTER)
                        .with_attr("jid", jid)
                        .with_attr("subscription", "remove"),
                };
                let q = Element::new("query", NS_ROSTER)
                    .with_attr("ver", version.to_string())
                    .with_child(item_el);
                let iq = Element::new("iq", NS_CLIENT)
                    .with_attr("type", "set")
                    .with_attr("id", format!("push-{version}"))
                    .with_attr("to", s.jid.clone())
                    .with_child(q);
                self.out.push(&iq);
            }
            Delivery::Replaced => {
                return Err(End::Error(
                    "conflict",
                    "replaced by a new login with the same resource".into(),
                ));
            }
            Delivery::Close { reason } => return Err(End::Error("not-authorized", reason)),
        }
        Ok(())
    }

    /// Handle one stanza from the client.
    async fn stanza(&mut self, s: &Session, mut el: Element) -> Result<(), End> {
        if el.ns != NS_CLIENT {
            return Err(End::Error(
                "unsupported-stanza-type",
                format!("<{}/> in {}", el.name, el.ns),
            ));
        }
        // RFC 6120 §8.1.2.1: the server stamps `from`; a client may not claim another.
        if let Some(f) = el.attr("from") {
            let ok = jid::Jid::new(f).is_ok_and(|j| {
                let j = j.to_string();
                j == s.jid || j == s.bare
            });
            if !ok {
                return Err(End::Error(
                    "invalid-from",
                    format!("{f} is not this session's address"),
                ));
            }
        }
        el.set_attr("from", s.jid.clone());
        match el.name.as_str() {
            "message" => self.message(s, &el).await,
            "presence" => self.presence(s, &el).await,
            "iq" => self.iq(s, &el).await,
            other => Err(End::Error("unsupported-stanza-type", format!("<{other}/>"))),
        }
    }

    async fn message(&mut self, s: &Session, el: &Element) -> Result<(), End> {
        let to = el.attr("to").unwrap_or(&s.bare).to_string();
        let kind = el
            .attr("type")
            .and_then(MessageKind::parse)
            .unwrap_or_default();
        let mut addresses = Vec::new();
        if let Some(a) = el.child("addresses", NS_ADDRESS) {
            for x in a.elements().filter(|x| x.name == "address") {
                if let (Some(k), Some(j)) = (x.attr("type"), x.attr("jid")) {
                    addresses.push(Address {
                        kind: k.to_string(),
                        jid: j.to_string(),
                        delivered: false,
                    });
                }
            }
        }
        let msg = Message {
            to: to.clone(),
            id: el.attr("id").map(str::to_string),
            kind,
            body: el.child_text("body"),
            subject: el.child_text("subject"),
            thread: el.child_text("thread"),
            addresses,
            ..Default::default()
        };
        if kind == MessageKind::Error {
            // Errors are never answered with errors (RFC 6120 §8.3.1).
            let _ = s.send_message(msg).await;
            return Ok(());
        }
        if let Err(e) = s.send_message(msg).await {
            tracing::debug!(%to, "message refused: {e}");
            metrics::counter!("presenced_xmpp_messages_refused_total").increment(1);
            let mut reply = Element::new("message", NS_CLIENT)
                .with_attr("type", "error")
                .with_attr("from", to)
                .with_attr("to", s.jid.clone())
                .with_attr("id", el.attr("id").map(str::to_string));
            if let Some(b) = el.child("body", NS_CLIENT) {
                reply.push(b.clone());
            }
            reply.push(route_error(&e));
            self.out.push(&reply);
        }
        Ok(())
    }

    async fn presence(&mut self, s: &Session, el: &Element) -> Result<(), End> {
        let to = el.attr("to").map(str::to_string);
        let ty = el.attr("type").unwrap_or("available").to_string();
        let res: Result<(), RouteError> = match (ty.as_str(), to.as_deref()) {
            ("available", _) | ("unavailable", _) => {
                let avail = if ty == "available" {
                    match parse_availability(el) {
                        Ok(a) => Some(a),
                        Err(msg) => {
                            let err = stanza_error("modify", "bad-request", Some(&msg), None);
                            self.presence_error(s, el, err);
                            return Ok(());
                        }
                    }
                } else {
                    None
                };
                match to {
                    None => {
                        s.set_presence(avail);
                        Ok(())
                    }
                    Some(t) if t == s.bare => {
                        s.set_presence(avail);
                        Ok(())
                    }
                    Some(t) => s.directed_presence(&t, avail),
                }
            }
            ("subscribe", Some(t)) => s.subscribe(t).await.map(drop),
            ("subscribed", Some(t)) => s.approve(t).await,
            ("unsubscribe", Some(t)) => s.unsubscribe(t).await,
            ("unsubscribed", Some(t)) => s.revoke(t).await,
            ("probe", Some(t)) => s.probe(t),
            ("error", _) => Ok(()),
            _ => Err(RouteError::BadAddress(format!(
                "presence of type {ty} needs a valid 'to'"
            ))),
        };
        if let Err(e) = res {
            self.presence_error(s, el, route_error(&e));
        }
        Ok(())
    }

    fn presence_error(&mut self, s: &Session, el: &Element, err: Element) {
        let reply = Element::new("presence", NS_CLIENT)
            .with_attr("type", "error")
            .with_attr("from", el.attr("to").map(str::to_string))
            .with_attr("to", s.jid.clone())
            .with_attr("id", el.attr("id").map(str::to_string))
            .with_child(err);
        self.out.push(&reply);
    }

    async fn iq(&mut self, s: &Session, el: &Element) -> Result<(), End> {
        let ty = el.attr("type").unwrap_or_default().to_string();
        if ty == "result" || ty == "error" {
            return Ok(()); // answers to our pushes and pings
        }
        let payloads: Vec<&Element> = el.elements().collect();
        if !(ty == "get" || ty == "set") || payloads.len() != 1 || el.attr("id").is_none() {
            let err = stanza_error(
                "modify",
                "bad-request",
                Some("an iq get/set has an id and one payload"),
                None,
            );
            self.out.push(&iq_error(el, err, None));
            return Ok(());
        }
        let p = payloads[0];
        let to = el.attr("to");
        let router = s.router();
        let to_server = to.is_none_or(|t| t.eq_ignore_ascii_case(router.domain()));
        let to_self =
            to.is_some_and(|t| jid::BareJid::new(t).is_ok_and(|j| j.to_string() == s.bare));
        if !to_server && !to_self {
            let err = stanza_error("cancel", "service-unavailable", None, None);
            self.out.push(&iq_error(el, err, to.map(str::to_string)));
            return Ok(());
        }
        let id = el.attr("id").unwrap_or_default().to_string();
        let from = to.map(str::to_string);
        match (p.name.as_str(), p.ns.as_str(), ty.as_str()) {
            ("query", NS_ROSTER, "get") => {
                s.roster_requested();
                let known = p.attr("ver").and_then(|v| v.parse::<u64>().ok());
                let q = router.read(|st| {
                    let roster = st.user(&s.user).map(|u| &u.roster)?;
                    if known == Some(roster.version) {
                        return None; // XEP-0237: nothing changed; pushes follow
                    }
                    let mut q = Element::new("query", NS_ROSTER)
                        .with_attr("ver", roster.version.to_string());
                    for item in roster.items.values() {
                        q.push(roster_item(item));
                    }
                    Some(q)
                });
                self.out.push(&iq_result(&id, from, q));
            }
            ("query", NS_ROSTER, "set") => {
                let items: Vec<&Element> = p.elements().filter(|i| i.name == "item").collect();
                let res = match items.as_slice() {
                    [item] => match item.attr("jid") {
                        None => Err(RouteError::BadAddress("a roster item needs a jid".into())),
                        Some(j) if item.attr("subscription") == Some("remove") => {
                            s.roster_remove(j).await
                        }
                        Some(j) => {
                            let groups = item
                                .elements()
                                .filter(|g| g.name == "group")
                                .map(|g| g.text())
                                .collect();
                            s.roster_set(j, item.attr("name").map(str::to_string), groups)
                                .await
                        }
                    },
                    _ => Err(RouteError::BadAddress(
                        "a roster set has exactly one item".into(),
                    )),
                };
                match res {
                    Ok(()) => self.out.push(&iq_result(&id, from, None)),
                    Err(e) => self.out.push(&iq_error(el, route_error(&e), from)),
                }
            }
            ("ping", NS_PING, "get") => self.out.push(&iq_result(&id, from, None)),
            ("session", NS_SESSION, "set") => self.out.push(&iq_result(&id, from, None)),
            ("query", NS_DISCO_INFO, "get") => {
                let q = if to_self {
                    Element::new("query", NS_DISCO_INFO).with_child(
                        Element::new("identity", NS_DISCO_INFO)
                            .with_attr("category", "account")
                            .with_attr("type", "registered"),
                    )
                } else {
                    server_info(router)
                };
                self.out.push(&iq_result(&id, from, Some(q)));
            }
            ("query", NS_DISCO_ITEMS, "get") => {
                self.out.push(&iq_result(
                    &id,
                    from,
                    Some(Element::new("query", NS_DISCO_ITEMS)),
                ));
            }
            ("query", NS_VERSION, "get") if to_server => {
                let q = Element::new("query", NS_VERSION)
                    .with_child(Element::new("name", NS_VERSION).with_text("presenced"))
                    .with_child(
                        Element::new("version", NS_VERSION).with_text(env!("CARGO_PKG_VERSION")),
                    );
                self.out.push(&iq_result(&id, from, Some(q)));
            }
            ("bind", NS_BIND, _) => {
                let err = stanza_error(
                    "cancel",
                    "not-allowed",
                    Some("the session is already bound"),
                    None,
                );
                self.out.push(&iq_error(el, err, from));
            }
            _ => {
                let err = stanza_error("cancel", "service-unavailable", None, None);
                self.out.push(&iq_error(el, err, from));
            }
        }
        Ok(())
    }
}

fn decode_sasl(text: &str) -> Result<Option<Vec<u8>>, ()> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(None);
    }
    if t == "=" {
        return Ok(Some(Vec::new()));
    }
    B64.decode(t).map(Some).map_err(|_| ())
}

fn parse_availability(el: &Element) -> Result<Availability, String> {
    let show = match el.child_text("show") {
        None => Show::Online,
        Some(s) => Show::parse(s.trim()).ok_or_else(|| format!("unknown show value {s:?}"))?,
    };
    let priority = match el.child_text("priority") {
        None => 0,
        Some(p) => p
            .trim()
            .parse::<i8>()
            .map_err(|_| format!("priority {p:?} is not an integer from -128 to 127"))?,
    };
    Ok(Availability {
        show,
        status: el.child_text("status"),
        priority,
    })
}

fn append_availability(p: &mut Element, a: &Availability) {
    if let Some(sh) = a.show.as_xmpp() {
        p.push(Element::new("show", NS_CLIENT).with_text(sh));
    }
    if let Some(st) = &a.status {
        p.push(Element::new("status", NS_CLIENT).with_text(st.clone()));
    }
    if a.priority != 0 {
        p.push(Element::new("priority", NS_CLIENT).with_text(a.priority.to_string()));
    }
}

fn roster_item(i: &RosterItem) -> Element {
    let mut e = Element::new("item", NS_ROSTER)
        .with_attr("jid", i.jid.clone())
        .with_attr("name", i.name.clone())
        .with_attr("subscription", i.subscription.as_str());
    if i.ask {
        e.set_attr("ask", "subscribe");
    }
    for g in &i.groups {
        e.push(Element::new("group", NS_ROSTER).with_text(g.clone()));
    }
    e
}

pub(crate) fn message_element(m: &Message, domain: &str) -> Element {
    let mut el = Element::new("message", NS_CLIENT)
        .with_attr("from", m.from.clone())
        .with_attr("to", m.to.clone())
        .with_attr("id", m.id.clone());
    if m.kind != MessageKind::Normal {
        el.set_attr("type", m.kind.as_str());
    }
    if let Some(s) = &m.subject {
        el.push(Element::new("subject", NS_CLIENT).with_text(s.clone()));
    }
    if let Some(b) = &m.body {
        el.push(Element::new("body", NS_CLIENT).with_text(b.clone()));
    }
    if let Some(t) = &m.thread {
        el.push(Element::new("thread", NS_CLIENT).with_text(t.clone()));
    }
    if !m.addresses.is_empty() {
        let mut a = Element::new("addresses", NS_ADDRESS);
        for x in &m.addresses {
            let mut e = Element::new("address", NS_ADDRESS)
                .with_attr("type", x.kind.clone())
                .with_attr("jid", x.jid.clone());
            if x.delivered {
                e.set_attr("delivered", "true");
            }
            a.push(e);
        }
        el.push(a);
    }
    if let Some(d) = &m.delay {
        let from = if d.from.is_empty() {
            domain.to_string()
        } else {
            d.from.clone()
        };
        el.push(
            Element::new("delay", NS_DELAY)
                .with_attr("from", from)
                .with_attr("stamp", rfc3339(d.stamp_ms)),
        );
    }
    if m.no_store {
        el.push(Element::new("no-store", NS_HINTS));
        el.push(Element::new("no-permanent-store", NS_HINTS));
    }
    el
}

/// The server's disco#info: identity, features, and the messaging policy (XEP-0128).
fn server_info(router: &presenced_router::Router) -> Element {
    let mut q = Element::new("query", NS_DISCO_INFO).with_child(
        Element::new("identity", NS_DISCO_INFO)
            .with_attr("category", "server")
            .with_attr("type", "im")
            .with_attr("name", "presenced"),
    );
    for f in [
        NS_DISCO_INFO,
        NS_DISCO_ITEMS,
        NS_ROSTER,
        NS_PING,
        NS_VERSION,
        NS_ADDRESS,
        NS_DELAY,
        NS_HINTS,
        "msgoffline",
        "urn:xmpp:features:rosterver",
        "jabber:iq:roster",
    ]
    .iter()
    .collect::<std::collections::BTreeSet<_>>()
    {
        q.push(Element::new("feature", NS_DISCO_INFO).with_attr("var", *f));
    }
    let (history, cut_paste, im, max_bcast) = router.read(|s| {
        let st = s.settings();
        (
            st.allow_history_logging,
            st.allow_cut_paste,
            st.im_enabled,
            st.broadcast_max_recipients,
        )
    });
    let field = |var: &str, v: String| {
        Element::new("field", NS_DATA)
            .with_attr("var", var)
            .with_child(Element::new("value", NS_DATA).with_text(v))
    };
    let b = |v: bool| if v { "1".to_string() } else { "0".to_string() };
    let form = Element::new("x", NS_DATA)
        .with_attr("type", "result")
        .with_child(
            Element::new("field", NS_DATA)
                .with_attr("var", "FORM_TYPE")
                .with_attr("type", "hidden")
                .with_child(Element::new("value", NS_DATA).with_text(NS_POLICY_FORM)),
        )
        .with_child(field("allow_history_logging", b(history)))
        .with_child(field("allow_cut_paste", b(cut_paste)))
        .with_child(field("im_enabled", b(im)))
        .with_child(field("broadcast_max_recipients", max_bcast.to_string()));
    q.push(form);
    q
}

fn iq_result(id: &str, from: Option<String>, payload: Option<Element>) -> Element {
    let mut iq = Element::new("iq", NS_CLIENT)
        .with_attr("type", "result")
        .with_attr("id", id.to_string())
        .with_attr("from", from);
    if let Some(p) = payload {
        iq.push(p);
    }
    iq
}

fn iq_error(req: &Element, err: Element, from: Option<String>) -> Element {
    Element::new("iq", NS_CLIENT)
        .with_attr("type", "error")
        .with_attr("id", req.attr("id").map(str::to_string))
        .with_attr("from", from)
        .with_child(err)
}

/// `<error type=..><condition/><text/>[<app-condition xmlns='urn:presenced:errors'/>]</error>`
fn stanza_error(ty: &str, cond: &str, text: Option<&str>, app: Option<&str>) -> Element {
    let mut e = Element::new("error", NS_CLIENT)
        .with_attr("type", ty)
        .with_child(Element::new(cond, NS_STANZAS));
    if let Some(t) = text {
        e.push(Element::new("text", NS_STANZAS).with_text(t));
    }
    if let Some(a) = app {
        e.push(Element::new(a, NS_ERRORS));
    }
    e
}

fn route_error(e: &RouteError) -> Element {
    let text = e.to_string();
    let t = Some(text.as_str());
    match e {
        RouteError::BadAddress(_) => stanza_error("modify", "jid-malformed", t, None),
        RouteError::ImDisabled => stanza_error("cancel", "not-allowed", t, Some("im_disabled")),
        RouteError::NoSuchUser(_) => stanza_error("cancel", "service-unavailable", None, None),
        RouteError::RemoteDomain(_) => stanza_error("cancel", "remote-server-not-found", t, None),
        RouteError::OfflineRefused(r) => {
            let (ty, cond) = match r {
                Refusal::OfflineQueueFull(..) => ("wait", "resource-constraint"),
                _ => ("cancel", "service-unavailable"),
            };
            stanza_error(ty, cond, t, Some(r.code()))
        }
        RouteError::NotStored(_) => stanza_error("cancel", "service-unavailable", t, None),
        RouteError::TooManyRecipients(..) => {
            stanza_error("modify", "not-acceptable", t, Some("too_many_recipients"))
        }
        RouteError::NoRecipients => stanza_error("modify", "bad-request", t, None),
        RouteError::Refused(r) => {
            let (ty, cond) = match (r, r.class()) {
                (Refusal::ContactListFull(..) | Refusal::WatchersFull(..), _) => {
                    ("cancel", "policy-violation")
                }
                (_, RefusalClass::NotFound) => ("cancel", "item-not-found"),
                (_, RefusalClass::Invalid) => ("modify", "bad-request"),
                (_, RefusalClass::Exists) => ("cancel", "conflict"),
                _ => ("cancel", "not-allowed"),
            };
            stanza_error(ty, cond, t, Some(r.code()))
        }
        RouteError::Unavailable(_) => stanza_error("wait", "internal-server-error", t, None),
        RouteError::NotAllowed(_) => stanza_error("cancel", "not-allowed", t, None),
    }
}

/// `2026-11-24T10:00:00.123Z` from milliseconds since the Unix epoch.
pub(crate) fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // civil_from_days (Howard Hinnant)
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_000_000_123), "2026-11-18T11:06:40.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn refusals_carry_their_reason() {
        let e = RouteError::Refused(Refusal::ContactListFull("a@x".into(), "200".into()));
        let s = route_error(&e).to_stanza();
        assert!(
            s.contains("<policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"),
            "{s}"
        );
        assert!(
            s.contains("<contact_list_full xmlns='urn:presenced:errors'/>"),
            "{s}"
        );
        assert!(s.contains("maximum contact-list size"), "{s}");
    }
}
