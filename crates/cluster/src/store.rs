//! openraft's log storage and state machine over the byte-level [`Store`].
//!
//! - Log appends are written at once and made durable by one flusher thread that
//!   fsyncs once for every batch of appends waiting (group commit), and only then
//!   reports them to openraft.
//! - Each apply batch writes the changed state records and the last-applied marker in
//!   one atomic store batch.
//! - A snapshot is every state record, streamed from the store into a file on the
//!   state-machine task (so it is consistent with `apply`, and no copy of the state is
//!   held in memory); it is sent in chunks from that file and installed by streaming
//!   the received file into a fresh state tree (see `snapshot.rs`).

// openraft's trait methods return its `StorageError`, which is large; the helpers here
// return it too rather than converting back and forth.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io::{BufReader, Seek, SeekFrom};
use std::ops::{Bound, RangeBounds};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership, Vote,
};
use presenced_model::{Event, Outcome, Reply, State};
use presenced_storage::Store;
use tokio::io::AsyncWriteExt;
use tokio::sync::broadcast;

use crate::compaction::LogSizes;
use crate::node::election::LastLog;
use crate::snapshot::{Files, Reader};
use crate::{Node, NodeId, TypeConfig};

type SResult<T> = Result<T, StorageError<NodeId>>;

fn io<E: std::error::Error + 'static>(e: E) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// Run a blocking store call off the async worker threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("storage task panicked")
}

// ------------------------------------------------------------------ log

#[derive(Clone)]
pub struct LogStore {
    store: Arc<dyn Store>,
    flusher: std::sync::mpsc::Sender<LogFlushed<TypeConfig>>,
    /// Highest index known committed (shared with health and metrics).
    committed: Arc<AtomicU64>,
    sizes: Arc<LogSizes>,
    /// The id of the last entry written (for pre-votes, `node/election.rs`).
    last: LastLog,
}

impl LogStore {
    pub fn new(
        store: Arc<dyn Store>,
        committed: Arc<AtomicU64>,
        sizes: Arc<LogSizes>,
        last: LastLog,
    ) -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<LogFlushed<TypeConfig>>();
        let s = store.clone();
        std::thread::Builder::new()
            .name("raft-log-flush".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut waiting = vec![first];
                    waiting.extend(rx.try_iter());
                    let t = Instant::now();
                    let res = s.flush();
                    metrics::histogram!("presenced_raft_log_flush_seconds")
                        .record(t.elapsed().as_secs_f64());
                    metrics::histogram!("presenced_raft_log_flush_batch")
                        .record(waiting.len() as f64);
                    for cb in waiting {
                        cb.log_io_completed(
                            res.as_ref()
                                .map(|_| ())
                                .map_err(|e| std::io::Error::other(e.to_string())),
                        );
                    }
                }
            })
            .expect("spawn flusher thread");
        LogStore {
            store,
            flusher: tx,
            committed,
            sizes,
            last,
        }
    }

    /// The id of the last entry in the store, or `purged` when the log is empty.
    fn stored_last(&self, purged: Option<LogId<NodeId>>) -> SResult<Option<LogId<NodeId>>> {
        match self
            .store
            .last_entry()
            .map_err(|e| StorageIOError::read_logs(&io(e)))?
        {
            Some((_, b)) => Ok(Some(decode_entry(&b)?.log_id)),
            None => Ok(purged),
        }
    }

    fn set_last(&self, id: Option<LogId<NodeId>>) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = id;
    }

    fn meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> SResult<Option<T>> {
        match self
            .store
            .get_meta(key)
            .map_err(|e| StorageIOError::read(&io(e)))?
        {
            Some(b) => Ok(Some(
                crate::format::load(&b).map_err(|e| StorageIOError::read(&io_msg(e)))?,
            )),
            None => Ok(None),
        }
    }

    async fn put_meta_durably<T: serde::Serialize>(&self, key: &'static str, v: &T) -> SResult<()> {
        let b = crate::format::store(v).map_err(|e| StorageIOError::write(&e))?;
        let s = self.store.clone();
        blocking(move || {
            s.put_meta(key, &b)?;
            s.flush()
        })
        .await
        .map_err(|e| StorageIOError::write(&io(e)).into())
    }
}

fn decode_entry(b: &[u8]) -> SResult<Entry<TypeConfig>> {
    crate::format::load(b).map_err(|e| StorageIOError::read_logs(&io_msg(e)).into())
}

