//! The XMPP client-to-server adapter (RFC 6120 streams, RFC 6121 IM and presence).
//!
//! It knows the wire format and nothing of the cluster: every stanza becomes a call on
//! a [`presenced_router::Session`], and every [`presenced_router::Delivery`] becomes a
//! stanza. One task per connection owns the write side and the session; one more task
//! owns the (not cancel-safe) XML reader.

mod c2s;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod guard;
mod lean_tls;
mod sasl;
mod tls;
pub mod xml;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use presenced_router::Router;
use rsasl::prelude::SASLConfig;
use tokio::net::TcpListener;

pub use c2s::{NS_ERRORS, NS_POLICY_FORM};
pub use guard::{connection_cap, fd_reserve, open_file_limit};
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
    /// A write to the client that does not complete within this (the client does not
    /// read its socket) ends the connection.
    pub send_timeout: Duration,
    /// Client connections open at once, on all listeners; 0: as many as the open-file
    /// limit allows after [`fd_reserve`]. Never more than that.
    pub max_connections: usize,
    /// Connections from one address (IPv6: one /64) still negotiating at once.
    pub max_unauthenticated_per_ip: usize,
    /// Failed authentications from one address within `auth_failure_window` before
    /// the address is blocked for `auth_block`.
    pub auth_failures_per_ip: u32,
    /// Failed authentications for one account (from anywhere) within
    /// `auth_failure_window` before, for `auth_block`, the addresses that failed for
    /// it are refused (the account's owner still logs in from elsewhere).
    pub auth_failures_per_account: u32,
    pub auth_failure_window: Duration,
    pub auth_block: Duration,
    /// Password derivations (SASL PLAIN) running at once; 0: half the cores, at least 1.
    pub auth_concurrency: usize,
    /// Derivations waiting for a slot before further ones are refused at once.
    pub auth_queue: usize,
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
            send_timeout: Duration::from_secs(15),
            max_connections: 0,
            max_unauthenticated_per_ip: 100,
            auth_failures_per_ip: 10,
            auth_failures_per_account: 20,
            auth_failure_window: Duration::from_secs(60),
            auth_block: Duration::from_secs(300),
            auth_concurrency: 0,
            auth_queue: 64,
        }
    }
}

pub(crate) struct Shared {
    router: Router,
    cfg: XmppConfig,
    tls: lean_tls::Acceptor,
    sasl: Arc<SASLConfig>,
    guard: Arc<guard::Guard>,
    /// Salt of the made-up keys a PLAIN login of an unknown user is checked against
    /// (so it costs what a wrong password costs).
    decoy_salt: [u8; 16],
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
        let (max_connections, lowered) =
            guard::connection_cap(cfg.max_connections, guard::open_file_limit());
        if let Some(limit) = lowered {
            tracing::warn!(
                configured = cfg.max_connections,
                fd_limit = limit,
                "xmpp.max_connections is more than the open-file limit allows; using {max_connections}"
            );
        }
        tracing::info!(
            max_connections,
            fd_limit = guard::open_file_limit(),
            per_ip_unauthenticated = cfg.max_unauthenticated_per_ip,
            "xmpp connection caps"
        );
        let half_the_cores = std::thread::available_parallelism().map_or(1, |n| n.get() / 2);
        let guard = guard::Guard::new(guard::GuardConfig {
            max_connections,
            max_unauthenticated_per_ip: cfg.max_unauthenticated_per_ip,
            auth_failures_per_ip: cfg.auth_failures_per_ip,
            auth_failures_per_account: cfg.auth_failures_per_account,
            auth_failure_window: cfg.auth_failure_window,
            auth_block: cfg.auth_block,
            auth_concurrency: match cfg.auth_concurrency {
                0 => half_the_cores.max(1),
                n => n,
            },
            auth_queue: cfg.auth_queue,
        });
        let mut decoy_salt = [0u8; 16];
        rand::fill(&mut decoy_salt);
        Ok(Xmpp {
            shared: Arc::new(Shared {
                router,
                cfg,
                tls: acceptor,
                sasl,
                guard,
                decoy_salt,
            }),
            cert_path,
        })
    }

    /// The connection cap in force (after the open-file limit).
    pub fn max_connections(&self) -> usize {
        self.shared.guard.config().max_connections
    }

    /// Accept client connections until the task is dropped. With `direct_tls` the TLS
    /// handshake comes first (XEP-0368), otherwise STARTTLS is offered.
    /// A connection over a cap is closed at once, before any TLS or XML work (on the
    /// STARTTLS listener with a stream error, written if the socket takes it without
    /// waiting).
    pub async fn serve(&self, listener: TcpListener, direct_tls: bool) {
        loop {
            let (tcp, peer) = guard::accept_with_backoff(|| listener.accept()).await;
            let slot = match self.shared.guard.admit(peer.ip()) {
                Ok(s) => s,
                Err(why) => {
                    why.count();
                    tracing::debug!(%peer, reason = why.as_str(), "xmpp connection refused");
                    if !direct_tls {
                        let _ = tcp
                            .try_write(c2s::refusal(self.shared.router.domain(), why).as_bytes());
                    }
                    drop(tcp);
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let shared = self.shared.clone();
            tokio::spawn(c2s::handle(tcp, peer, shared, direct_tls, slot));
        }
    }
}
