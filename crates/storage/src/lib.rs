//! Durable storage for one node: the Raft log and Raft's own metadata (vote, committed,
//! purged). The state-machine records with their last-applied marker are how earlier
//! releases kept the state (the cluster crate now keeps it in snapshot files): it reads
//! them once at upgrade and clears them with [`Store::sm_replace`].
//!
//! The [`Store`] trait speaks bytes only, so the Raft library and the state's encoding
//! stay out of it and another engine can replace sled without touching the cluster
//! crate. [`SledStore`] is the embedded default.
//!
//! Durability contract:
//! - [`Store::append`], [`Store::put_meta`], [`Store::truncate_from`], [`Store::purge_upto`]
//!   write; they are durable after the next [`Store::flush`] returns.
//! - [`Store::sm_commit`] writes state records and the applied marker in one atomic batch
//!   (the earlier releases' write path; tests build that layout with it), made durable in
//!   the background: after a crash the state may be an earlier one (never a mix).
//!   [`Store::purge_upto`] makes it durable before it deletes entries.
//! - [`Store::sm_replace`] swaps the whole state atomically (snapshot install): after a
//!   crash the old state or the new one is there, never a mix.
//!
//! Whole-state operations stream: [`Store::sm_records`] iterates, [`Store::sm_replace`]
//! consumes an iterator in bounded batches, so neither holds a second copy of the state.

use std::path::Path;

pub mod fault;
pub mod wal;

/// A storage failure; the node treats it as fatal for the operation at hand.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage engine: {0}")]
    Engine(#[from] sled::Error),
    #[error("storage transaction: {0}")]
    Transaction(String),
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error("storage I/O: {0}")]
    Io(String),
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
    /// Write log entries (index, bytes), in order. Until the next flush returns, a crash
    /// may keep any prefix of what was appended.
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
    /// Like [`Store::put_meta`], for a value a crash may lose (Raft's commit point, which
    /// the leader tells again): a flush need not make it durable.
    fn put_meta_lazily(&self, key: &str, value: &[u8]) -> Result<()> {
        self.put_meta(key, value)
    }

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

/// The folder of the Raft log's segment files, inside the data dir.
pub const LOG_DIR: &str = "raft-log";
/// Where a log moved out of sled is built before it takes `LOG_DIR`'s name.
const LOG_DIR_MIGRATING: &str = "raft-log.migrating";
/// Entries moved per append while migrating the previous release's log.
const MIGRATE_BATCH: u64 = 1024;

/// The embedded store: the Raft log in segment files ([`wal`], folder `raft-log`), and
/// one `sled::Db` with trees `meta`, `snapshot` and one live state tree
/// `sm.<generation>`. The previous release kept the log in a sled tree `log` too; an
/// open moves it out once.
pub struct SledStore {
    db: sled::Db,
    log: wal::Wal,
    /// A `put_meta` since the last flush: the next flush syncs sled too.
    meta_dirty: std::sync::atomic::AtomicBool,
    meta: sled::Tree,
    snap: sled::Tree,
    sm: std::sync::RwLock<sled::Tree>,
    /// A slow disk, when a fault test arms one ([`fault`]).
    slow: Option<fault::SlowDisk>,
}

#[cfg(test)]
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
            log: open_log(&db, dir)?,
            meta_dirty: std::sync::atomic::AtomicBool::new(false),
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

/// Open the log folder beside sled's files, first moving the previous release's log
/// out of sled's `log` tree: into a folder of its own, synced, then renamed into place,
/// so a crash at any step leaves either the old log or the whole new one.
fn open_log(db: &sled::Db, dir: &Path) -> Result<wal::Wal> {
    let target = dir.join(LOG_DIR);
    if !db.tree_names().iter().any(|t| t.as_ref() == b"log") {
        return wal::Wal::open(&target);
    }
    let old = db.open_tree("log")?;
    if !target.exists() && !old.is_empty() {
        let tmp = dir.join(LOG_DIR_MIGRATING);
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)
                .map_err(|e| StoreError::Io(format!("removing {}: {e}", tmp.display())))?;
        }
        let w = wal::Wal::open(&tmp)?;
        let mut moved = 0u64;
        let mut batch = Vec::new();
        for kv in old.iter() {
            let (k, v) = kv?;
            batch.push((un_idx(&k)?, v.to_vec()));
            if batch.len() as u64 == MIGRATE_BATCH {
                moved += batch.len() as u64;
                w.append(std::mem::take(&mut batch))?;
            }
        }
        moved += batch.len() as u64;
        w.append(batch)?;
        w.sync()?;
        drop(w);
        std::fs::rename(&tmp, &target)
            .and_then(|_| std::fs::File::open(dir)?.sync_all())
            .map_err(|e| StoreError::Io(format!("moving {} into place: {e}", tmp.display())))?;
        tracing::info!(
            entries = moved,
            "moved the raft log out of sled into {LOG_DIR}/"
        );
    }
    let log = wal::Wal::open(&target)?;
    // Moved (now or before a crash), or empty: the copy in sled is no longer read.
    drop(old);
    db.drop_tree("log")?;
    db.flush()?;
    Ok(log)
}

