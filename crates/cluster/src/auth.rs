//! Who may call a node. Over TLS the listener has already verified the caller's
//! certificate against the cluster CA; these interceptors add what the certificate
//! alone does not settle:
//!
//! - [`NodeGuard`] (Raft, cluster helpers, peer links): the caller must hold a *node*
//!   certificate **and** present the cluster secret — the secret stays as a second
//!   factor, so neither a stolen node key nor a leaked secret is enough on its own.
//! - [`AdminGuard`] (admin API): an operator's (or a node's) certificate, or the secret
//!   over TLS for tools that have no certificate.
//!
//! In the explicit plain-text mode only the secret counts.

use presenced_proto::SECRET_HEADER;
use subtle::ConstantTimeEq;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Client side: add the secret to every request.
#[derive(Clone)]
pub struct AddSecret(MetadataValue<tonic::metadata::Ascii>);

impl AddSecret {
    pub fn new(secret: &str) -> Result<Self, String> {
        secret
            .parse()
            .map(AddSecret)
            .map_err(|_| "the cluster secret must be printable ASCII".to_string())
    }
}

impl Interceptor for AddSecret {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        req.metadata_mut().insert(SECRET_HEADER, self.0.clone());
        Ok(req)
    }
}

/// Server side: the secret (constant-time compare).
#[derive(Clone)]
pub struct CheckSecret(std::sync::Arc<Vec<u8>>);

impl CheckSecret {
    pub fn new(secret: &str) -> Self {
        CheckSecret(std::sync::Arc::new(secret.as_bytes().to_vec()))
    }

    fn check(&self, req: &Request<()>) -> Result<(), Status> {
        let given = req
            .metadata()
            .get(SECRET_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if given.len() == self.0.len() && bool::from(given.ct_eq(&self.0)) {
            Ok(())
        } else {
            metrics::counter!("presenced_rpc_unauthenticated_total").increment(1);
            Err(Status::unauthenticated("wrong or missing cluster secret"))
        }
    }
}

/// Inter-node services: a node certificate (over TLS) and the secret.
#[derive(Clone)]
pub struct NodeGuard(pub(crate) CheckSecret);

impl Interceptor for NodeGuard {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        presenced_tls::require_node(&req)?;
        self.0.check(&req)?;
        Ok(req)
    }
}

/// The admin API: a certificate of this cluster, or else the secret.
#[derive(Clone)]
pub struct AdminGuard(pub(crate) CheckSecret);

impl Interceptor for AdminGuard {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let certified = presenced_tls::peer_info(&req).is_some_and(|i| i.identity.is_some());
        if !certified {
            self.0.check(&req)?;
        }
        Ok(req)
    }
}
