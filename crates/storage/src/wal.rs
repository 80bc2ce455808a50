//! The Raft log as append-only segment files: `raft-log/<first index>.wal`.
//!
//! A log append is one `pwrite` at the end of the active segment and becomes durable
//! with one `fdatasync` of that file ([`Wal::sync`]), however many appends it covers.
//! (Before, the log was a sled tree and every sync a flush of all of sled.)
//!
//! Format (version 1), all integers little-endian:
//! - segment header, 24 bytes: magic `PRSDWAL\0`, format version (u32), 4 zero bytes,
//!   the first index not purged (u64; 0: nothing purged, as index 0 is a real entry);
//! - then records: payload length (u32), CRC-32 of index and payload (u32), index
//!   (u64), payload. Indexes are consecutive within and across segments.
//!
//! Recovery ([`Wal::open`]): a record that is torn or fails its CRC in the last
//! segment is where a crash cut the unsynced tail: the file is truncated there (those
//! entries were never reported durable). Anywhere else, or a gap between segments, is
//! damage: the open fails naming the file and offset. A segment is synced before the
//! next one is started, so only the last can have a torn tail.
//!
//! Purging writes the purge point into the first kept segment's header before older
//! segments are deleted; an open skips records below the highest point it finds, and
//! deletes segments wholly below it.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::{Result, StoreError};
use StoreError::Corrupt as corrupt;
use record::{MAX_RECORD, RECORD_HEAD, decode, encode};

mod record;

const MAGIC: &[u8; 8] = b"PRSDWAL\0";
const VERSION: u32 = 1;
const HEADER: u64 = 24;
const PURGED_AT: u64 = 16;
/// A segment is closed once it holds this much (a record may end past it).
pub const SEGMENT_BYTES: u64 = 64 << 20;

fn io(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Io(format!("{what} {}: {e}", path.display()))
}

fn segment_name(first: u64) -> String {
    format!("{first:020}.wal")
}

struct Segment {
    id: u64,
    path: PathBuf,
    file: Arc<File>,
    len: u64,
}

#[derive(Clone, Copy)]
struct Loc {
    seg: u64,
    off: u64,
    len: u32,
}

struct Inner {
    dir: PathBuf,
    /// In order; the last is the one appended to.
    segments: VecDeque<Segment>,
    next_id: u64,
    /// Index of `locs[0]`; when the log is empty, the index the next append should have.
    first: u64,
    locs: VecDeque<Loc>,
    /// A segment was created or deleted since the directory was last synced.
    dir_dirty: bool,
    segment_bytes: u64,
}

/// The log's segment files under one directory. Shared between threads.
pub struct Wal {
    inner: Mutex<Inner>,
}

impl Wal {
    /// Open (or create) the log in `dir`, repairing a torn tail.
    pub fn open(dir: &Path) -> Result<Wal> {
        Self::open_with(dir, SEGMENT_BYTES)
    }

