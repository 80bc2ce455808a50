//! The XMPP client-to-server adapter (RFC 6120 streams, RFC 6121 IM and presence).
//!
//! It knows the wire format and nothing of the cluster: every stanza becomes a call on
//! a [`presenced_router::Session`], and every [`presenced_router::Delivery`] becomes a
//! stanza. One task per connection owns the write side and the session; one more task
//! owns the (not cancel-safe) XML reader.

mod c2s;
mod sasl;
mod tls;
pub mod xml;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use presenced_router::Router;
use rsasl::prelude::SASLConfig;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub use c2s::{NS_ERRORS, NS_POLICY_FORM};
pub use tls::CertSource;

/// Adapter settings (from the node's `[xmpp]` configuration).
#[derive(Debug, Clone)]
pub struct XmppConfig {
    /// Largest stanza accepted, in bytes (RFC 6120 §13.12 asks for at least 10,000).
    pub max_stanza_bytes: u64,
    /// Deepest element nesting accepted inside a stanza.
    pub max_depth: usize,
    /// Refuse SASL before STARTTLS (PLAIN is never offered without TLS anyway).
    pub require_tls: bool,
    /// Stream negotiation (TLS + SASL + bind) must finish within this.
    pub auth_timeout: Duration,
    /// Ping a client that was silent this long ...
    pub ping_after: Duration,
    /// ... and close the stream of one silent this long.
    pub idle_timeout: Duration,
    /// Failed SASL attempts before the stream is closed.
    pub max_auth_attempts: u32,
}

impl Default for XmppConfig {
    fn default() -> Self {
        XmppConfig {
            max_stanza_bytes: 64 * 1024,
            max_depth: 32,
            require_tls: true,
            auth_timeout: Duration::from_secs(30),
            ping_after: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(300),
            max_auth_attempts: 3,
        }
    }
}

pub(crate) struct Shared {
    router: Router,
    cfg: XmppConfig,
    tls: TlsAcceptor,
    sasl: Arc<SASLConfig>,
}

impl Shared {
    fn limits(&self) -> xml::Limits {
        xml::Limits {
            max_stanza_bytes: self.cfg.max_stanza_bytes,
            max_depth: self.cfg.max_depth,
        }
    }
}

/// A ready XMPP service: serve it on one or more listeners.
#[derive(Clone)]
pub struct Xmpp {
    shared: Arc<Shared>,
    /// The certificate clients are offered.
    pub cert_path: PathBuf,
}

impl Xmpp {
    pub fn new(router: Router, cfg: XmppConfig, certs: &CertSource) -> anyhow::Result<Xmpp> {
        let (acceptor, cert_path) = tls::acceptor(certs, router.domain())?;
        let sasl = sasl::config(router.clone())?;
        Ok(Xmpp {
            shared: Arc::new(Shared {
                router,
                cfg,
                tls: acceptor,
                sasl,
            }),
            cert_path,
        })
    }

    /// Accept client connections until the task is dropped. With `direct_tls` the TLS
    /// handshake comes first (XEP-0368), otherwise STARTTLS is offered.
    pub async fn serve(&self, listener: TcpListener, direct_tls: bool) {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("xmpp accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let shared = self.shared.clone();
            tokio::spawn(c2s::handle(tcp, peer, shared, direct_tls));
        }
    }
}
