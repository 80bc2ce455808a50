//! openraft's log storage and state machine over the byte-level [`Store`].
//!
//! - Log appends are written at once and made durable by one flusher thread that
//!   fsyncs once for every batch of appends waiting (group commit), and only then
//!   reports them to openraft.
//! - Each apply batch writes the changed state records and the last-applied marker in
//!   one atomic store batch.
//! - A snapshot is every state record, taken on the state-machine task (so it is
//!   consistent with `apply`), then encoded and stored on a builder task.

// openraft's trait methods return its `StorageError`, which is large; the helpers here
// return it too rather than converting back and forth.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership, Vote,
};
use presenced_model::{Event, Outcome, Reply, State};
use presenced_storage::{Records, Store};
use tokio::sync::broadcast;

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
}

impl LogStore {
    pub fn new(store: Arc<dyn Store>, committed: Arc<AtomicU64>) -> Self {
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
        }
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
        let last = match self
            .store
            .last_entry()
            .map_err(|e| StorageIOError::read_logs(&io(e)))?
        {
            Some((_, b)) => Some(decode_entry(&b)?.log_id),
            None => last_purged_log_id,
        };
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
            .put_meta("committed", &b)
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
        let rows = entries
            .into_iter()
            .map(|e| {
                Ok((
                    e.log_id.index,
                    crate::format::store(&e).map_err(|e| StorageIOError::write_logs(&e))?,
                ))
            })
            .collect::<SResult<Vec<_>>>()?;
        self.store
            .append(rows)
            .map_err(|e| StorageIOError::write_logs(&io(e)))?;
        // Acknowledged to openraft only once fsync'ed, by the flusher thread.
        if let Err(std::sync::mpsc::SendError(cb)) = self.flusher.send(callback) {
            cb.log_io_completed(Err(std::io::Error::other("log flusher stopped")));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> SResult<()> {
        let s = self.store.clone();
        blocking(move || {
            s.truncate_from(log_id.index)?;
            s.flush()
        })
        .await
        .map_err(|e| StorageIOError::write_logs(&io(e)).into())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> SResult<()> {
        // Record the purge point durably first, then delete.
        self.put_meta_durably("last_purged", &log_id).await?;
        self.store
            .purge_upto(log_id.index)
            .map_err(|e| StorageIOError::write_logs(&io(e)))?;
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
}

impl StateMachine {
    /// Open the state machine: load the records and the applied marker from the store.
    /// The returned state is shared with readers on this node.
    pub fn open(
        store: Arc<dyn Store>,
        events: broadcast::Sender<Event>,
        applied_index: Arc<AtomicU64>,
    ) -> Result<(Self, Arc<RwLock<State>>), String> {
        let (applied, records) = store.sm_load().map_err(|e| e.to_string())?;
        let applied: Applied = match applied {
            Some(b) => crate::format::load(&b).map_err(|e| format!("applied marker: {e}"))?,
            None => Applied::default(),
        };
        let state = Arc::new(RwLock::new(
            State::load(records).map_err(|e| e.to_string())?,
        ));
        applied_index.store(applied.log_id.map_or(0, |l| l.index), Ordering::Relaxed);
        Ok((
            StateMachine {
                store,
                state: state.clone(),
                applied,
                events,
                applied_index,
            },
            state,
        ))
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }
}

const SNAPSHOT_MAGIC: &[u8; 8] = b"PSNAP001";

/// Snapshot bytes: magic, u32 header length, JSON `SnapshotMeta`, then records as
/// (u32 key length, key, u32 value length, value).
fn encode_snapshot(meta: &SnapshotMeta<NodeId, Node>, records: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let header = serde_json::to_vec(meta).expect("snapshot meta serialises");
    let size: usize = records.iter().map(|(k, v)| k.len() + v.len() + 8).sum();
    let mut out = Vec::with_capacity(12 + header.len() + size);
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&(header.len() as u32).to_be_bytes());
    out.extend_from_slice(&header);
    for (k, v) in records {
        out.extend_from_slice(&(k.len() as u32).to_be_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(v);
    }
    out
}

fn decode_snapshot(b: &[u8]) -> Result<(SnapshotMeta<NodeId, Node>, Records), String> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
        if b.len() < n {
            return Err("snapshot is truncated".into());
        }
        let (h, t) = b.split_at(n);
        *b = t;
        Ok(h)
    }
    fn len(b: &mut &[u8]) -> Result<usize, String> {
        Ok(u32::from_be_bytes(take(b, 4)?.try_into().expect("4 bytes")) as usize)
    }
    let mut b = b;
    if take(&mut b, 8)? != SNAPSHOT_MAGIC {
        return Err("not a presenced snapshot".into());
    }
    let n = len(&mut b)?;
    let meta =
        serde_json::from_slice(take(&mut b, n)?).map_err(|e| format!("snapshot header: {e}"))?;
    let mut records = Vec::new();
    while !b.is_empty() {
        let kn = len(&mut b)?;
        let k = take(&mut b, kn)?.to_vec();
        let vn = len(&mut b)?;
        records.push((k, take(&mut b, vn)?.to_vec()));
    }
    Ok((meta, records))
}

pub struct SnapshotBuilder {
    store: Arc<dyn Store>,
    applied: Applied,
    state: State,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> SResult<Snapshot<TypeConfig>> {
        let snapshot_id = match &self.applied.log_id {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.leader_id.node_id, l.index),
            None => "empty".to_string(),
        };
        let meta = SnapshotMeta {
            last_log_id: self.applied.log_id,
            last_membership: self.applied.membership.clone(),
            snapshot_id,
        };
        let records = self.state.records();
        let t = Instant::now();
        let blob = encode_snapshot(&meta, &records);
        let s = self.store.clone();
        let blob2 = blob.clone();
        // Storing the snapshot flushes the whole store, so the state records it was
        // taken from are durable before openraft purges the log behind it.
        blocking(move || s.snapshot_put(&blob2))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &io(e)))?;
        metrics::counter!("presenced_raft_snapshots_built_total").increment(1);
        tracing::info!(id = %meta.snapshot_id, bytes = blob.len(), ms = t.elapsed().as_millis() as u64, "snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(blob)),
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
        // A plain copy here (this runs between applies); encoding it happens on the
        // builder's own task, so applies do not wait for it.
        let state = self.state.read().unwrap_or_else(|p| p.into_inner()).clone();
        SnapshotBuilder {
            store: self.store.clone(),
            applied: self.applied.clone(),
            state,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> SResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Node>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> SResult<()> {
        let sig = Some(meta.signature());
        let blob = snapshot.into_inner();
        let (_, records) = decode_snapshot(&blob).map_err(|e| {
            StorageIOError::read_snapshot(sig.clone(), &io(std::io::Error::other(e)))
        })?;
        let fresh = State::load(records.clone())
            .map_err(|e| StorageIOError::read_snapshot(sig.clone(), &e))?;
        let applied = Applied {
            log_id: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        let marker = crate::format::store(&applied)
            .map_err(|e| StorageIOError::write_snapshot(sig.clone(), &e))?;
        let s = self.store.clone();
        blocking(move || {
            s.sm_replace(records, &marker)?;
            s.snapshot_put(&blob)
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(sig, &io(e)))?;
        *self.write_state() = fresh;
        self.applied = applied;
        self.applied_index
            .store(meta.last_log_id.map_or(0, |l| l.index), Ordering::Relaxed);
        metrics::counter!("presenced_raft_snapshots_installed_total").increment(1);
        tracing::info!(id = %meta.snapshot_id, "snapshot installed");
        let _ = self.events.send(Event::StateReplaced);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> SResult<Option<Snapshot<TypeConfig>>> {
        let Some(blob) = self
            .store
            .snapshot_get()
            .map_err(|e| StorageIOError::read_snapshot(None, &io(e)))?
        else {
            return Ok(None);
        };
        let (meta, _) = decode_snapshot(&blob)
            .map_err(|e| StorageIOError::read_snapshot(None, &io(std::io::Error::other(e))))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(blob)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_codec_round_trips_and_rejects_garbage() {
        let meta = SnapshotMeta::<NodeId, Node> {
            last_log_id: None,
            last_membership: Default::default(),
            snapshot_id: "x".into(),
        };
        let recs = vec![(b"a".to_vec(), b"1".to_vec()), (b"bb".to_vec(), vec![])];
        let blob = encode_snapshot(&meta, &recs);
        let (m, r) = decode_snapshot(&blob).unwrap();
        assert_eq!(m.snapshot_id, "x");
        assert_eq!(r, recs);
        assert!(decode_snapshot(&blob[..blob.len() - 1]).is_err());
        assert!(decode_snapshot(b"garbage").is_err());
    }
}