fn io_msg(e: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> SResult<Vec<Entry<TypeConfig>>> {
        let from = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let to = match range.end_bound() {
            Bound::Included(x) => Some(x.saturating_add(1)),
            Bound::Excluded(x) => Some(*x),
            Bound::Unbounded => None,
        };
        let rows = self
            .store
            .read_range(from, to)
            .map_err(|e| StorageIOError::read_logs(&io(e)))?;
        rows.iter().map(|(_, b)| decode_entry(b)).collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> SResult<LogState<TypeConfig>> {
        let last_purged_log_id: Option<LogId<NodeId>> = self.meta("last_purged")?;
        let last = self.stored_last(last_purged_log_id)?;
        self.set_last(last);
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> SResult<()> {
        self.put_meta_durably("vote", vote).await
    }

    async fn read_vote(&mut self) -> SResult<Option<Vote<NodeId>>> {
        self.meta("vote")
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> SResult<()> {
        if let Some(c) = committed {
            self.committed.fetch_max(c.index, Ordering::Relaxed);
        }
        // Not flushed: losing it only means re-learning the commit point from the leader.
        let b = crate::format::store(&committed).map_err(|e| StorageIOError::write(&e))?;
        self.store
            .put_meta_lazily("committed", &b)
            .map_err(|e| StorageIOError::write(&io(e)))?;
        Ok(())
    }

    async fn read_committed(&mut self) -> SResult<Option<LogId<NodeId>>> {
        let c: Option<LogId<NodeId>> = self.meta::<Option<LogId<NodeId>>>("committed")?.flatten();
        if let Some(c) = c {
            self.committed.fetch_max(c.index, Ordering::Relaxed);
        }
        Ok(c)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> SResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut last = None;
        let rows = entries
            .into_iter()
            .map(|e| {
                last = Some(e.log_id);
                Ok((
                    e.log_id.index,
                    crate::format::store(&e).map_err(|e| StorageIOError::write_logs(&e))?,
                ))
            })
            .collect::<SResult<Vec<_>>>()?;
        self.sizes.appended(rows.iter().map(|(i, b)| (*i, b.len())));
        self.store
            .append(rows)
            .map_err(|e| StorageIOError::write_logs(&io(e)))?;
        if last.is_some() {
            self.set_last(last);
        }
        // Acknowledged to openraft only once fsync'ed, by the flusher thread.
        if let Err(std::sync::mpsc::SendError(cb)) = self.flusher.send(callback) {
            cb.log_io_completed(Err(std::io::Error::other("log flusher stopped")));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> SResult<()> {
        let s = self.store.clone();
        self.sizes.truncated(log_id.index);
        blocking(move || {
            s.truncate_from(log_id.index)?;
            s.flush()
        })
        .await
        .map_err(|e| StorageIOError::write_logs(&io(e)))?;
        let before = self.stored_last(self.meta("last_purged")?)?;
        self.set_last(before);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> SResult<()> {
        // Record the purge point durably first, then delete.
        self.put_meta_durably("last_purged", &log_id).await?;
        self.store
            .purge_upto(log_id.index)
            .map_err(|e| StorageIOError::write_logs(&io(e)))?;
        self.sizes.purged(log_id.index);
        Ok(())
    }
}

// ------------------------------------------------------------------ state machine

/// What is stored beside the state records as the applied marker.
#[derive(serde::Serialize, serde::Deserialize, Default, Clone)]
struct Applied {
    log_id: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Node>,
}

pub struct StateMachine {
    store: Arc<dyn Store>,
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

impl StateMachine {
    /// Open the state machine: load the records and the applied marker from the store.
    /// The returned state is shared with readers on this node.
    pub fn open(
        store: Arc<dyn Store>,
        files: Files,
        sizes: Arc<LogSizes>,
        events: broadcast::Sender<Event>,
        applied_index: Arc<AtomicU64>,
    ) -> Result<(Self, Arc<RwLock<State>>), String> {
        let applied: Applied = match store.sm_applied().map_err(|e| e.to_string())? {
            Some(b) => crate::format::load(&b).map_err(|e| format!("applied marker: {e}"))?,
            None => Applied::default(),
        };
        let state = Arc::new(RwLock::new(load_state(store.as_ref())?));
        applied_index.store(applied.log_id.map_or(0, |l| l.index), Ordering::Relaxed);
        // The previous release kept its snapshot inside the store: move it out.
        if !files.has_current()
            && let Some(blob) = store.legacy_snapshot().map_err(|e| e.to_string())?
        {
            files
                .put_blob(&blob)
                .map_err(|e| format!("moving the snapshot to a file: {e}"))?;
            store.clear_legacy_snapshot().map_err(|e| e.to_string())?;
            tracing::info!("moved the previous release's snapshot to a file");
        }
        if let Some((meta, _)) = files.open_current()? {
            sizes.snapshot_at(meta.last_log_id.map(|l| l.index));
        }
        Ok((
            StateMachine {
                store,
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
        let changes = {
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
            state.take_changes()
        };
        let marker = crate::format::store(&self.applied)
            .map_err(|e| StorageIOError::write_state_machine(&e))?;
        let last = self.applied.log_id;
        self.store
            .sm_commit(changes, &marker)
            .map_err(|e| match last {
                Some(l) => StorageIOError::apply(l, &io(e)),
                None => StorageIOError::write_state_machine(&io(e)),
            })?;
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
        // marker; streamed from the store to the file, so no copy of the state is held.
        // Applies wait meanwhile (about a second per million records).
        let meta = SnapshotMeta {
            last_log_id: self.applied.log_id,
            last_membership: self.applied.membership.clone(),
            snapshot_id: snapshot_id(&self.applied),
        };
        let (store, files) = (self.store.clone(), self.files.clone());
        let t = Instant::now();
        let m = meta.clone();
        let written = blocking(move || {
            // The records a snapshot covers must be durable before the log behind it
            // is purged.
            store.flush().map_err(|e| e.to_string())?;
            files.write(&m, store.sm_records().map(|r| r.map_err(|e| e.to_string())))
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
        let marker = crate::format::store(&applied)
            .map_err(|e| StorageIOError::write_snapshot(sig.clone(), &e))?;
        let (store, files) = (self.store.clone(), self.files.clone());
        let fresh = blocking(move || -> Result<State, String> {
            file.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
            let (_, reader) = Reader::open(BufReader::with_capacity(1 << 20, file))?;
            let mut failed = None;
            let mut records = reader.map(|r| {
                r.map_err(|e| {
                    failed = Some(e.clone());
                    presenced_storage::StoreError::Corrupt(e)
                })
            });
            if let Err(e) = store.sm_replace(&mut records, &marker) {
                return Err(failed.unwrap_or_else(|| e.to_string()));
            }
            if let Some(p) = path {
                files.adopt(&p).map_err(|e| e.to_string())?;
            }
            load_state(store.as_ref())
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
