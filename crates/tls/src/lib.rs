//! Mutual TLS on every connection between the nodes of a cluster and from its
//! operators.
//!
//! - [`pki`]: the cluster CA and the certificates it issues (files).
//! - [`Material`]: the trust bundle and this process's certificate, reloadable in place.
//! - [`Transport`]: how a process listens ([`Transport::incoming`]) and dials
//!   ([`Transport::lazy`], [`Transport::connect`]) — TLS 1.3 with certificates of the
//!   cluster CA both ways, or plain text when the operator explicitly asked for it.
//! - [`require_node`], [`check_claim`]: what a server checks of the caller once the
//!   handshake has verified its certificate.
//!
//! A node's identity is its certificate's name `n<ID>.node.presenced.invalid`
//! ([`Identity`]): a dialler states the node it wants and refuses any other; a server
//! refuses a request whose claimed node id differs from the certificate's.

mod client;
mod identity;
mod io;
mod material;
pub mod pki;
mod server;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

pub use client::{ClientConn, Connector, Expect, client_config, set_outbound_source};
pub use identity::{Identity, check_operator_name};
pub use io::MaybeTls;
pub use material::{Loaded, Material, Paths};
pub use server::{ClientAuth, Conn, PeerInfo, incoming, refusal_reason, server_config};

/// How a process's cluster connections are secured.
#[derive(Clone, Debug)]
pub enum Transport {
    /// No TLS: only behind an explicit setting, warned about at every start.
    Plaintext,
    /// Mutual TLS with the cluster CA's certificates.
    Mutual(Arc<Material>),
}

impl Transport {
    pub fn material(&self) -> Option<&Arc<Material>> {
        match self {
            Transport::Plaintext => None,
            Transport::Mutual(m) => Some(m),
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Mutual(_))
    }

    /// The connections a listener accepts, handshakes done (see [`incoming`]).
    pub fn incoming(
        &self,
        listener: TcpListener,
        auth: ClientAuth,
        name: &'static str,
    ) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<Conn>> {
        let cfg = self.material().map(|m| server_config(m, auth));
        incoming(listener, cfg, name)
    }

    /// A channel that connects on first use (and reconnects) to `ep`, which must be
    /// node `expect` of this cluster.
    pub fn lazy(&self, ep: &Endpoint, expect: Expect) -> Channel {
        ep.connect_with_connector_lazy(Connector::new(self.material(), expect))
    }

    /// Connect now.
    pub async fn connect(
        &self,
        ep: &Endpoint,
        expect: Expect,
    ) -> Result<Channel, tonic::transport::Error> {
        ep.connect_with_connector(Connector::new(self.material(), expect))
            .await
    }
}

/// The endpoint for `host:port` (the connector does the TLS: the scheme stays http).
pub fn endpoint(addr: &str) -> Result<Endpoint, String> {
    Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("bad address {addr:?}: {e}"))
}

/// The connection's caller, as the listener verified it.
pub fn peer_info<T>(req: &Request<T>) -> Option<&PeerInfo> {
    req.extensions().get::<PeerInfo>()
}

fn deny(reason: &'static str, msg: String, info: Option<&PeerInfo>) -> Status {
    let remote = info.and_then(|i| i.remote);
    tracing::warn!(?remote, reason, "refused: {msg}");
    metrics::counter!("presenced_tls_refused_total", "listener" => "rpc", "reason" => reason)
        .increment(1);
    Status::permission_denied(msg)
}

/// For the inter-node services: over TLS the caller must hold a node certificate.
/// Returns the caller's node id (`None` in plain text, where only the secret counts).
pub fn require_node<T>(req: &Request<T>) -> Result<Option<u64>, Status> {
    let info = peer_info(req);
    match info {
        None => Ok(None),
        Some(i) if !i.tls => Ok(None),
        Some(PeerInfo {
            identity: Some(Identity::Node(n)),
            ..
        }) => Ok(Some(*n)),
        Some(i) => Err(deny(
            "not_a_node",
            format!(
                "only a node of this cluster may call this service (caller: {})",
                i.identity
                    .as_ref()
                    .map_or("no certificate".into(), |id| id.to_string())
            ),
            info,
        )),
    }
}

/// A request that says it comes from node `claimed` must carry that node's
/// certificate: a valid certificate of node 2 cannot speak for node 3.
/// `info` is the request's [`peer_info`], taken before the body is consumed.
pub fn check_claim(info: Option<&PeerInfo>, claimed: u64) -> Result<(), Status> {
    match info.and_then(|i| i.identity.as_ref()) {
        Some(Identity::Node(n)) if *n != claimed => Err(deny(
            "claim_mismatch",
            format!("the certificate is node {n}'s but the request claims node {claimed}"),
            info,
        )),
        _ => Ok(()),
    }
}

/// Reload `material` when SIGHUP arrives or when its files change (checked every
/// `every`). A bad new set is refused and logged; the one in use stays.
pub fn spawn_reloader(material: Arc<Material>, every: Duration) {
    publish(&material);
    tokio::spawn(async move {
        let mut warned: Option<std::time::Instant> = None;
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = signal(SignalKind::hangup()).ok();
        loop {
            let by_signal = tokio::select! {
                _ = tokio::time::sleep(every) => false,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
            };
            if !by_signal && !material.changed_on_disk() {
                let left = publish(&material);
                // Say so once a day from 30 days before the certificate expires.
                if left.is_some_and(|s| s < 30 * 86_400)
                    && warned.is_none_or(|t| t.elapsed() > Duration::from_secs(86_400))
                {
                    warned = Some(std::time::Instant::now());
                    tracing::warn!(
                        days_left = left.unwrap_or(0) / 86_400,
                        "this node's cluster certificate expires soon: issue a new one (docs/tls.md)"
                    );
                }
                continue;
            }
            match material.reload() {
                Ok(()) => {
                    let cur = material.current();
                    tracing::info!(
                        by_signal,
                        cas = cur.trusted_cas,
                        not_after = cur.not_after,
                        "cluster TLS material reloaded"
                    );
                    metrics::counter!("presenced_tls_reloads_total", "outcome" => "ok")
                        .increment(1);
                }
                Err(e) => {
                    tracing::error!(
                        by_signal,
                        "cluster TLS material not reloaded, keeping the current one: {e}"
                    );
                    metrics::counter!("presenced_tls_reloads_total", "outcome" => "refused")
                        .increment(1);
                }
            }
            publish(&material);
        }
    });
}

/// Gauges an operator alerts on: seconds until this node's certificate expires, and
/// the size of the trust bundle (2 while a CA is being rolled). Returns the seconds.
fn publish(m: &Material) -> Option<i64> {
    let cur = m.current();
    metrics::gauge!("presenced_tls_trusted_cas").set(cur.trusted_cas as f64);
    let t = cur.not_after?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    metrics::gauge!("presenced_tls_cert_expires_in_seconds").set((t - now) as f64);
    Some(t - now)
}
