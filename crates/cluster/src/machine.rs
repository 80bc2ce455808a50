//! openraft's state machine: the replicated state in memory, persisted in snapshot
//! files.
//!
//! - The state machine lives in memory; an apply writes nothing to disk. What is
//!   durable is the latest snapshot file plus the log after it: a node that restarts
//!   loads the snapshot and Raft applies the log since (the log is purged only behind
//!   a snapshot, `compaction.rs`). Compaction takes a snapshot once the log since the
//!   last one passes `snapshot_log_bytes`, which bounds that replay.
//! - A snapshot is every state record, streamed from the in-memory state into a file
//!   on the state-machine task (so it is consistent with `apply`, and no second copy
//!   of the state is held); it is sent in chunks from that file, and one received is
//!   adopted as the current file and loaded (see `snapshot.rs`).
//! - The previous release wrote the state's records into the store after every
//!   apply. At the first start they are written into a snapshot file at their applied
//!   marker and cleared from the store, leaving a marker that says so.

#![allow(clippy::result_large_err)]

use std::io::{BufReader, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageIOError,
    StoredMembership,
};
use presenced_model::{Event, Outcome, Reply, State};
use presenced_storage::Store;
use tokio::io::AsyncWriteExt;
use tokio::sync::broadcast;

use crate::compaction::LogSizes;
use crate::snapshot::{Files, Reader};
use crate::store::{SResult, blocking, io_msg};
use crate::{Node, NodeId, TypeConfig};

/// The last applied log id and membership: a snapshot's, or (the previous release's
/// layout) stored beside the state records.
#[derive(serde::Serialize, serde::Deserialize, Default, Clone, Debug)]
struct Applied {
    log_id: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Node>,
}

pub struct StateMachine {
    state: Arc<RwLock<State>>,
    applied: Applied,
    events: broadcast::Sender<Event>,
    applied_index: Arc<AtomicU64>,
    files: Arc<Files>,
    sizes: Arc<LogSizes>,
    /// The file a snapshot is being received into.
    incoming: Option<PathBuf>,
}

/// Load the state from the store's records, streaming.
fn load_state(store: &dyn Store) -> Result<State, String> {
    let mut failed = None;
    let records = store.sm_records().map_while(|r| match r {
        Ok(kv) => Some(kv),
        Err(e) => {
            failed = Some(e.to_string());
            None
        }
    });
    let state = State::load(records).map_err(|e| e.to_string());
    match failed {
        Some(e) => Err(e),
        None => state,
    }
}

/// The applied marker the store keeps once its records moved into a snapshot file.
const MOVED_TO_FILE: &[u8] = b"moved to snapshots/current.snap";

/// Load the state from a snapshot file, streaming.
fn load_file(file: std::fs::File) -> Result<State, String> {
    let (_, reader) = Reader::open(BufReader::with_capacity(1 << 20, file))?;
    let mut failed = None;
    let records = reader.map_while(|r| match r {
        Ok(kv) => Some(kv),
        Err(e) => {
            failed = Some(e);
            None
        }
    });
    let state = State::load(records).map_err(|e| e.to_string());
    match failed {
        Some(e) => Err(e),
        None => state,
    }
}

