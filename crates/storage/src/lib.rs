//! Durable storage for one node: the Raft log, Raft's own metadata (vote, committed,
//! purged), the state-machine records with their last-applied marker, and the current
//! snapshot.
//!
//! The [`Store`] trait speaks bytes only, so the Raft library and the state's encoding
//! stay out of it and another engine can replace sled without touching the cluster
//! crate. [`SledStore`] is the embedded default.
//!
//! Durability contract:
//! - [`Store::append`], [`Store::put_meta`], [`Store::truncate_from`], [`Store::purge_upto`]
//!   write; they are durable after the next [`Store::flush`] returns.
//! - [`Store::sm_commit`] writes state records and the applied marker in one atomic batch.
//! - [`Store::sm_replace`] swaps the whole state atomically (snapshot install): after a
//!   crash the old state or the new one is there, never a mix.
//!
//! Whole-state operations stream: [`Store::sm_records`] iterates, [`Store::sm_replace`]
//! consumes an iterator in bounded batches, so neither holds a second copy of the state.

use std::path::Path;

pub mod fault;

/// A storage failure; the node treats it as fatal for the operation at hand.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage engine: {0}")]
    Engine(#[from] sled::Error),
    #[error("storage transaction: {0}")]
    Transaction(String),
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// One record change: `Some(value)` writes, `None` deletes.
pub type Change = (Vec<u8>, Option<Vec<u8>>);

/// State records as (key, value) pairs.
pub type Records = Vec<(Vec<u8>, Vec<u8>)>;

/// A stream of state records in key order.
pub type RecordIter<'a> = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> + Send + 'a>;

/// Records written per batch while replacing the whole state.
const REPLACE_BATCH: usize = 16_384;

/// What a node persists. Implementations must be safe to share between threads.
pub trait Store: Send + Sync + 'static {
    /// Write log entries (index, bytes) in one atomic batch.
    fn append(&self, entries: Vec<(u64, Vec<u8>)>) -> Result<()>;
    /// Entries with `from <= index < to` (`to = None`: to the end), in index order.
    fn read_range(&self, from: u64, to: Option<u64>) -> Result<Vec<(u64, Vec<u8>)>>;
    /// The entry with the highest index.
    fn last_entry(&self) -> Result<Option<(u64, Vec<u8>)>>;
    /// Delete entries with `index >= from`.
    fn truncate_from(&self, from: u64) -> Result<()>;
    /// Delete entries with `index <= upto`.
    fn purge_upto(&self, upto: u64) -> Result<()>;

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>>;
    fn put_meta(&self, key: &str, value: &[u8]) -> Result<()>;

    /// Make every previous write durable (fsync). Blocking.
    fn flush(&self) -> Result<()>;

    /// The applied marker stored with the state records.
    fn sm_applied(&self) -> Result<Option<Vec<u8>>>;
    /// Every state record in key order, streamed. Consistent while nothing commits
    /// (the state machine calls it between applies).
    fn sm_records(&self) -> RecordIter<'_>;
    /// Encoded sizes of the log entries, in index order (for size-based compaction).
    fn log_sizes(&self) -> Result<Vec<(u64, u32)>>;
    /// Apply record changes and set the applied marker, atomically.
    fn sm_commit(&self, changes: Vec<Change>, applied: &[u8]) -> Result<()>;
    /// Replace all records and the applied marker, atomically and durably. The records
    /// are consumed in batches; the first error stops the replacement and leaves the
    /// old state live.
    fn sm_replace(
        &self,
        records: &mut dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>)>>,
        applied: &[u8],
    ) -> Result<()>;

    /// A snapshot the previous release kept inside the store (this release keeps
    /// snapshots in files beside it).
    fn legacy_snapshot(&self) -> Result<Option<Vec<u8>>>;
    /// Forget the legacy snapshot once it has been moved out.
    fn clear_legacy_snapshot(&self) -> Result<()>;

    /// Bytes on disk, for metrics.
    fn size_on_disk(&self) -> u64;
}

/// Key of the applied marker inside a state tree; state keys never start with 0xff.
const APPLIED: &[u8] = b"\xff__applied";
/// Meta key naming the live state tree.
const SM_TREE: &str = "sm_tree";

/// The sled-backed store: one `sled::Db` with trees `log`, `meta`, `snapshot` and one
/// live state tree `sm.<generation>`.
pub struct SledStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    snap: sled::Tree,
    sm: std::sync::RwLock<sled::Tree>,
    /// A slow disk, when a fault test arms one ([`fault`]).
    slow: Option<fault::SlowDisk>,
}