    /// [`Wal::open`], closing segments at `segment_bytes` (tests use small ones).
    pub fn open_with(dir: &Path, segment_bytes: u64) -> Result<Wal> {
        fs::create_dir_all(dir).map_err(|e| io("creating", dir, e))?;
        let mut names: Vec<(u64, PathBuf)> = Vec::new();
        for ent in fs::read_dir(dir).map_err(|e| io("listing", dir, e))? {
            let ent = ent.map_err(|e| io("listing", dir, e))?;
            let name = ent.file_name().to_string_lossy().into_owned();
            if let Some(n) = name
                .strip_suffix(".wal")
                .and_then(|n| n.parse::<u64>().ok())
            {
                names.push((n, ent.path()));
            }
        }
        names.sort();
        let mut inner = Inner {
            dir: dir.to_path_buf(),
            segments: VecDeque::new(),
            next_id: 0,
            first: 0,
            locs: VecDeque::new(),
            dir_dirty: false,
            segment_bytes: segment_bytes.max(HEADER + 1),
        };
        // The purge point (first index kept): the highest any header records.
        let mut contents = Vec::with_capacity(names.len());
        let mut keep_from = 0u64;
        let count = names.len();
        for (k, (first, path)) in names.into_iter().enumerate() {
            // Headers first (one segment's bytes at a time are read below).
            let mut b = Vec::with_capacity(HEADER as usize);
            File::open(&path)
                .and_then(|f| f.take(HEADER).read_to_end(&mut b))
                .map_err(|e| io("reading", &path, e))?;
            let blank = b.len() < HEADER as usize || b[0..8].iter().all(|&x| x == 0);
            if blank && k + 1 == count {
                // Created, then a crash before its header was synced: holds nothing.
                tracing::warn!(file = %path.display(), "removing a raft log segment with a torn header");
                fs::remove_file(&path).map_err(|e| io("removing", &path, e))?;
                inner.dir_dirty = true;
                continue;
            }
            if b.len() < HEADER as usize || &b[0..8] != MAGIC {
                return Err(corrupt(format!(
                    "raft log segment {} has no valid header",
                    path.display()
                )));
            }
            let version = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes"));
            if version > VERSION {
                return Err(corrupt(format!(
                    "raft log segment {} has format {version}; this release reads up to {VERSION}",
                    path.display()
                )));
            }
            keep_from = keep_from.max(u64::from_le_bytes(b[16..24].try_into().expect("8 bytes")));
            contents.push((first, path));
        }
        let count = contents.len();
        let mut expected: Option<u64> = None;
        for (k, (first, path)) in contents.into_iter().enumerate() {
            let last_segment = k + 1 == count;
            let b = fs::read(&path).map_err(|e| io("reading", &path, e))?;
            if let Some(e) = expected
                && e != first
                && e < keep_from
                && first <= keep_from
            {
                // Everything before is purged: a gap there is what a purge leaves.
                expected = Some(first);
            }
            if expected.is_some_and(|e| e != first) {
                return Err(corrupt(format!(
                    "raft log segment {} starts at index {first}, but the one before ends at {}",
                    path.display(),
                    expected.unwrap_or(0).saturating_sub(1)
                )));
            }
            let mut next = first;
            let mut off = HEADER as usize;
            let mut locs = Vec::new();
            while off < b.len() {
                if b[off..].iter().take(RECORD_HEAD).all(|&x| x == 0) {
                    // The preallocated, never written rest of the segment.
                    break;
                }
                let bad = match decode(&b, off) {
                    Ok((index, _, _)) if index != next => Some("an index out of sequence"),
                    Ok((_, _, end)) => {
                        if next >= keep_from {
                            locs.push(Loc {
                                seg: 0,
                                off: off as u64,
                                len: (end - off - RECORD_HEAD) as u32,
                            });
                        }
                        next += 1;
                        off = end;
                        None
                    }
                    Err(why) => Some(why),
                };
                if let Some(why) = bad {
                    if !last_segment {
                        return Err(corrupt(format!(
                            "raft log segment {} is damaged at byte {off}: {why}",
                            path.display()
                        )));
                    }
                    tracing::warn!(file = %path.display(), offset = off, reason = why,
                        dropped_bytes = b.len() - off,
                        "truncating the raft log's unsynced tail after a crash");
                    let f = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(|e| io("opening", &path, e))?;
                    cut(&f, off as u64, segment_bytes).map_err(|e| io("truncating", &path, e))?;
                    break;
                }
            }
            expected = Some(next);
            if next <= keep_from && !last_segment {
                // Wholly purged: a purge was cut short before deleting it.
                fs::remove_file(&path).map_err(|e| io("removing", &path, e))?;
                inner.dir_dirty = true;
                continue;
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| io("opening", &path, e))?;
            let id = inner.next_id;
            inner.next_id += 1;
            if inner.locs.is_empty() {
                inner.first = first.max(keep_from).min(next);
            }
            inner
                .locs
                .extend(locs.into_iter().map(|l| Loc { seg: id, ..l }));
            inner.segments.push_back(Segment {
                id,
                path,
                file: Arc::new(file),
                len: off as u64,
            });
        }
        if inner.locs.is_empty() {
            inner.first = expected.unwrap_or(0).max(keep_from);
        }
        Ok(Wal {
            inner: Mutex::new(inner),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Append entries (consecutive indexes, following the last one; any index when the
    /// log is empty). Durable after the next [`Wal::sync`].
    pub fn append(&self, entries: Vec<(u64, Vec<u8>)>) -> Result<()> {
        let mut g = self.lock();
        let mut buf = Vec::new();
        let mut pending: Vec<(u64, u32)> = Vec::new();
        for (index, payload) in entries {
            if g.locs.is_empty() && pending.is_empty() && index != g.first {
                g.restart_at(index)?;
            }
            let expected = g.first + (g.locs.len() + pending.len()) as u64;
            if index != expected {
                return Err(corrupt(format!(
                    "raft log append of index {index}, but the next index is {expected}"
                )));
            }
            if payload.len() > MAX_RECORD as usize {
                return Err(corrupt(format!(
                    "a raft log entry of {} bytes",
                    payload.len()
                )));
            }
            let limit = g.segment_bytes;
            let full = g.segments.back().is_some_and(|s| s.len >= limit);
            if g.segments.is_empty() || full {
                g.write_pending(&mut buf, &mut pending)?;
                g.roll(index)?;
            }
            let at = buf.len() as u64;
            encode(&mut buf, index, &payload);
            pending.push((at, payload.len() as u32));
            if buf.len() as u64 >= limit {
                g.write_pending(&mut buf, &mut pending)?;
            }
        }
        g.write_pending(&mut buf, &mut pending)
    }

    /// Make every append so far durable.
    pub fn sync(&self) -> Result<()> {
        let (file, path, dir) = {
            let mut g = self.lock();
            let dir = std::mem::take(&mut g.dir_dirty).then(|| g.dir.clone());
            match g.segments.back() {
                Some(s) => (Some(s.file.clone()), s.path.clone(), dir),
                None => (None, g.dir.clone(), dir),
            }
        };
        if let Some(f) = file {
            f.sync_data().map_err(|e| io("syncing", &path, e))?;
        }
        if let Some(d) = dir {
            sync_dir(&d)?;
        }
        Ok(())
    }

    /// Entries with `from <= index < to` (`None`: to the end) that the log holds.
    pub fn read_range(&self, from: u64, to: Option<u64>) -> Result<Vec<(u64, Vec<u8>)>> {
        let g = self.lock();
        let end = g.first + g.locs.len() as u64;
        let from = from.max(g.first);
        let to = to.unwrap_or(u64::MAX).min(end);
        let mut out = Vec::with_capacity(to.saturating_sub(from) as usize);
        let mut i = from;
        while i < to {
            // One read per run of records in the same segment.
            let start = g.locs[(i - g.first) as usize];
            let mut j = i;
            let mut stop = start.off;
            while j < to {
                let l = g.locs[(j - g.first) as usize];
                if l.seg != start.seg {
                    break;
                }
                stop = l.off + RECORD_HEAD as u64 + u64::from(l.len);
                j += 1;
            }
            let seg = g.segment(start.seg)?;
            let mut b = vec![0u8; (stop - start.off) as usize];
            seg.file
                .read_exact_at(&mut b, start.off)
                .map_err(|e| io("reading", &seg.path, e))?;
            let mut off = 0;
            for index in i..j {
                let (got, s, e) = decode(&b, off).map_err(|why| {
                    corrupt(format!(
                        "raft log segment {} is damaged at byte {}: {why}",
                        seg.path.display(),
                        start.off + off as u64
                    ))
                })?;
                if got != index {
                    return Err(corrupt(format!(
                        "raft log segment {} holds index {got} where {index} belongs",
                        seg.path.display()
                    )));
                }
                out.push((index, b[s..e].to_vec()));
                off = e;
            }
            i = j;
        }
        Ok(out)
    }

    /// The last entry, if the log holds any.
    pub fn last_entry(&self) -> Result<Option<(u64, Vec<u8>)>> {
        let end = {
            let g = self.lock();
            g.first + g.locs.len() as u64
        };
        Ok(self.read_range(end.saturating_sub(1), None)?.pop())
    }

    /// Delete entries with `index >= from`, durably.
    pub fn truncate_from(&self, from: u64) -> Result<()> {
        let mut g = self.lock();
        let end = g.first + g.locs.len() as u64;
        if from >= end {
            return Ok(());
        }
        if from <= g.first {
            // An empty segment named `from` keeps where the log goes on.
            g.restart_at(from)?;
        } else {
            let at = g.locs[(from - g.first) as usize];
            let limit = g.segment_bytes;
            while g.segments.back().is_some_and(|s| s.id > at.seg) {
                let s = g.segments.pop_back().expect("a segment");
                remove(&s.path)?;
            }
            let s = g
                .segments
                .back_mut()
                .expect("the segment holding the entry");
            cut(&s.file, at.off, limit).map_err(|e| io("truncating", &s.path, e))?;
            s.len = at.off;
            let keep = (from - g.first) as usize;
            g.locs.truncate(keep);
        }
        g.next_id = g.segments.back().map_or(0, |s| s.id + 1);
        let dir = g.dir.clone();
        drop(g);
        sync_dir(&dir)
    }

    /// Delete entries with `index <= upto`, durably.
    pub fn purge_upto(&self, upto: u64) -> Result<()> {
        let mut g = self.lock();
        if upto < g.first {
            return Ok(());
        }
        let end = g.first + g.locs.len() as u64;
        if upto + 1 >= end {
            // Everything goes: an empty segment that records the purge point.
            g.restart_at(upto + 1)?;
            let s = g.segments.back().expect("the fresh segment");
            write_purged(s, upto)?;
        } else {
            let keep = (upto + 1 - g.first) as usize;
            let at = g.locs[keep];
            let s = g.segment(at.seg)?;
            write_purged(s, upto)?;
            while g.segments.front().is_some_and(|s| s.id < at.seg) {
                let s = g.segments.pop_front().expect("a segment");
                remove(&s.path)?;
            }
            g.locs.drain(..keep);
            g.first = upto + 1;
        }
        let dir = g.dir.clone();
        drop(g);
        sync_dir(&dir)
    }

    /// Encoded sizes of the entries, in index order.
    pub fn sizes(&self) -> Vec<(u64, u32)> {
        let g = self.lock();
        let first = g.first;
        g.locs
            .iter()
            .enumerate()
            .map(|(k, l)| (first + k as u64, l.len))
            .collect()
    }

    /// Bytes in the segment files.
    pub fn bytes(&self) -> u64 {
        self.lock().segments.iter().map(|s| s.len).sum()
    }
}

impl Inner {
    fn segment(&self, id: u64) -> Result<&Segment> {
        let base = self.segments.front().map_or(0, |s| s.id);
        self.segments
            .get(id.wrapping_sub(base) as usize)
            .filter(|s| s.id == id)
            .ok_or_else(|| corrupt(format!("raft log segment {id} is not open")))
    }

    /// Write what `append` gathered to the active segment.
    fn write_pending(&mut self, buf: &mut Vec<u8>, pending: &mut Vec<(u64, u32)>) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let s = self.segments.back_mut().expect("an active segment");
        s.file
            .write_all_at(buf, s.len)
            .map_err(|e| io("writing", &s.path, e))?;
        let (seg, base) = (s.id, s.len);
        s.len += buf.len() as u64;
        self.locs.extend(pending.drain(..).map(|(at, len)| Loc {
            seg,
            off: base + at,
            len,
        }));
        buf.clear();
        Ok(())
    }

    /// Start a new segment whose first entry is `first`, after syncing the current one
    /// (so only the last segment can ever have a torn tail).
    fn roll(&mut self, first: u64) -> Result<()> {
        if let Some(s) = self.segments.back() {
            s.file.sync_data().map_err(|e| io("syncing", &s.path, e))?;
        }
        let path = self.dir.join(segment_name(first));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| io("creating", &path, e))?;
        let mut head = Vec::with_capacity(HEADER as usize);
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&VERSION.to_le_bytes());
        head.extend_from_slice(&[0; 12]);
        file.write_all_at(&head, 0)
            .map_err(|e| io("writing", &path, e))?;
        preallocate(&file, HEADER, self.segment_bytes);
        let id = self.next_id;
        self.next_id += 1;
        self.segments.push_back(Segment {
            id,
            path,
            file: Arc::new(file),
            len: HEADER,
        });
        self.dir_dirty = true;
        Ok(())
    }

    /// The log is empty (or becomes so): drop every segment and start one at `first`.
    fn restart_at(&mut self, first: u64) -> Result<()> {
        let old: Vec<Segment> = self.segments.drain(..).collect();
        self.locs.clear();
        self.first = first;
        self.roll(first)?;
        let fresh = self.segments.back().expect("the fresh segment");
        fresh
            .file
            .sync_data()
            .map_err(|e| io("syncing", &fresh.path, e))?;
        sync_dir(&self.dir)?;
        for s in old {
            if s.path != fresh.path {
                remove(&s.path)?;
            }
        }
        Ok(())
    }
}

/// Allocate the segment's blocks up to `limit` at once: appends then overwrite
/// allocated zeros, and `fdatasync` has no file size to journal (on ext4 about 0.09 ms
/// where a growing file took 0.15). Only speed depends on it: a file system that
/// cannot (or a full disk) leaves the file to grow as it is written.
fn preallocate(f: &File, from: u64, limit: u64) {
    if limit > from
        && let Err(e) =
            rustix::fs::fallocate(f, rustix::fs::FallocateFlags::empty(), from, limit - from)
    {
        tracing::debug!(error = %e, "raft log segment not preallocated");
    }
}

/// Drop a segment's records from byte `at` on (zeros from there), durably.
fn cut(f: &File, at: u64, limit: u64) -> std::io::Result<()> {
    f.set_len(at)?;
    preallocate(f, at, limit);
    f.sync_data()
}

fn write_purged(s: &Segment, upto: u64) -> Result<()> {
    s.file
        .write_all_at(&(upto + 1).to_le_bytes(), PURGED_AT)
        .and_then(|_| s.file.sync_data())
        .map_err(|e| io("recording the purge point in", &s.path, e))
}

fn remove(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("removing", path, e)),
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("syncing the directory", dir, e))
}

#[cfg(test)]
#[path = "wal_tests.rs"]
mod tests;
