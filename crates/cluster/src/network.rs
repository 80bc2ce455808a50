//! openraft's network over tonic: each Raft RPC carries the serialised openraft
//! message as opaque bytes. Appends (and heartbeats) go on one long-lived stream per
//! peer, `AppendStream`, one request and its answer at a time; votes, pre-votes and
//! snapshot chunks are unary calls, and so are appends to a node of an earlier release.

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
use presenced_tls::{Expect, Transport};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::auth::AddSecret;
use crate::{Node, NodeId, TypeConfig};

pub type Client = RaftClient<InterceptedService<Channel, AddSecret>>;

/// A lazily connecting channel to node `id` at `addr`: over TLS it must prove to be
/// that node of this cluster.
pub fn channel(transport: &Transport, id: NodeId, addr: &str) -> Result<Channel, String> {
    let ep = presenced_tls::endpoint(addr)?
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5));
    Ok(transport.lazy(&ep, Expect::Node(id)))
}

#[derive(Clone)]
pub struct Network {
    pub secret: AddSecret,
    pub transport: Transport,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Self::Network {
        let client = channel(&self.transport, target, &node.addr).map(|ch| {
            RaftClient::with_interceptor(ch, self.secret.clone())
                .max_decoding_message_size(presenced_proto::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(presenced_proto::MAX_MESSAGE_BYTES)
        });
        PeerClient {
            target,
            client,
            append_limit: presenced_proto::APPEND_BYTES,
            append_in_flight: false,
            stream: None,
            unary_only: false,
        }
    }
}

/// The smallest byte budget an append shrinks to (one entry always goes).
const MIN_APPEND_BYTES: usize = 16 * 1024;

/// Encode `rpc` with the leading entries that fit in `limit` bytes (at least one), in
/// one pass: the same JSON as `AppendEntriesRequest`'s own encoding, built part by
/// part so the entries that do not fit are never encoded. Returns the bytes and how
/// many entries they carry.
fn encode_append(
    rpc: &AppendEntriesRequest<TypeConfig>,
    limit: usize,
) -> Result<(Vec<u8>, usize), serde_json::Error> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"vote\":");
    serde_json::to_writer(&mut out, &rpc.vote)?;
    out.extend_from_slice(b",\"prev_log_id\":");
    serde_json::to_writer(&mut out, &rpc.prev_log_id)?;
    out.extend_from_slice(b",\"leader_commit\":");
    serde_json::to_writer(&mut out, &rpc.leader_commit)?;
    out.extend_from_slice(b",\"entries\":[");
    let mut sent = 0;
    for e in &rpc.entries {
        if sent > 0 && out.len() >= limit {
            break;
        }
        let mark = out.len();
        if sent > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, e)?;
        if sent > 0 && out.len() > limit {
            out.truncate(mark);
            break;
        }
        sent += 1;
    }
    out.extend_from_slice(b"]}");
    Ok((out, sent))
}

/// The receiving half of a channel as a stream (a streaming call's request or reply
/// body).
pub(crate) fn receiver_stream<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) })
}

/// The length of `v`'s wire encoding (JSON), without building it.
pub(crate) use presenced_model::encoded_len;

pub struct PeerClient {
    target: NodeId,
    client: Result<Client, String>,
    /// Byte budget of the next append (adapts to how fast the peer answers).
    append_limit: usize,
    /// An append was sent and has not returned (openraft drops it at its deadline).
    append_in_flight: bool,
    /// The open append stream (`None`: open one at the next append).
    stream: Option<AppendStream>,
    /// The peer answered `Unimplemented` to `AppendStream` (an earlier release).
    unary_only: bool,
}

