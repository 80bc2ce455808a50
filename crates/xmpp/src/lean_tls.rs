//! TLS for client connections on rustls's unbuffered API, holding buffers only while
//! bytes wait.
//!
//! rustls's buffered connection (what `tokio-rustls` drives) keeps a 4 KiB receive
//! buffer for as long as the connection lives, which was the largest single cost of an
//! idle session. Here each buffer exists only while it holds something: ciphertext
//! read from the socket until its records are complete, plaintext until the reader
//! takes it, ciphertext until the socket takes it. An idle session holds none.
//!
//! The stream is one object for both directions (the session splits it): a write that
//! has to process incoming records (a client's key update) keeps any plaintext they
//! carry for the reader and wakes it.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};

use rustls::server::{ServerConfig, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes asked of the socket per read, into a buffer per thread: only what does not
/// make a whole record yet stays with the connection.
const READ_CHUNK: usize = 16 * 1024;
/// Ciphertext held while its records are incomplete. A record is at most about
/// 18 KiB and rustls joins handshake messages up to 64 KiB; past this the peer is
/// not speaking TLS as it should.
const MAX_INCOMING: usize = 96 * 1024;
/// Plaintext taken per write call (a short write, as a socket makes).
const MAX_WRITE: usize = 64 * 1024;
/// Ciphertext the socket has not taken yet beyond which a write waits.
const MAX_OUTGOING: usize = 128 * 1024;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}

/// Accepts TLS connections with one server configuration.
#[derive(Clone)]
pub struct Acceptor(Arc<ServerConfig>);

impl Acceptor {
    pub fn new(cfg: Arc<ServerConfig>) -> Acceptor {
        Acceptor(cfg)
    }

    /// Run the server side of the handshake on `io`.
    pub async fn accept<IO: AsyncRead + AsyncWrite + Unpin>(
        &self,
        io: IO,
    ) -> io::Result<TlsStream<IO>> {
        let conn = UnbufferedServerConnection::new(self.0.clone()).map_err(io::Error::other)?;
        let mut s = TlsStream {
            io,
            conn,
            incoming: Vec::new(),
            plain: Vec::new(),
            plain_off: 0,
            outgoing: Vec::new(),
            out_off: 0,
            peer_closed: false,
            close_sent: false,
            read_waker: None,
        };
        std::future::poll_fn(|cx| s.poll_handshake(cx)).await?;
        Ok(s)
    }
}

/// A server-side TLS stream after its handshake.
pub struct TlsStream<IO> {
    io: IO,
    conn: UnbufferedServerConnection,
    /// Ciphertext received and not yet made into records.
    incoming: Vec<u8>,
    /// Plaintext not yet read, from `plain_off`.
    plain: Vec<u8>,
    plain_off: usize,
    /// Ciphertext not yet written, from `out_off`.
    outgoing: Vec<u8>,
    out_off: usize,
    /// The peer sent close_notify, or its side of the socket ended.
    peer_closed: bool,
    close_sent: bool,
    /// The reader waiting on the socket, woken by a write that found plaintext.
    read_waker: Option<Waker>,
}

/// What the caller of [`TlsStream::process`] wants done once the records are handled.
#[derive(Clone, Copy)]
enum Op<'a> {
    Nothing,
    Write(&'a [u8]),
    Close,
}