impl Store for SledStore {
    fn append(&self, entries: Vec<(u64, Vec<u8>)>) -> Result<()> {
        self.log.append(entries)
    }

    fn read_range(&self, from: u64, to: Option<u64>) -> Result<Vec<(u64, Vec<u8>)>> {
        if to.is_some_and(|to| to <= from) {
            return Ok(Vec::new());
        }
        self.log.read_range(from, to)
    }

    fn last_entry(&self) -> Result<Option<(u64, Vec<u8>)>> {
        self.log.last_entry()
    }

    fn truncate_from(&self, from: u64) -> Result<()> {
        self.log.truncate_from(from)
    }

    fn purge_upto(&self, upto: u64) -> Result<()> {
        // The state records are synced only now and then (sled's own flush); a restart
        // re-applies the log from their applied marker, so what is purged must be
        // durable in them first.
        self.db.flush()?;
        self.log.purge_upto(upto)
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.meta.get(key)?.map(|v| v.to_vec()))
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<()> {
        self.meta.insert(key, value)?;
        self.meta_dirty
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    fn put_meta_lazily(&self, key: &str, value: &[u8]) -> Result<()> {
        self.meta.insert(key, value)?;
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        if let Some(s) = &self.slow {
            s.wait();
        }
        // The log's own sync; sled only when Raft's metadata (vote, purge point) changed.
        self.log.sync()?;
        if self
            .meta_dirty
            .swap(false, std::sync::atomic::Ordering::AcqRel)
        {
            self.db.flush()?;
        }
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
        Ok(self.log.sizes())
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
        self.db.size_on_disk().unwrap_or(0) + self.log.bytes()
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
    fn the_previous_releases_log_in_sled_is_moved_out_once() {
        let dir = tempfile::tempdir().unwrap();
        {
            // What the previous release wrote: the log in sled's `log` tree.
            let db = sled::Config::new().path(dir.path()).open().unwrap();
            let log = db.open_tree("log").unwrap();
            for i in 0..=2500u64 {
                log.insert(idx(i), format!("e{i}").into_bytes()).unwrap();
            }
            db.open_tree("meta")
                .unwrap()
                .insert("vote", b"v".to_vec())
                .unwrap();
            db.flush().unwrap();
        }
        // A migration cut short by a crash leaves a folder that is rebuilt.
        std::fs::create_dir_all(dir.path().join(LOG_DIR_MIGRATING)).unwrap();
        std::fs::write(dir.path().join(LOG_DIR_MIGRATING).join("junk"), b"x").unwrap();
        for _ in 0..2 {
            // sled's threads let go of the previous open's file lock a moment later.
            let s = (0..100)
                .find_map(|_| {
                    SledStore::open(dir.path(), 1 << 20)
                        .map_err(|_| std::thread::sleep(std::time::Duration::from_millis(20)))
                        .ok()
                })
                .expect("the store opens again");
            let all = s.read_range(0, None).unwrap();
            assert_eq!(all.len(), 2501);
            assert_eq!(all[0], (0, b"e0".to_vec()));
            assert_eq!(s.last_entry().unwrap().unwrap(), (2500, b"e2500".to_vec()));
            assert_eq!(s.get_meta("vote").unwrap().as_deref(), Some(&b"v"[..]));
            assert!(!s.db.tree_names().iter().any(|t| t.as_ref() == b"log"));
            assert!(!dir.path().join(LOG_DIR_MIGRATING).exists());
            s.flush().unwrap();
        }
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
