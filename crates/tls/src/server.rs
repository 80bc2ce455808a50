//! Accepting: each connection's handshake runs in a task of its own, under a time
//! limit and a cap on handshakes in progress, so a peer that stalls or floods delays
//! nobody else. A refused handshake is logged and counted; an accepted connection
//! carries a [`PeerInfo`] that tonic puts into every request's extensions.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

use crate::Identity;
use crate::material::{Material, OwnCert, PeerClientVerifier};

/// A TLS handshake must finish within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this many handshakes in progress per listener; more connections wait in
/// the kernel's backlog.
pub const MAX_HANDSHAKES: usize = 256;

/// Whether a listener demands a client certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// Inter-node listeners: no certificate, no connection.
    Required,
    /// The admin listener: an operator may present the cluster secret instead.
    Optional,
}

/// Who is at the other end of an accepted connection.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub remote: Option<SocketAddr>,
    /// The verified certificate's identity; `None` without TLS or without a client
    /// certificate.
    pub identity: Option<Identity>,
    pub tls: bool,
}

/// An accepted connection, plain or TLS, with who is at the other end.
pub struct Conn {
    pub io: crate::io::MaybeTls<tokio_rustls::server::TlsStream<TcpStream>>,
    pub info: PeerInfo,
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, b)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        b: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, b)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The rustls server configuration of a listener: TLS 1.3, h2, our certificate, peers
/// verified against the current bundle. No session resumption, so every connection
/// is verified against the trust in force when it is made.
pub fn server_config(material: &Arc<Material>, auth: ClientAuth) -> Arc<ServerConfig> {
    let verifier = Arc::new(PeerClientVerifier {
        material: material.clone(),
        mandatory: auth == ClientAuth::Required,
    });
    let mut cfg = ServerConfig::builder_with_provider(material.provider().clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(OwnCert(material.clone())));
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    cfg.send_tls13_tickets = 0;
    Arc::new(cfg)
}

/// A short, stable label for a refused handshake (the metric's `reason`).
pub fn refusal_reason(e: &io::Error) -> &'static str {
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return if e.kind() == io::ErrorKind::TimedOut {
            "timeout"
        } else {
            "io"
        };
    };
    use rustls::{CertificateError as C, Error as E};
    match tls {
        E::NoCertificatesPresented => "no_certificate",
        E::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => "unknown_ca",
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => "expired",
        E::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => "not_yet_valid",
        E::InvalidCertificate(C::Other(_)) => "bad_identity",
        E::InvalidCertificate(_) => "bad_certificate",
        E::AlertReceived(_) => "alert_from_peer",
        E::InappropriateMessage { .. } | E::InvalidMessage(_) => "not_tls",
        _ => "tls_error",
    }
}

/// The connections `listener` accepts, as tonic's `serve_with_incoming` wants them.
/// `tls: None` is the plain-text mode. `name` labels logs and metrics.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    name: &'static str,
) -> ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = tls.map(TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => p.expect("never closed"),
                _ = tx.closed() => return,
            };
            let (tcp, remote) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(listener = name, "accept failed: {e}");
                        metrics::counter!("presenced_accept_errors_total", "listener" => name).increment(1);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = tx.closed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let Some(acceptor) = acceptor.clone() else {
                let info = PeerInfo {
                    remote: Some(remote),
                    identity: None,
                    tls: false,
                };
                let io = crate::io::MaybeTls::Plain(tcp);
                if tx.send(Ok(Conn { io, info })).await.is_err() {
                    return;
                }
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let hs = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                let stream = match hs {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => return refused(name, remote, &e),
                    Err(_) => {
                        return refused(name, remote, &io::Error::from(io::ErrorKind::TimedOut));
                    }
                };
                let identity = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| Identity::from_cert(c).ok());
                let info = PeerInfo {
                    remote: Some(remote),
                    identity,
                    tls: true,
                };
                let io = crate::io::MaybeTls::Tls(Box::new(stream));
                let _ = tx.send(Ok(Conn { io, info })).await;
            });
        }
    });
    ReceiverStream::new(rx)
}

fn refused(listener: &'static str, remote: SocketAddr, e: &io::Error) {
    let reason = refusal_reason(e);
    tracing::warn!(listener, %remote, reason, "TLS handshake refused: {e}");
    metrics::counter!("presenced_tls_refused_total", "listener" => listener, "reason" => reason)
        .increment(1);
}
