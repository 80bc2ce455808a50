//! Generated gRPC code for the node-to-node services and the admin API, plus the
//! metadata key that carries the cluster secret.

/// The metadata entry every inter-node and admin call carries.
pub const SECRET_HEADER: &str = "x-presenced-secret";

/// Largest gRPC message a node accepts (snapshot chunks are far smaller).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

#[allow(clippy::all, missing_docs)]
pub mod raft {
    tonic::include_proto!("presenced.raft.v1");
}

#[allow(clippy::all, missing_docs)]
pub mod admin {
    tonic::include_proto!("presenced.admin.v1");
}

#[allow(clippy::all, missing_docs)]
pub mod router {
    tonic::include_proto!("presenced.router.v1");
}