fn idx(i: u64) -> [u8; 8] {
    i.to_be_bytes()
}

fn un_idx(k: &[u8]) -> Result<u64> {
    let b: [u8; 8] = k
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("log key of {} bytes", k.len())))?;
    Ok(u64::from_be_bytes(b))
}

impl SledStore {
    /// Open (or create) the store under `dir`. `cache_bytes` bounds sled's page cache.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .open()?;
        let meta = db.open_tree("meta")?;
        let name = match meta.get(SM_TREE)? {
            Some(n) => n.to_vec(),
            None => {
                meta.insert(SM_TREE, b"sm.0".to_vec())?;
                b"sm.0".to_vec()
            }
        };
        // Drop state trees left behind by an install interrupted before or after its switch.
        for t in db.tree_names() {
            if t.starts_with(b"sm.") && t.as_ref() != name.as_slice() {
                tracing::info!(tree = %String::from_utf8_lossy(&t), "dropping stale state tree");
                db.drop_tree(&t)?;
            }
        }
        let sm = db.open_tree(&name)?;
        Ok(SledStore {
            log: db.open_tree("log")?,
            snap: db.open_tree("snapshot")?,
            meta,
            sm: std::sync::RwLock::new(sm),
            slow: fault::SlowDisk::from_env(),
            db,
        })
    }

    fn sm(&self) -> sled::Tree {
        self.sm.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Store for SledStore {
    fn append(&self, entries: Vec<(u64, Vec<u8>)>) -> Result<()> {
        let mut b = sled::Batch::default();
        for (i, v) in entries {
            b.insert(&idx(i), v);
        }
        self.log.apply_batch(b)?;
        Ok(())
    }

    fn read_range(&self, from: u64, to: Option<u64>) -> Result<Vec<(u64, Vec<u8>)>> {
        let iter = match to {
            Some(to) if to <= from => return Ok(Vec::new()),
            Some(to) => self.log.range(idx(from)..idx(to)),
            None => self.log.range(idx(from)..),
        };
        iter.map(|kv| {
            let (k, v) = kv?;
            Ok((un_idx(&k)?, v.to_vec()))
        })
        .collect()
    }

    fn last_entry(&self) -> Result<Option<(u64, Vec<u8>)>> {
        match self.log.last()? {
            Some((k, v)) => Ok(Some((un_idx(&k)?, v.to_vec()))),
            None => Ok(None),
        }
    }

    fn truncate_from(&self, from: u64) -> Result<()> {
        let mut b = sled::Batch::default();
        for k in self.log.range(idx(from)..).keys() {
            b.remove(k?);
        }
        self.log.apply_batch(b)?;
        Ok(())
    }

    fn purge_upto(&self, upto: u64) -> Result<()> {
        let mut b = sled::Batch::default();
        for k in self.log.range(..=idx(upto)).keys() {
            b.remove(k?);
        }
        self.log.apply_batch(b)?;
        Ok(())
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.meta.get(key)?.map(|v| v.to_vec()))
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<()> {
        self.meta.insert(key, value)?;
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        if let Some(s) = &self.slow {
            s.wait();
        }
        // One sled log backs every tree: this fsyncs all previous writes.
        self.db.flush()?;
        Ok(())
    }

    fn sm_applied(&self) -> Result<Option<Vec<u8>>> {
        Ok(self.sm().get(APPLIED)?.map(|v| v.to_vec()))
    }

    fn sm_records(&self) -> RecordIter<'_> {
        Box::new(
            self.sm()
                .iter()
                .filter(|kv| !matches!(kv, Ok((k, _)) if k.as_ref() == APPLIED))
                .map(|kv| {
                    kv.map(|(k, v)| (k.to_vec(), v.to_vec()))
                        .map_err(StoreError::from)
                }),
        )
    }

    fn log_sizes(&self) -> Result<Vec<(u64, u32)>> {
        self.log
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                Ok((un_idx(&k)?, u32::try_from(v.len()).unwrap_or(u32::MAX)))
            })
            .collect()
    }

    fn sm_commit(&self, changes: Vec<Change>, applied: &[u8]) -> Result<()> {
        let mut b = sled::Batch::default();
        for (k, v) in changes {
            match v {
                Some(v) => b.insert(k, v),
                None => b.remove(k),
            }
        }
        b.insert(APPLIED, applied);
        self.sm().apply_batch(b)?;
        Ok(())
    }

    fn sm_replace(
        &self,
        records: &mut dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>)>>,
        applied: &[u8],
    ) -> Result<()> {
        let mut guard = self.sm.write().unwrap_or_else(|p| p.into_inner());
        let old = guard.name().to_vec();
        let generation: u64 = String::from_utf8_lossy(&old[3..]).parse().unwrap_or(0);
        let name = format!("sm.{}", generation + 1);
        // Build the new tree beside the live one, make it durable, then switch the
        // pointer with one write: a crash leaves either tree complete and named (an
        // unnamed one is dropped at the next open).
        let _ = self.db.drop_tree(name.as_bytes());
        let fresh = self.db.open_tree(&name)?;
        let mut fill = || -> Result<()> {
            let mut b = sled::Batch::default();
            let mut n = 0;
            for r in &mut *records {
                let (k, v) = r?;
                b.insert(k, v);
                n += 1;
                if n == REPLACE_BATCH {
                    fresh.apply_batch(std::mem::take(&mut b))?;
                    n = 0;
                }
            }
            b.insert(APPLIED, applied);
            fresh.apply_batch(b)?;
            self.db.flush()?;
            Ok(())
        };
        if let Err(e) = fill() {
            let _ = self.db.drop_tree(name.as_bytes());
            return Err(e);
        }
        self.meta.insert(SM_TREE, name.as_bytes())?;
        self.db.flush()?;
        *guard = fresh;
        drop(guard);
        self.db.drop_tree(&old)?;
        Ok(())
    }

    fn legacy_snapshot(&self) -> Result<Option<Vec<u8>>> {
        Ok(self.snap.get("current")?.map(|v| v.to_vec()))
    }

    fn clear_legacy_snapshot(&self) -> Result<()> {
        self.snap.remove("current")?;
        Ok(())
    }

    fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_ranges_truncate_purge() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), 1 << 20).unwrap();
        s.append((1..=10).map(|i| (i, vec![i as u8])).collect())
            .unwrap();
        assert_eq!(
            s.read_range(3, Some(6))
                .unwrap()
                .iter()
                .map(|e| e.0)
                .collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        s.truncate_from(8).unwrap();
        assert_eq!(s.last_entry().unwrap().unwrap().0, 7);
        s.purge_upto(4).unwrap();
        assert_eq!(s.read_range(0, None).unwrap().first().unwrap().0, 5);
        assert_eq!(s.log_sizes().unwrap(), vec![(5, 1), (6, 1), (7, 1)]);
    }

    #[test]
    fn state_commit_replace_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path(), 1 << 20).unwrap();
            s.sm_commit(
                vec![
                    (b"a".to_vec(), Some(b"1".to_vec())),
                    (b"b".to_vec(), Some(b"2".to_vec())),
                ],
                b"5",
            )
            .unwrap();
            s.sm_commit(vec![(b"a".to_vec(), None)], b"6").unwrap();
            assert_eq!(s.sm_applied().unwrap().as_deref(), Some(&b"6"[..]));
            let recs: Records = s.sm_records().collect::<Result<_>>().unwrap();
            assert_eq!(recs, vec![(b"b".to_vec(), b"2".to_vec())]);
            // A failing stream leaves the old state live.
            let mut bad = vec![
                Ok((b"x".to_vec(), b"1".to_vec())),
                Err(StoreError::Corrupt("cut".into())),
            ]
            .into_iter();
            assert!(s.sm_replace(&mut bad, b"41").is_err());
            assert_eq!(s.sm_applied().unwrap().as_deref(), Some(&b"6"[..]));
            let mut many = (0..40_000u32)
                .map(|i| Ok((i.to_be_bytes().to_vec(), vec![1])))
                .chain([Ok((b"z".to_vec(), b"9".to_vec()))]);
            s.sm_replace(&mut many, b"42").unwrap();
            assert_eq!(s.sm_records().count(), 40_001);
            s.sm_replace(&mut [Ok((b"z".to_vec(), b"9".to_vec()))].into_iter(), b"42")
                .unwrap();
            s.flush().unwrap();
        }
        // sled's background flusher may hold the file lock a moment after the drop.
        let s = (0..50)
            .find_map(|_| {
                SledStore::open(dir.path(), 1 << 20)
                    .map_err(|_| std::thread::sleep(std::time::Duration::from_millis(100)))
                    .ok()
            })
            .expect("store reopens");
        let applied = s.sm_applied().unwrap();
        let recs: Records = s.sm_records().collect::<Result<_>>().unwrap();
        assert_eq!(applied.as_deref(), Some(&b"42"[..]));
        assert_eq!(recs, vec![(b"z".to_vec(), b"9".to_vec())]);
        assert_eq!(
            s.db.tree_names()
                .iter()
                .filter(|t| t.starts_with(b"sm."))
                .count(),
            1
        );
    }
}
