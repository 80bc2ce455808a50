//! Generated gRPC code for the node-to-node services and the admin API, plus the
//! metadata key that carries the cluster secret.

/// The metadata entry every inter-node and admin call carries.
pub const SECRET_HEADER: &str = "x-presenced-secret";

/// Largest gRPC message a node accepts or sends, on every server and client. Every
/// legal message is far smaller: Raft appends are cut at [`APPEND_BYTES`], snapshot
/// chunks are 1 MiB, a single command is at most [`MAX_COMMAND_BYTES`].
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// An AppendEntries RPC carries entries up to about this many encoded bytes (at least
/// one entry); the rest follow in the next RPC. openraft gives an append one
/// heartbeat interval to complete, fsync on the follower included, so this stays
/// small.
pub const APPEND_BYTES: usize = 1024 * 1024;

/// Proposals are grouped into one log entry up to about this many encoded bytes, and
/// bulk commands larger than [`MAX_COMMAND_BYTES`] are split into parts of this size.
pub const BATCH_BYTES: usize = 256 * 1024;

/// The largest single command proposed as one log entry. Larger bulk commands are
/// split; any other command that large is refused.
pub const MAX_COMMAND_BYTES: usize = 512 * 1024;

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
