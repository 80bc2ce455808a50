//! openraft's log storage over the byte-level [`Store`]: appends are written at once
//! and made durable by one flusher thread that fsyncs once for every batch of appends
//! waiting (group commit), and only then reports them to openraft. The state machine
//! is in `machine.rs`.

// openraft's trait methods return its `StorageError`, which is large; the helpers here
// return it too rather than converting back and forth.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use presenced_storage::Store;

use crate::compaction::LogSizes;
use crate::entry_cache::EntryCache;
use crate::node::election::LastLog;
use crate::{NodeId, TypeConfig};

pub(crate) type SResult<T> = Result<T, StorageError<NodeId>>;

pub(crate) fn io<E: std::error::Error + 'static>(e: E) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// Run a blocking store call off the async worker threads.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
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
    /// The newest entries, decoded, for replication (`entry_cache.rs`).
    cache: EntryCache,
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
            cache: EntryCache::default(),
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

pub(crate) fn io_msg(e: String) -> std::io::Error {
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
        if let Some(entries) = self.cache.get(from, to) {
            return Ok(entries);
        }
        metrics::counter!("presenced_raft_log_reads_from_disk_total").increment(1);
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
        let mut kept = Vec::new();
        let rows = entries
            .into_iter()
            .map(|e| {
                last = Some(e.log_id);
                let b = crate::format::store(&e).map_err(|e| StorageIOError::write_logs(&e))?;
                let row = (e.log_id.index, b);
                kept.push((e, row.1.len()));
                Ok(row)
            })
            .collect::<SResult<Vec<_>>>()?;
        self.sizes.appended(rows.iter().map(|(i, b)| (*i, b.len())));
        self.store
            .append(rows)
            .map_err(|e| StorageIOError::write_logs(&io(e)))?;
        self.cache.appended(kept);
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
        self.cache.truncated(log_id.index);
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
        self.cache.purged(log_id.index);
        self.store
            .purge_upto(log_id.index)
            .map_err(|e| StorageIOError::write_logs(&io(e)))?;
        self.sizes.purged(log_id.index);
        Ok(())
    }
}
