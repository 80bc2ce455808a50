//! The cluster secret on every inter-node and admin call.

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

/// Server side: refuse any request without the right secret (constant-time compare).
#[derive(Clone)]
pub struct CheckSecret(std::sync::Arc<Vec<u8>>);

impl CheckSecret {
    pub fn new(secret: &str) -> Self {
        CheckSecret(std::sync::Arc::new(secret.as_bytes().to_vec()))
    }
}

impl Interceptor for CheckSecret {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let given = req
            .metadata()
            .get(SECRET_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if given.len() == self.0.len() && bool::from(given.ct_eq(&self.0)) {
            Ok(req)
        } else {
            metrics::counter!("presenced_rpc_unauthenticated_total").increment(1);
            Err(Status::unauthenticated("wrong or missing cluster secret"))
        }
    }
}
