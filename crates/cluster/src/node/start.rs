//! Opening the store, starting Raft, serving the peer gRPC services and shutting down.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use openraft::{Raft, SnapshotPolicy};
use presenced_proto::raft::cluster_server::ClusterServer;
use presenced_proto::raft::raft_server::RaftServer;
use presenced_storage::{SledStore, Store};
use tokio::sync::broadcast;
use tonic::service::interceptor::InterceptedService;

use crate::auth::{AddSecret, AdminGuard, CheckSecret, NodeGuard};
use crate::compaction::LogSizes;
use crate::machine::StateMachine;
use crate::network::Network;
use crate::service::{ClusterService, RaftService};
use crate::snapshot::Files;
use crate::store::LogStore;

use super::{ClusterConfig, ClusterError, ClusterNode};

impl ClusterNode {
    /// Open this node's store and start Raft. The node takes part in the cluster as soon
    /// as its gRPC server (see [`ClusterNode::grpc`]) runs.
    pub async fn start(cfg: ClusterConfig) -> Result<Arc<Self>, ClusterError> {
        let store: Arc<dyn Store> = Arc::new(
            SledStore::open(&cfg.data_dir, cfg.cache_bytes).map_err(|e| {
                let advice = match e {
                    presenced_storage::StoreError::Corrupt(_) => {
                        "; the data is damaged: wipe this node's data dir and re-add the node \
                         (docs/scale.md)"
                    }
                    _ => "",
                };
                ClusterError::Internal(format!(
                    "cannot open data dir {}: {e}{advice}",
                    cfg.data_dir.display()
                ))
            })?,
        );
        let (events, _) = broadcast::channel(cfg.raft.event_buffer.max(1));
        let committed = Arc::new(AtomicU64::new(0));
        let applied = Arc::new(AtomicU64::new(0));
        let files = Files::open(&cfg.data_dir).map_err(|e| {
            ClusterError::Internal(format!(
                "cannot open the snapshot folder in {}: {e}",
                cfg.data_dir.display()
            ))
        })?;
        let sizes = Arc::new(LogSizes::new(store.log_sizes().map_err(|e| {
            ClusterError::Internal(format!(
                "cannot read the log in {}: {e}",
                cfg.data_dir.display()
            ))
        })?));
        let (sm, state) = StateMachine::open(
            store.clone(),
            files,
            sizes.clone(),
            events.clone(),
            applied.clone(),
        )
        .map_err(|e| {
            ClusterError::Internal(format!(
                "cannot load state from {}: {e}",
                cfg.data_dir.display()
            ))
        })?;
        if let Some(d) = state.read().unwrap_or_else(|p| p.into_inner()).domain()
            && d != cfg.domain
        {
            return Err(ClusterError::Invalid(format!(
                "data dir {} belongs to domain {d}, but the config says {}",
                cfg.data_dir.display(),
                cfg.domain
            )));
        }
        let last_log = super::election::LastLog::default();
        let log = LogStore::new(
            store.clone(),
            committed.clone(),
            sizes.clone(),
            last_log.clone(),
        );
        let t = &cfg.raft;
        let config = openraft::Config {
            cluster_name: format!("presenced-{}", cfg.domain),
            heartbeat_interval: t.heartbeat_ms,
            election_timeout_min: t.election_min_ms,
            election_timeout_max: t.election_max_ms,
            install_snapshot_timeout: 10_000,
            max_payload_entries: 512,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(t.snapshot_every),
            max_in_snapshot_log_to_keep: t.keep_logs,
            snapshot_max_chunk_size: 1024 * 1024,
            ..Default::default()
        }
        .validate()
        .map_err(|e| ClusterError::Invalid(format!("raft settings: {e}")))?;
        let secret = AddSecret::new(&cfg.secret).map_err(ClusterError::Invalid)?;
        let raft = Raft::new(
            cfg.node_id,
            Arc::new(config),
            Network {
                secret: secret.clone(),
                transport: cfg.transport.clone(),
            },
            log,
            sm,
        )
        .await
        .map_err(|e| ClusterError::Internal(format!("raft start: {e}")))?;
        crate::compaction::spawn(raft.clone(), sizes, t.snapshot_log_bytes, t.keep_log_bytes);
        // Raft::new has read the log's state: this is the log this node starts with,
        // and the term it may lead again at once (`reads.rs`).
        let started_with = super::reads::StartedWith {
            last_index: last_log
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .map_or(0, |l| l.index),
            leader_term: restored_leader_term(store.as_ref(), cfg.node_id),
        };
        let node = Arc::new_cyclic(|me| ClusterNode {
            batcher: crate::batcher::Batcher::start(me.clone()),
            id: cfg.node_id,
            domain: cfg.domain.clone(),
            advertise: cfg.advertise.clone(),
            raft,
            state,
            events,
            committed,
            applied,
            check: CheckSecret::new(&cfg.secret),
            secret,
            peers: Mutex::new(HashMap::new()),
            forwarding: Default::default(),
            transport: cfg.transport.clone(),
            membership_lock: tokio::sync::Mutex::new(()),
            timeout: cfg.timeout,
            store,
            last_log,
            started_with,
            election: super::election::ElectionTiming::new(t),
            elections_started: AtomicU64::new(0),
        });
        node.spawn_metrics();
        node.spawn_election_driver();
        Ok(node)
    }

    /// The gRPC services peers call (Raft transport and cluster helpers), guarded by the
    /// cluster secret.
    pub fn grpc(self: &Arc<Self>) -> tonic::transport::server::Router {
        let max = presenced_proto::MAX_MESSAGE_BYTES;
        let raft = InterceptedService::new(
            RaftServer::new(RaftService(self.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
            self.node_guard(),
        );
        let cluster = InterceptedService::new(
            ClusterServer::new(ClusterService(self.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
            self.node_guard(),
        );
        tonic::transport::Server::builder()
            .add_service(raft)
            .add_service(cluster)
    }

    /// The guard of the inter-node services (the router's peer links use it too).
    pub fn node_guard(&self) -> NodeGuard {
        NodeGuard(self.check.clone())
    }

    /// The guard of the admin API.
    pub fn admin_guard(&self) -> AdminGuard {
        AdminGuard(self.check.clone())
    }

    /// How this node's cluster connections are secured.
    pub fn transport(&self) -> &presenced_tls::Transport {
        &self.transport
    }

    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
        let _ = self.store.flush();
    }
}

/// The term of this node's own committed vote, if it led when it stopped: openraft 0.9
/// then restores it as that term's leader at once.
fn restored_leader_term(store: &dyn Store, me: crate::NodeId) -> Option<u64> {
    let bytes = store.get_meta("vote").ok().flatten()?;
    let vote: openraft::Vote<crate::NodeId> = crate::format::load(&bytes).ok()?;
    (vote.is_committed() && vote.leader_id().voted_for() == Some(me))
        .then(|| vote.leader_id().get_term())
}
