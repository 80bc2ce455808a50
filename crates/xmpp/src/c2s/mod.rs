//! One client connection: stream negotiation (STARTTLS, SASL, resource binding), then
//! the session loop translating stanzas to router calls and deliveries to stanzas.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use presenced_router::queue::{self, Receiver};
use presenced_router::{
    Address, Availability, Delivery, Message, MessageKind, PresenceState, RouteError, Session,
};
use presenced_router::{Refusal, RefusalClass, RosterItem};
use rsasl::mechname::Mechname;
use rsasl::prelude::SASLServer;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tracing::Instrument;

use crate::guard::{self, Refused, Slot};
use crate::xml::{Element, Frame, NS_CLIENT, StreamError, StreamReader, XmlError, escape_into};
use crate::{Shared, sasl};

mod addr;
pub(crate) mod auth;
mod bind;
mod disco;
mod errors;
mod hot;
mod iq;
mod message;
mod ns;
mod ping;
mod presence;
mod roster;
mod session;
mod sm;
mod starttls;
mod stream;
mod version;

use errors::*;
use iq::{Feature, IqRoute, Scope, push_extensions};
use ns::*;
pub use ns::{NS_ERRORS, NS_POLICY_FORM};

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
    Error(StreamError, String),
    /// The same with an application-specific condition element (§4.9.4), as XML.
    ErrorWith(StreamError, String, String),
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
    /// A flush that takes longer (the client does not read) fails.
    send_timeout: Duration,
    /// Stanzas pushed so far (mod 2^32): XEP-0198 counts from it.
    stanzas: u32,
}

impl Out {
    fn push(&mut self, el: &Element) {
        el.write_to(&mut self.buf, NS_CLIENT);
        self.stanzas = self.stanzas.wrapping_add(1);
        hot::STANZAS_OUT.increment(1);
    }

    /// A top-level element that is not a stanza (XEP-0198's), not counted.
    fn push_nonza(&mut self, el: &Element) {
        el.write_to(&mut self.buf, NS_CLIENT);
    }

    fn raw(&mut self, s: &str) {
        self.buf.push_str(s);
    }

