//! Connecting: a tonic connector that dials TCP and, unless the cluster runs in plain
//! text, completes a TLS 1.3 handshake that proves the server is the node expected
//! (and presents this process's own certificate when it has one).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::Identity;
use crate::material::{Material, NodeServerVerifier, OwnCert};

/// Which server a connection must reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Exactly this node (Raft, peer links, forwarding: the id is known).
    Node(u64),
    /// Any node of the cluster (an operator dialling an address).
    AnyNode,
}

/// The rustls client configuration for connections to `expect`.
pub fn client_config(material: &Arc<Material>, expect: Expect) -> Arc<ClientConfig> {
    let verifier = Arc::new(NodeServerVerifier {
        material: material.clone(),
        expect: match expect {
            Expect::Node(n) => Some(n),
            Expect::AnyNode => None,
        },
    });
    let mut cfg = ClientConfig::builder_with_provider(material.provider().clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(OwnCert(material.clone())));
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    cfg.resumption = rustls::client::Resumption::disabled();
    Arc::new(cfg)
}

/// A connection this process opened.
pub type ClientConn = crate::io::MaybeTls<tokio_rustls::client::TlsStream<TcpStream>>;

/// The tonic connector (`Endpoint::connect_with_connector`). Refusals are counted
/// every time but logged at most once per 10 s per address, since callers retry every
/// few hundred ms.
#[derive(Clone)]
pub struct Connector {
    tls: Option<Arc<ClientConfig>>,
    expect: Expect,
}

/// The source address of this process's outgoing connections, when set: a node
/// dials its peers from its own cluster address, so a firewall (or a partition made
/// by a chaos test) can tell the nodes apart even when they share a host.
static SOURCE: std::sync::OnceLock<std::net::IpAddr> = std::sync::OnceLock::new();

/// Set the source address for outgoing connections (once, at start).
pub fn set_outbound_source(ip: std::net::IpAddr) {
    let _ = SOURCE.set(ip);
}

async fn dial(addr: &str) -> io::Result<TcpStream> {
    let Some(src) = SOURCE.get() else {
        return TcpStream::connect(addr).await;
    };
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{addr}: no address"));
    for to in tokio::net::lookup_host(addr).await? {
        let sock = if to.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        if to.is_ipv4() == src.is_ipv4() {
            sock.bind(std::net::SocketAddr::new(*src, 0))?;
        }
        match sock.connect(to).await {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// When a refusal was last logged, per address.
static LAST_WARN: Mutex<Option<std::collections::HashMap<String, Instant>>> = Mutex::new(None);

impl Connector {
    pub fn new(material: Option<&Arc<Material>>, expect: Expect) -> Connector {
        Connector {
            tls: material.map(|m| client_config(m, expect)),
            expect,
        }
    }

    fn server_name(&self) -> ServerName<'static> {
        // The verifier checks the identity itself; the name only has to be valid.
        let n = match self.expect {
            Expect::Node(n) => n,
            Expect::AnyNode => 1,
        };
        ServerName::try_from(Identity::Node(n).dns_name()).expect("a valid DNS name")
    }

    fn warn(&self, addr: &str, e: &io::Error) {
        let reason = crate::server::refusal_reason(e);
        metrics::counter!("presenced_tls_refused_total", "listener" => "outbound", "reason" => reason)
            .increment(1);
        let mut last = LAST_WARN.lock();
        let last = last.get_or_insert_with(Default::default);
        if last
            .get(addr)
            .is_none_or(|t| t.elapsed() > Duration::from_secs(10))
        {
            last.insert(addr.to_string(), Instant::now());
            tracing::warn!(%addr, expect = ?self.expect, reason, "TLS handshake with a node failed: {e}");
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<http::Uri> for Connector {
    type Response = TokioIo<ClientConn>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let me = self.clone();
        Box::pin(async move {
            let auth = uri.authority().ok_or("the address has no host:port")?;
            let addr = auth.as_str().to_string();
            let tcp = dial(&addr).await?;
            let _ = tcp.set_nodelay(true);
            let Some(cfg) = me.tls.clone() else {
                return Ok(TokioIo::new(ClientConn::Plain(tcp)));
            };
            match TlsConnector::from(cfg).connect(me.server_name(), tcp).await {
                Ok(s) => Ok(TokioIo::new(ClientConn::Tls(Box::new(s)))),
                Err(e) => {
                    me.warn(&addr, &e);
                    Err(e.into())
                }
            }
        })
    }
}