/// The durable state: the current snapshot file, or (before the first snapshot, and in
/// the previous release's layout) the store's records. Records found in the store
/// are moved into a snapshot file, then cleared from it.
fn open_durable(store: &dyn Store, files: &Files) -> Result<(State, Applied), String> {
    let snapshot_err = |e: String| format!("the snapshot file snapshots/current.snap: {e}");
    if let Some((meta, file)) = files.open_current().map_err(snapshot_err)? {
        let state = load_file(file).map_err(snapshot_err)?;
        let applied = Applied {
            log_id: meta.last_log_id,
            membership: meta.last_membership,
        };
        return Ok((state, applied));
    }
    let applied: Applied = match store.sm_applied().map_err(|e| e.to_string())? {
        Some(b) if b == MOVED_TO_FILE => {
            return Err(
                "the state was moved to snapshots/current.snap, which is missing".to_string(),
            );
        }
        Some(b) => crate::format::load(&b).map_err(|e| format!("applied marker: {e}"))?,
        None => Applied::default(),
    };
    let state = load_state(store)?;
    if applied.log_id.is_some() {
        let meta = SnapshotMeta {
            last_log_id: applied.log_id,
            last_membership: applied.membership.clone(),
            snapshot_id: snapshot_id(&applied),
        };
        let records = state.record_iter().map(Ok);
        files
            .write(&meta, records)
            .map_err(|e| format!("moving the state records to a snapshot file: {e}"))?;
        store
            .sm_replace(&mut std::iter::empty(), MOVED_TO_FILE)
            .map_err(|e| format!("clearing the moved state records: {e}"))?;
        tracing::info!(
            id = %meta.snapshot_id,
            "moved the previous release's state records to a snapshot file"
        );
    }
    Ok((state, applied))
}

impl StateMachine {
    /// Open the state machine: the durable state and its applied marker.
    /// The returned state is shared with readers on this node.
    pub fn open(
        store: Arc<dyn Store>,
        files: Files,
        sizes: Arc<LogSizes>,
        events: broadcast::Sender<Event>,
        applied_index: Arc<AtomicU64>,
    ) -> Result<(Self, Arc<RwLock<State>>), String> {
        // An older release kept its snapshot inside the store: move it out.
        if !files.has_current()
            && let Some(blob) = store.legacy_snapshot().map_err(|e| e.to_string())?
        {
            files
                .put_blob(&blob)
                .map_err(|e| format!("moving the snapshot to a file: {e}"))?;
            store.clear_legacy_snapshot().map_err(|e| e.to_string())?;
            tracing::info!("moved the previous release's snapshot to a file");
        }
        let (mut state, applied) = open_durable(store.as_ref(), &files)?;
        state.stop_tracking_changes();
        let state = Arc::new(RwLock::new(state));
        applied_index.store(applied.log_id.map_or(0, |l| l.index), Ordering::Relaxed);
        if let Some((meta, _)) = files.open_current()? {
            sizes.snapshot_at(meta.last_log_id.map(|l| l.index));
        }
        Ok((
            StateMachine {
                state: state.clone(),
                applied,
                events,
                applied_index,
                files: Arc::new(files),
                sizes,
                incoming: None,
            },
            state,
        ))
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }
}

fn snapshot_id(applied: &Applied) -> String {
    match &applied.log_id {
        Some(l) => format!("{}-{}-{}", l.leader_id.term, l.leader_id.node_id, l.index),
        None => "empty".to_string(),
    }
}