    /// Write what was collected. A client that does not take it within the send
    /// timeout is given up on (`TimedOut`): the session must not wait for it for ever,
    /// nor collect more for it meanwhile.
    async fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        // Boxed: the timer is large, and an idle session's task should not carry it.
        let send_timeout = self.send_timeout;
        match Box::pin(tokio::time::timeout(send_timeout, self.write_buffered())).await {
            Ok(r) => r,
            Err(_) => {
                guard::closed("send_timeout");
                tracing::info!(
                    pending = self.buf.len(),
                    "the client did not read for {send_timeout:?}: closing"
                );
                Err(std::io::ErrorKind::TimedOut.into())
            }
        }
    }

    /// Write what was collected, however long the client takes.
    async fn write_buffered(&mut self) -> std::io::Result<()> {
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

/// What a connection refused at accept is sent (if its socket takes it at once): our
/// stream header and a stream error (RFC 6120 §4.9.1.3).
pub(crate) fn refusal(domain: &str, why: Refused) -> String {
    let (cond, text) = match why {
        Refused::MaxConnections => ("resource-constraint", "too many connections"),
        _ => ("policy-violation", "too many connections from your address"),
    };
    let mut s = String::from(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' from='",
    );
    escape_into(&mut s, domain);
    s.push_str("' version='1.0'>");
    stream_error_into(&mut s, cond, text, "");
    s.push_str("</stream:stream>");
    s
}

/// `<stream:error>` with a condition (RFC 6120 §4.9.3), its text, and an optional
/// application-specific condition element (§4.9.4, as XML).
fn stream_error_into(s: &mut String, cond: &str, text: &str, app: &str) {
    s.push_str("<stream:error><");
    s.push_str(cond);
    s.push_str(" xmlns='");
    s.push_str(NS_STREAMS_ERR);
    s.push_str("'/><text xmlns='");
    s.push_str(NS_STREAMS_ERR);
    s.push_str("'>");
    escape_into(s, text);
    s.push_str("</text>");
    s.push_str(app);
    s.push_str("</stream:error>");
}

pub(crate) async fn handle(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    direct_tls: bool,
    slot: Slot,
) {
    let span = tracing::info_span!("xmpp", %peer, jid = tracing::field::Empty);
    async move {
        // One deadline for the whole negotiation (TLS, SASL, bind), however the bytes
        // trickle in: a client sending a byte a second gets no more time than a silent one.
        let deadline = tokio::time::Instant::now() + shared.cfg.auth_timeout;
        metrics::gauge!("presenced_xmpp_connections").increment(1.0);
        let io: BoxIo = if direct_tls {
            let acc = &shared.tls;
            // Boxed (as below): the handshake state is large and short-lived; an idle
            // session's task should hold only what the session needs.
            match tokio::time::timeout_at(deadline, Box::pin(acc.accept(tcp))).await {
                Ok(Ok(t)) => Box::new(t),
                Ok(Err(e)) => {
                    tracing::debug!("TLS handshake failed: {e}");
                    metrics::gauge!("presenced_xmpp_connections").decrement(1.0);
                    return;
                }
                Err(_) => {
                    guard::closed("auth_timeout");
                    metrics::gauge!("presenced_xmpp_connections").decrement(1.0);
                    return;
                }
            }
        } else {
            Box::new(tcp)
        };
        Box::pin(run(io, direct_tls, &shared, peer, slot, deadline)).await;
        metrics::gauge!("presenced_xmpp_connections").decrement(1.0);
    }
    .instrument(span)
    .await
}

async fn run(
    io: BoxIo,
    tls: bool,
    shared: &Arc<Shared>,
    peer: SocketAddr,
    slot: Slot,
    deadline: tokio::time::Instant,
) {
    let (r, w) = tokio::io::split(io);
    let mut conn = Conn {
        shared: shared.clone(),
        reader: Some(Box::new(StreamReader::new(r, shared.limits()))),
        out: Out {
            w,
            buf: String::new(),
            send_timeout: shared.cfg.send_timeout,
            stanzas: 0,
        },
        tls,
        user: None,
        header_sent: false,
        auth_failures: 0,
        peer,
        slot,
        sm: None,
        handled: None,
        taken: Vec::new(),
    };
    // Boxed: negotiation state (TLS handshake, SASL) is large and is freed once the
    // session runs, so an idle session does not carry it.
    let negotiated = tokio::time::timeout_at(deadline, Box::pin(conn.negotiate())).await;
    let end = match negotiated {
        Err(_) => {
            guard::closed("auth_timeout");
            End::Error(
                StreamError::ConnectionTimeout,
                "authentication took too long".into(),
            )
        }
        Ok(Err(end)) => end,
        Ok(Ok((session, rx))) => {
            tracing::Span::current().record("jid", conn.full_jid(&session).as_str());
            conn.session_loop(session, rx).await
        }
    };
    Box::pin(conn.finish(end)).await;
}

struct Conn {
    shared: Arc<Shared>,
    /// Boxed: the reader moves to its own task once the session is bound, and the
    /// connection's state should not keep room for it.
    reader: Option<Box<Reader>>,
    out: Out,
    tls: bool,
    user: Option<String>,
    header_sent: bool,
    auth_failures: u32,
    peer: SocketAddr,
    /// This connection's hold on the connection caps.
    slot: Slot,
    /// Stream management, once the client enabled it (boxed: most sessions do not).
    sm: Option<Box<sm::Sm>>,
    /// For the message being handled: held until it is ([`sm`]).
    handled: Option<presenced_router::Handled>,
    /// Receipts of messages in the write being collected, by stanza number: done
    /// once the write reaches the client (and, with SM, the client acknowledged it).
    taken: Vec<(u32, presenced_router::Receipt)>,
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
                    return Err(End::Error(
                        StreamError::BadFormat,
                        "unexpected stream header".into(),
                    ));
                }
            }
        }
    }
}