/// Where processing stopped.
enum Step {
    /// The handshake needs more bytes from the peer.
    NeedInput,
    /// Traffic keys are in place (and `Op::Write` took this many bytes).
    Ready(usize),
    /// Both sides sent close_notify.
    Closed,
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Grow `buf` by what `fill` asks for until it fits, keeping only what it wrote.
fn append_with<E>(
    buf: &mut Vec<u8>,
    first_guess: usize,
    mut fill: impl FnMut(&mut [u8]) -> Result<usize, E>,
    needs: impl Fn(&E) -> Option<usize>,
) -> Result<(), E> {
    let start = buf.len();
    let mut room = first_guess;
    loop {
        buf.resize(start + room, 0);
        match fill(&mut buf[start..]) {
            Ok(n) => {
                buf.truncate(start + n);
                return Ok(());
            }
            Err(e) => match needs(&e) {
                Some(required) if required > room => room = required,
                _ => {
                    buf.truncate(start);
                    return Err(e);
                }
            },
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> TlsStream<IO> {
    /// Handle every record received so far, queue what rustls has to send, then do
    /// `op` once the traffic keys allow it.
    fn process(&mut self, op: Op<'_>) -> io::Result<Step> {
        loop {
            let UnbufferedStatus { discard, state } =
                self.conn.process_tls_records(&mut self.incoming);
            let mut step = None;
            let state = match state {
                Ok(s) => s,
                Err(e) => {
                    self.queue_alert();
                    return Err(tls_error(e));
                }
            };
            match state {
                ConnectionState::ReadTraffic(mut r) => {
                    while let Some(rec) = r.next_record() {
                        self.plain
                            .extend_from_slice(rec.map_err(tls_error)?.payload);
                    }
                }
                ConnectionState::EncodeTlsData(mut e) => {
                    append_with(
                        &mut self.outgoing,
                        1024,
                        |b| e.encode(b),
                        |err| match err {
                            EncodeError::InsufficientSize(InsufficientSizeError {
                                required_size,
                            }) => Some(*required_size),
                            _ => None,
                        },
                    )
                    .map_err(io::Error::other)?;
                }
                // In order with everything else in `outgoing`: it goes with the next flush.
                ConnectionState::TransmitTlsData(t) => t.done(),
                ConnectionState::BlockedHandshake => step = Some(Step::NeedInput),
                ConnectionState::WriteTraffic(mut w) => {
                    let needs = |err: &EncryptError| match err {
                        EncryptError::InsufficientSize(InsufficientSizeError { required_size }) => {
                            Some(*required_size)
                        }
                        _ => None,
                    };
                    step = Some(match op {
                        Op::Nothing => Step::Ready(0),
                        Op::Write(data) => {
                            let take = data.len().min(MAX_WRITE);
                            // Per record of 16 KiB: header, tag, content type, padding.
                            let guess = take + 64 * (take / 16384 + 1);
                            append_with(
                                &mut self.outgoing,
                                guess,
                                |b| w.encrypt(&data[..take], b),
                                needs,
                            )
                            .map_err(io::Error::other)?;
                            Step::Ready(take)
                        }
                        Op::Close => {
                            if !self.close_sent {
                                append_with(
                                    &mut self.outgoing,
                                    64,
                                    |b| w.queue_close_notify(b),
                                    needs,
                                )
                                .map_err(io::Error::other)?;
                                self.close_sent = true;
                            }
                            Step::Ready(0)
                        }
                    });
                }
                ConnectionState::PeerClosed => self.peer_closed = true,
                ConnectionState::Closed => step = Some(Step::Closed),
                // Early data is not enabled; anything newer is not expected here.
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "unexpected TLS connection state",
                    ));
                }
            }
            if discard > 0 {
                let left = self.incoming.len() - discard;
                self.incoming.copy_within(discard.., 0);
                self.incoming.truncate(left);
                if left == 0 {
                    self.incoming = Vec::new();
                }
            }
            if let Some(s) = step {
                return Ok(s);
            }
        }
    }

    /// After an error, the fatal alert rustls queued for the peer (RFC 8446 §6.2), if
    /// it hands one out: rustls keeps it in its send queue, and one more call with no
    /// input returns it before anything else. Best effort: nothing else is processed.
    fn queue_alert(&mut self) {
        let outgoing = &mut self.outgoing;
        let conn = &mut self.conn;
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if let ConnectionState::EncodeTlsData(mut e) = conn.process_tls_records(&mut []).state?
            {
                let mut buf = [0u8; 64];
                if let Ok(n) = e.encode(&mut buf) {
                    outgoing.extend_from_slice(&buf[..n]);
                }
            }
            Ok::<(), rustls::Error>(())
        }));
    }

    /// Write out the queued ciphertext; its buffer is released once empty.
    fn poll_flush_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_off < self.outgoing.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.outgoing[self.out_off..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_off += n;
        }
        self.outgoing = Vec::new();
        self.out_off = 0;
        Poll::Ready(Ok(()))
    }

    /// Read more ciphertext; `Ok(0)` at the end of the socket.
    fn poll_read_in(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.incoming.len() >= MAX_INCOMING {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "TLS data larger than any record",
            )));
        }
        SCRATCH.with_borrow_mut(|scratch| {
            let mut rb = ReadBuf::new(&mut scratch[..]);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut rb))?;
            let got = rb.filled();
            self.incoming.extend_from_slice(got);
            Poll::Ready(Ok(got.len()))
        })
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            // On an error the connection is done: its alert (queued by `process`) goes
            // out if the socket takes it at once, then the socket is closed.
            let step = match self.process(Op::Nothing) {
                Ok(s) => s,
                Err(e) => {
                    let _ = self.poll_flush_out(cx);
                    return Poll::Ready(Err(e));
                }
            };
            match step {
                Step::Ready(_) => return self.poll_flush_out(cx),
                Step::Closed => return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into())),
                Step::NeedInput => {
                    ready!(self.poll_flush_out(cx))?;
                    if self.peer_closed || ready!(self.poll_read_in(cx))? == 0 {
                        return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                    }
                }
            }
        }
    }

    fn take_plain(&mut self, buf: &mut ReadBuf<'_>) {
        let n = (self.plain.len() - self.plain_off).min(buf.remaining());
        buf.put_slice(&self.plain[self.plain_off..self.plain_off + n]);
        self.plain_off += n;
        if self.plain_off == self.plain.len() {
            self.plain = Vec::new();
            self.plain_off = 0;
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.plain_off < this.plain.len() {
                this.take_plain(buf);
                return Poll::Ready(Ok(()));
            }
            if this.peer_closed {
                return Poll::Ready(Ok(()));
            }
            let writer_pending = this.out_off < this.outgoing.len();
            if let Step::Closed = this.process(Op::Nothing)? {
                return Poll::Ready(Ok(()));
            }
            if this.plain_off < this.plain.len() || this.peer_closed {
                continue;
            }
            // What rustls queued while reading (a key update's answer) goes out now.
            // Ciphertext a write left is the writer's to flush: the socket keeps one
            // waker per direction, and the reader taking it would strand the writer.
            if !writer_pending
                && this.out_off < this.outgoing.len()
                && let Poll::Ready(Err(e)) = this.poll_flush_out(cx)
            {
                return Poll::Ready(Err(e));
            }
            this.read_waker = Some(cx.waker().clone());
            if ready!(this.poll_read_in(cx))? == 0 {
                if !this.incoming.is_empty() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the connection ended inside a TLS record",
                    )));
                }
                this.peer_closed = true;
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.outgoing.len() - this.out_off >= MAX_OUTGOING {
            ready!(this.poll_flush_out(cx))?;
        }
        let had = this.plain.len();
        let n = match this.process(Op::Write(data))? {
            Step::Ready(n) => n,
            Step::Closed => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            Step::NeedInput => return Poll::Ready(Err(io::Error::other("TLS handshake not done"))),
        };
        if this.plain.len() > had
            && let Some(w) = this.read_waker.take()
        {
            w.wake();
        }
        // Sent now if the socket takes it; the rest waits for the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_flush_out(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_flush_out(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_sent {
            match this.process(Op::Close) {
                Ok(_) => {}
                // Nothing to say goodbye on: the socket is closed anyway.
                Err(_) => this.close_sent = true,
            }
        }
        ready!(this.poll_flush_out(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