/// Holds a snapshot already written by the state machine (see `get_snapshot_builder`).
pub struct SnapshotBuilder {
    written: Result<(SnapshotMeta<NodeId, Node>, u64, u64), String>,
    files: Arc<Files>,
    sizes: Arc<LogSizes>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> SResult<Snapshot<TypeConfig>> {
        let (meta, bytes, ms) = self
            .written
            .clone()
            .map_err(|e| StorageIOError::write_snapshot(None, &io_msg(e)))?;
        let (_, file) = self.files.open_current().ok().flatten().ok_or_else(|| {
            StorageIOError::read_snapshot(
                Some(meta.signature()),
                &io_msg("the snapshot just written is gone".into()),
            )
        })?;
        self.sizes.snapshot_at(meta.last_log_id.map(|l| l.index));
        metrics::counter!("presenced_raft_snapshots_built_total").increment(1);
        metrics::gauge!("presenced_raft_snapshot_bytes").set(bytes as f64);
        tracing::info!(id = %meta.snapshot_id, bytes, ms, "snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> SResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, Node>)> {
        Ok((self.applied.log_id, self.applied.membership.clone()))
    }
    async fn apply<I>(&mut self, entries: I) -> SResult<Vec<Outcome>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let t = Instant::now();
        let mut replies = Vec::new();
        let mut events = Vec::new();
        {
            let lock = self.state.clone();
            let mut state = lock.write().unwrap_or_else(|p| p.into_inner());
            for ent in entries {
                self.applied.log_id = Some(ent.log_id);
                match ent.payload {
                    EntryPayload::Blank => replies.push(Ok(Reply::Done)),
                    EntryPayload::Normal(cmd) => {
                        let span = tracing::debug_span!(
                            "apply",
                            index = ent.log_id.index,
                            op = cmd.name()
                        );
                        let _g = span.enter();
                        let (out, ev) = state.apply(&cmd);
                        if let Err(r) = &out {
                            tracing::debug!(refused = %r, "command refused");
                        }
                        events.extend(ev);
                        replies.push(out);
                    }
                    EntryPayload::Membership(m) => {
                        self.applied.membership = StoredMembership::new(Some(ent.log_id), m);
                        replies.push(Ok(Reply::Done));
                    }
                }
            }
        }
        // Nothing to write: the log holds what was applied, until a snapshot does.
        let last = self.applied.log_id;
        self.applied_index
            .store(last.map_or(0, |l| l.index), Ordering::Relaxed);
        metrics::histogram!("presenced_raft_apply_seconds").record(t.elapsed().as_secs_f64());
        metrics::counter!("presenced_raft_applied_entries_total").increment(replies.len() as u64);
        for e in events {
            // No subscribers is fine: nobody is interested yet.
            let _ = self.events.send(e);
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // Written here, between applies, so the records are consistent with the applied
        // marker; streamed from the state to the file, so no copy of the state is held.
        // Applies wait meanwhile (about a second per million records); reads do not.
        let meta = SnapshotMeta {
            last_log_id: self.applied.log_id,
            last_membership: self.applied.membership.clone(),
            snapshot_id: snapshot_id(&self.applied),
        };
        let (state, files) = (self.state.clone(), self.files.clone());
        let t = Instant::now();
        let m = meta.clone();
        let written = blocking(move || {
            let state = state.read().unwrap_or_else(|p| p.into_inner());
            files.write(&m, state.record_iter().map(Ok))
        })
        .await
        .map(|bytes| (meta, bytes, t.elapsed().as_millis() as u64));
        metrics::histogram!("presenced_raft_snapshot_build_seconds")
            .record(t.elapsed().as_secs_f64());
        SnapshotBuilder {
            written,
            files: self.files.clone(),
            sizes: self.sizes.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> SResult<Box<tokio::fs::File>> {
        let (path, file) = self
            .files
            .incoming()
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        if let Some(old) = self.incoming.replace(path) {
            let _ = std::fs::remove_file(old);
        }
        Ok(Box::new(tokio::fs::File::from_std(file)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Node>,
        mut snapshot: Box<tokio::fs::File>,
    ) -> SResult<()> {
        let sig = Some(meta.signature());
        let t = Instant::now();
        let werr = |e: std::io::Error| StorageIOError::write_snapshot(sig.clone(), &e);
        snapshot.flush().await.map_err(werr)?;
        snapshot.sync_all().await.map_err(werr)?;
        let mut file = snapshot.into_std().await;
        let path = self.incoming.take();
        let applied = Applied {
            log_id: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        let (files, m) = (self.files.clone(), meta.clone());
        let fresh = blocking(move || -> Result<State, String> {
            // Loaded first (a damaged transfer is refused here), then the file becomes the
            // durable state: synced above, renamed into place. A crash before the rename
            // leaves the previous snapshot and the log after it.
            file.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
            let mut state = load_file(file)?;
            match path {
                Some(p) => files.adopt(&p).map_err(|e| e.to_string())?,
                None => {
                    files.write(&m, state.record_iter().map(Ok))?;
                }
            }
            state.stop_tracking_changes();
            Ok(state)
        })
        .await
        .map_err(|e| StorageIOError::read_snapshot(sig.clone(), &io_msg(e)))?;
        *self.write_state() = fresh;
        self.applied = applied;
        self.applied_index
            .store(meta.last_log_id.map_or(0, |l| l.index), Ordering::Relaxed);
        self.sizes.snapshot_at(meta.last_log_id.map(|l| l.index));
        metrics::counter!("presenced_raft_snapshots_installed_total").increment(1);
        tracing::info!(id = %meta.snapshot_id, ms = t.elapsed().as_millis() as u64, "snapshot installed");
        let _ = self.events.send(Event::StateReplaced);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> SResult<Option<Snapshot<TypeConfig>>> {
        let current = self
            .files
            .open_current()
            .map_err(|e| StorageIOError::read_snapshot(None, &io_msg(e)))?;
        Ok(current.map(|(meta, file)| Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use presenced_model::{Command, Credentials};
    use presenced_storage::SledStore;

    fn populated() -> State {
        let mut s = State::default();
        let cmds = [
            Command::Init {
                domain: "example.test".into(),
            },
            Command::CreateAccount {
                user: "ann".into(),
                credentials: Credentials::derive("ann", "example.test", "pw", 1),
            },
            Command::SetSetting {
                key: "max_watchers".into(),
                value: "7".into(),
            },
        ];
        for c in &cmds {
            s.apply(&c.clone()).0.expect("applies");
        }
        s
    }

    fn marker(index: u64) -> Applied {
        Applied {
            log_id: Some(LogId::new(openraft::CommittedLeaderId::new(1, 1), index)),
            membership: StoredMembership::default(),
        }
    }

    /// The previous release's layout: the records and the marker in the store.
    fn legacy(dir: &std::path::Path, state: &mut State, at: u64) {
        let store = SledStore::open(dir, 1 << 20).unwrap();
        let changes = state.take_changes();
        store
            .sm_commit(changes, &crate::format::store(&marker(at)).unwrap())
            .unwrap();
        store.flush().unwrap();
    }

    #[test]
    fn the_previous_releases_state_records_move_into_a_snapshot_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = populated();
        legacy(dir.path(), &mut state, 41);
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        let files = Files::open(dir.path()).unwrap();
        let (got, applied) = open_durable(&store, &files).unwrap();
        assert_eq!(got, state);
        assert_eq!(applied.log_id.map(|l| l.index), Some(41));
        assert!(files.has_current(), "the records became a snapshot file");
        assert_eq!(store.sm_records().count(), 0, "and left the store");
        assert_eq!(store.sm_applied().unwrap().as_deref(), Some(MOVED_TO_FILE));
        // Opened again: from the file, at the same point.
        let (again, applied) = open_durable(&store, &files).unwrap();
        assert_eq!(again, state);
        assert_eq!(applied.log_id.map(|l| l.index), Some(41));
        // The file gone: refused by name, not started empty.
        std::fs::remove_file(dir.path().join("snapshots/current.snap")).unwrap();
        let e = open_durable(&store, &files).unwrap_err();
        assert!(e.contains("current.snap, which is missing"), "{e}");
    }

    #[test]
    fn a_snapshot_file_is_the_durable_state_and_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        let files = Files::open(dir.path()).unwrap();
        let (empty, applied) = open_durable(&store, &files).unwrap();
        assert_eq!(empty, State::default());
        assert!(applied.log_id.is_none());
        let state = populated();
        let meta = SnapshotMeta {
            last_log_id: marker(9).log_id,
            last_membership: StoredMembership::default(),
            snapshot_id: "1-1-9".into(),
        };
        files.write(&meta, state.record_iter().map(Ok)).unwrap();
        let (got, applied) = open_durable(&store, &files).unwrap();
        assert_eq!(got, state);
        assert_eq!(applied.log_id.map(|l| l.index), Some(9));
        // Cut short: refused with the file named.
        let path = dir.path().join("snapshots/current.snap");
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 3).unwrap();
        let e = open_durable(&store, &files).unwrap_err();
        assert!(
            e.contains("snapshots/current.snap") && e.contains("truncated"),
            "{e}"
        );
    }
}