/// The sending half and the answers of an `AppendStream` call.
struct AppendStream {
    tx: tokio::sync::mpsc::Sender<RaftBytes>,
    rx: tonic::Streaming<RaftBytes>,
    /// A request is out and its answer not read: a call dropped by openraft at its
    /// deadline leaves the stream so, and it is not used again (the late answer would
    /// be taken for the next request's).
    busy: bool,
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
        let reply = fut.map_err(|s| self.unreachable(kind, s))?;
        self.answer(reply.into_inner())
    }

    fn unreachable<E: std::error::Error>(
        &self,
        kind: &'static str,
        s: tonic::Status,
    ) -> RPCError<NodeId, Node, E> {
        metrics::counter!("presenced_raft_rpc_errors_total", "rpc" => kind).increment(1);
        if s.code() == tonic::Code::Unauthenticated {
            tracing::error!(target_node = self.target, "peer refused our cluster secret");
        }
        RPCError::Unreachable(Unreachable::new(&s))
    }

    // openraft's own error type, as its network trait returns it.
    #[allow(clippy::result_large_err)]
    fn answer<Resp, E>(&self, reply: RaftBytes) -> RpcResult<Resp, E>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let r: Result<Resp, E> = crate::format::unwire(reply.format, &reply.data)
            .map_err(|e| RPCError::Network(NetworkError::new(&std::io::Error::other(e))))?;
        r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    /// Send one append on the peer's append stream (opened here when there is none) and
    /// read its answer. Any failure closes the stream; the next append opens another.
    async fn send_streamed(
        &mut self,
        data: Vec<u8>,
        opt: &RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, RaftError<NodeId>> {
        if self.stream.as_ref().is_some_and(|s| s.busy) {
            self.stream = None;
        }
        if self.stream.is_none() {
            match self.open_stream(opt).await {
                Ok(s) => self.stream = Some(s),
                Err(s) if s.code() == tonic::Code::Unimplemented => {
                    tracing::info!(
                        target_node = self.target,
                        "the peer has no append stream (an earlier release): appends as unary calls"
                    );
                    self.unary_only = true;
                    return self.send("append", data, opt).await;
                }
                Err(s) => return Err(self.unreachable("append", s)),
            }
        }
        let s = self.stream.as_mut().expect("opened above");
        s.busy = true;
        let msg = RaftBytes {
            data,
            format: crate::format::WIRE,
        };
        let exchange = async {
            s.tx.send(msg)
                .await
                .map_err(|_| tonic::Status::unavailable("the append stream closed"))?;
            match s.rx.message().await {
                Ok(Some(reply)) => Ok(reply),
                Ok(None) => Err(tonic::Status::unavailable("the append stream ended")),
                Err(e) => Err(e),
            }
        };
        let answer = tokio::time::timeout(opt.hard_ttl(), exchange)
            .await
            .unwrap_or_else(|_| {
                Err(tonic::Status::deadline_exceeded(
                    "append not answered in time",
                ))
            });
        match answer {
            Ok(reply) => {
                s.busy = false;
                self.answer(reply)
            }
            Err(st) => {
                self.stream = None;
                Err(self.unreachable("append", st))
            }
        }
    }

    async fn open_stream(&mut self, opt: &RPCOption) -> Result<AppendStream, tonic::Status> {
        let client = match &mut self.client {
            Ok(c) => c,
            Err(e) => return Err(tonic::Status::unavailable(e.clone())),
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<RaftBytes>(1);
        let outbound = receiver_stream(rx);
        // No grpc-timeout on the call: the stream lives as long as the connection.
        let call = client.append_stream(tonic::Request::new(outbound));
        let replies = tokio::time::timeout(opt.hard_ttl(), call)
            .await
            .map_err(|_| {
                tonic::Status::deadline_exceeded("the append stream did not open in time")
            })??;
        metrics::counter!("presenced_raft_append_streams_opened_total").increment(1);
        Ok(AppendStream {
            tx,
            rx: replies.into_inner(),
            busy: false,
        })
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, RaftError<NodeId>> {
        // Bounded by bytes, not only by entries: encode the entries that fit and
        // report a partial success; openraft sends the rest next. The receiver
        // commits only up to what it was sent.
        if self.append_in_flight {
            // The previous append did not finish within openraft's deadline (one
            // heartbeat): send less next time, so a slow link or disk still advances.
            self.append_limit = (self.append_limit / 2).max(MIN_APPEND_BYTES);
            metrics::counter!("presenced_raft_append_shrunk_total").increment(1);
        }
        let (data, sent) = encode_append(&rpc, self.append_limit)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let all = sent == rpc.entries.len();
        if !all {
            metrics::counter!("presenced_raft_append_split_total").increment(1);
        }
        self.append_in_flight = true;
        let res = if self.unary_only {
            self.send("append", data, &option).await
        } else {
            self.send_streamed(data, &option).await
        };
        self.append_in_flight = false;
        if res.is_ok() {
            self.append_limit = (self.append_limit * 2).min(presenced_proto::APPEND_BYTES);
        }
        match res? {
            AppendEntriesResponse::Success if !all => Ok(AppendEntriesResponse::PartialSuccess(
                Some(rpc.entries[sent - 1].log_id),
            )),
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
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};
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

    fn rpc(n: u64, bytes: usize) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), 0)),
            entries: (1..=n).map(|i| entry(i, bytes)).collect(),
            leader_commit: None,
        }
    }

    #[test]
    fn appends_are_cut_by_bytes_and_decode_as_the_request() {
        let r = rpc(10, 1000);
        let (all, n) = encode_append(&r, 1 << 20).unwrap();
        assert_eq!(n, 10);
        let back: AppendEntriesRequest<TypeConfig> = serde_json::from_slice(&all).unwrap();
        assert_eq!(back.entries, r.entries);
        assert_eq!((back.vote, back.prev_log_id), (r.vote, r.prev_log_id));
        let one = serde_json::to_vec(&r.entries[0]).unwrap().len() + 1;
        let limit = 200 + 3 * one;
        let (part, n) = encode_append(&r, limit).unwrap();
        assert_eq!(n, 3);
        assert!(part.len() <= limit);
        let back: AppendEntriesRequest<TypeConfig> = serde_json::from_slice(&part).unwrap();
        assert_eq!(back.entries, r.entries[..3]);
        // A single entry larger than the budget still goes, alone.
        let (_, n) = encode_append(&r, 10).unwrap();
        assert_eq!(n, 1);
        let (_, n) = encode_append(&rpc(0, 0), 10).unwrap();
        assert_eq!(n, 0);
    }
}
