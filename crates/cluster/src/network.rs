//! openraft's network over tonic: each Raft RPC is one unary call carrying the
//! serialised openraft message as opaque bytes.

use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use presenced_proto::raft::RaftBytes;
use presenced_proto::raft::raft_client::RaftClient;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::auth::AddSecret;
use crate::{Node, NodeId, TypeConfig};

pub type Client = RaftClient<InterceptedService<Channel, AddSecret>>;

/// A lazily connecting channel to a peer's gRPC address.
pub fn channel(addr: &str) -> Result<Channel, String> {
    let ep = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("bad peer address {addr:?}: {e}"))?
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5));
    Ok(ep.connect_lazy())
}

#[derive(Clone)]
pub struct Network {
    pub secret: AddSecret,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Self::Network {
        let client = channel(&node.addr).map(|ch| {
            RaftClient::with_interceptor(ch, self.secret.clone())
                .max_decoding_message_size(presenced_proto::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(presenced_proto::MAX_MESSAGE_BYTES)
        });
        PeerClient { target, client }
    }
}

/// How many leading entries fit in `limit` encoded bytes: at least one, and fewer
/// than all (the caller knows all of them do not fit).
fn fitting_prefix(entries: &[openraft::Entry<TypeConfig>], limit: usize) -> usize {
    let mut total = 0usize;
    for (i, e) in entries.iter().enumerate() {
        total += encoded_len(e) + 1;
        if total > limit {
            return i.max(1);
        }
    }
    entries.len().saturating_sub(1).max(1)
}

/// The length of `v`'s wire encoding, without building it.
pub(crate) fn encoded_len<T: Serialize>(v: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

pub struct PeerClient {
    target: NodeId,
    client: Result<Client, String>,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, Node, E>>;

impl PeerClient {
    async fn call<Req, Resp, E>(
        &mut self,
        kind: &'static str,
        req: &Req,
        opt: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let data =
            crate::format::wire(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.send(kind, data, opt).await
    }

    async fn send<Resp, E>(
        &mut self,
        kind: &'static str,
        data: Vec<u8>,
        opt: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let client = match &mut self.client {
            Ok(c) => c,
            Err(e) => {
                return Err(RPCError::Unreachable(Unreachable::new(
                    &std::io::Error::other(e.clone()),
                )));
            }
        };
        let mut request = tonic::Request::new(RaftBytes {
            data,
            format: crate::format::WIRE,
        });
        request.set_timeout(opt.hard_ttl());
        let fut = match kind {
            "append" => client.append_entries(request).await,
            "vote" => client.vote(request).await,
            _ => client.install_snapshot(request).await,
        };
        let reply = fut.map_err(|s| {
            metrics::counter!("presenced_raft_rpc_errors_total", "rpc" => kind).increment(1);
            if s.code() == tonic::Code::Unauthenticated {
                tracing::error!(target_node = self.target, "peer refused our cluster secret");
            }
            RPCError::Unreachable(Unreachable::new(&s))
        })?;
        let reply = reply.into_inner();
        let r: Result<Resp, E> = crate::format::unwire(reply.format, &reply.data)
            .map_err(|e| RPCError::Network(NetworkError::new(&std::io::Error::other(e))))?;
        r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, RaftError<NodeId>> {
        // Bounded by bytes, not only by entries: when the whole request is too large,
        // send the prefix that fits and report a partial success; openraft sends the
        // rest next. The receiver commits only up to what it was sent.
        let limit = presenced_proto::APPEND_BYTES;
        let data =
            crate::format::wire(&rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if data.len() <= limit || rpc.entries.len() <= 1 {
            return self.send("append", data, &option).await;
        }
        drop(data);
        let keep = fitting_prefix(&rpc.entries, limit);
        let last = rpc.entries[keep - 1].log_id;
        rpc.entries.truncate(keep);
        metrics::counter!("presenced_raft_append_split_total").increment(1);
        match self.call("append", &rpc, &option).await? {
            AppendEntriesResponse::Success => Ok(AppendEntriesResponse::PartialSuccess(Some(last))),
            other => Ok(other),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        self.call("snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, RaftError<NodeId>> {
        self.call("vote", &rpc, &option).await
    }

    fn backoff(&self) -> openraft::network::Backoff {
        // Retry an unreachable peer every 200 ms: quick to notice a restarted node.
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
    use presenced_model::Command;

    fn entry(i: u64, bytes: usize) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), i),
            payload: EntryPayload::Normal(Command::SetSetting {
                key: "x".into(),
                value: "a".repeat(bytes),
            }),
        }
    }

    #[test]
    fn appends_are_cut_by_bytes() {
        let es: Vec<_> = (1..=10).map(|i| entry(i, 1000)).collect();
        let one = encoded_len(&es[0]);
        assert!(one > 1000);
        assert_eq!(fitting_prefix(&es, 3 * one + 5), 3);
        // A single entry larger than the limit still goes out alone.
        assert_eq!(fitting_prefix(&es, 10), 1);
        assert_eq!(
            encoded_len(&es[0]),
            serde_json::to_vec(&es[0]).unwrap().len()
        );
    }
}
