//! Snapshot files: the state's records streamed to and from a file beside the store,
//! so a snapshot is built, sent in chunks and installed without a second copy of the
//! state in memory.
//!
//! Format `PSNAP001` (big-endian lengths): magic, u32 header length, the JSON header,
//! then each record as (u32 key length, key, u32 value length, value) to the end.
//! The header is openraft's `SnapshotMeta` plus, from this release on, `records`: the
//! record count, so a file cut at a record boundary is refused rather than read as a
//! smaller state. The count is written last, into room reserved in the header (JSON
//! allows the trailing blanks), so the file is written in one pass. The previous
//! release ignores the field and reads these files as its own, and its snapshots (kept
//! inside the store, without a count) are read here and moved to a file when a node of
//! this release first opens the store; snapshots therefore cross a rolling upgrade in
//! both directions.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use openraft::SnapshotMeta;

use crate::{Node, NodeId};

pub type Meta = SnapshotMeta<NodeId, Node>;
type Record = (Vec<u8>, Vec<u8>);

const MAGIC: &[u8; 8] = b"PSNAP001";
/// Blanks reserved after the header JSON for the record count written at the end.
const COUNT_ROOM: usize = 24;

/// The header's own field, read beside `SnapshotMeta` (which ignores it). Not a
/// flattened struct: serde's flatten cannot read the membership's integer map keys.
#[derive(serde::Deserialize)]
struct Count {
    #[serde(default)]
    records: Option<u64>,
}

fn header_bytes(meta: &Meta, records: Option<u64>, len: Option<usize>) -> Result<Vec<u8>, String> {
    let mut h = serde_json::to_vec(meta).map_err(|e| e.to_string())?;
    if let Some(n) = records
        && h.last() == Some(&b'}')
    {
        h.pop();
        h.extend_from_slice(format!(",\"records\":{n}}}").as_bytes());
    }
    let len = len.unwrap_or(h.len() + COUNT_ROOM);
    if h.len() > len {
        return Err("snapshot header outgrew its room".into());
    }
    h.resize(len, b' ');
    Ok(h)
}
/// Largest header or record part a reader accepts (records are far smaller).
const MAX_PART: u32 = 256 * 1024 * 1024;

/// The snapshot directory of one node.
pub(crate) struct Files {
    dir: PathBuf,
}

impl Files {
    /// Open `<data_dir>/snapshots`, creating it, and remove files left by a build or a
    /// transfer that a crash interrupted.
    pub(crate) fn open(data_dir: &Path) -> std::io::Result<Files> {
        let dir = data_dir.join("snapshots");
        std::fs::create_dir_all(&dir)?;
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("incoming-") || name.starts_with("building") {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(Files { dir })
    }

    fn current(&self) -> PathBuf {
        self.dir.join("current.snap")
    }

    /// Write a snapshot of `records` as the current one (to a temporary file, fsynced,
    /// then renamed over the previous). Returns its size in bytes.
    pub(crate) fn write(
        &self,
        meta: &Meta,
        records: impl Iterator<Item = Result<Record, String>>,
    ) -> Result<u64, String> {
        let tmp = self.dir.join("building.snap");
        let io = |e: std::io::Error| format!("writing snapshot {}: {e}", tmp.display());
        let file = File::create(&tmp).map_err(io)?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        let header = header_bytes(meta, None, None)?;
        w.write_all(MAGIC).map_err(io)?;
        w.write_all(&(header.len() as u32).to_be_bytes())
            .map_err(io)?;
        w.write_all(&header).map_err(io)?;
        let mut count = 0u64;
        for r in records {
            let (k, v) = r?;
            for part in [&k, &v] {
                let n = u32::try_from(part.len())
                    .ok()
                    .filter(|n| *n < MAX_PART)
                    .ok_or("a state record is too large for a snapshot")?;
                w.write_all(&n.to_be_bytes()).map_err(io)?;
                w.write_all(part).map_err(io)?;
            }
            count += 1;
        }
        let mut file = w.into_inner().map_err(|e| io(e.into_error()))?;
        let header = header_bytes(meta, Some(count), Some(header.len()))?;
        file.seek(SeekFrom::Start(12)).map_err(io)?;
        file.write_all(&header).map_err(io)?;
        file.sync_all().map_err(io)?;
        let bytes = file.metadata().map_err(io)?.len();
        drop(file);
        self.adopt(&tmp).map_err(io)?;
        Ok(bytes)
    }

    /// A fresh file to receive a snapshot into, and its path.
    pub(crate) fn incoming(&self) -> std::io::Result<(PathBuf, File)> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = self.dir.join(format!("incoming-{nanos}.snap"));
        let f = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok((path, f))
    }

    /// Make the file at `path` (fully written and synced) the current snapshot.
    pub(crate) fn adopt(&self, path: &Path) -> std::io::Result<()> {
        std::fs::rename(path, self.current())?;
        File::open(&self.dir)?.sync_all()
    }

    /// Store `blob` (a whole snapshot in either format) as the current snapshot.
    pub(crate) fn put_blob(&self, blob: &[u8]) -> std::io::Result<()> {
        let tmp = self.dir.join("building.snap");
        let mut f = File::create(&tmp)?;
        f.write_all(blob)?;
        f.sync_all()?;
        drop(f);
        self.adopt(&tmp)
    }

    pub(crate) fn has_current(&self) -> bool {
        self.current().exists()
    }

    /// The current snapshot's metadata and the file, positioned at its start.
    pub(crate) fn open_current(&self) -> Result<Option<(Meta, File)>, String> {
        let path = self.current();
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let (meta, _) = Reader::open(BufReader::new(&mut f))?;
        f.seek(SeekFrom::Start(0))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Some((meta, f)))
    }
}

/// Streams the records of a snapshot in either format.
pub struct Reader<R: Read> {
    r: R,
    ended: bool,
    /// Records the header says follow (absent in the previous release's snapshots).
    want: Option<u64>,
    count: u64,
}

impl<R: Read> Reader<R> {
    /// Read the header; the records follow through the iterator.
    pub fn open(mut r: R) -> Result<(Meta, Reader<R>), String> {
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic)
            .map_err(|_| "not a presenced snapshot (too short)".to_string())?;
        if &magic != MAGIC {
            return Err("not a presenced snapshot".into());
        }
        let n = read_len(&mut r)?.ok_or("snapshot is truncated in its header")?;
        let mut header = vec![0u8; n as usize];
        r.read_exact(&mut header)
            .map_err(|_| "snapshot is truncated in its header".to_string())?;
        let meta: Meta =
            serde_json::from_slice(&header).map_err(|e| format!("snapshot header: {e}"))?;
        let count: Count =
            serde_json::from_slice(&header).map_err(|e| format!("snapshot header: {e}"))?;
        Ok((
            meta,
            Reader {
                r,
                ended: false,
                want: count.records,
                count: 0,
            },
        ))
    }

    fn next_record(&mut self) -> Result<Option<Record>, String> {
        let truncated = || "snapshot is truncated".to_string();
        let klen = match read_len_raw(&mut self.r)? {
            None => {
                return match self.want {
                    Some(want) if want != self.count => Err(format!(
                        "snapshot is truncated: {} of {want} records",
                        self.count
                    )),
                    _ => Ok(None),
                };
            }
            Some(n) if n >= MAX_PART => return Err("snapshot record is too large".into()),
            Some(n) => n,
        };
        let mut k = vec![0u8; klen as usize];
        self.r.read_exact(&mut k).map_err(|_| truncated())?;
        let vlen = read_len(&mut self.r)?.ok_or_else(truncated)?;
        let mut v = vec![0u8; vlen as usize];
        self.r.read_exact(&mut v).map_err(|_| truncated())?;
        self.count += 1;
        Ok(Some((k, v)))
    }
}

impl<R: Read> Iterator for Reader<R> {
    type Item = Result<Record, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.ended {
            return None;
        }
        match self.next_record() {
            Ok(Some(r)) => Some(Ok(r)),
            Ok(None) => {
                self.ended = true;
                None
            }
            Err(e) => {
                self.ended = true;
                Some(Err(e))
            }
        }
    }
}

/// A u32 length, or `None` at a clean end of input.
fn read_len_raw(r: &mut impl Read) -> Result<Option<u32>, String> {
    let mut b = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut b[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err("snapshot is truncated".into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading snapshot: {e}")),
        }
    }
    Ok(Some(u32::from_be_bytes(b)))
}

fn read_len(r: &mut impl Read) -> Result<Option<u32>, String> {
    match read_len_raw(r)? {
        Some(n) if n >= MAX_PART => Err("snapshot part is too large".into()),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Meta {
        let nodes = std::collections::BTreeMap::from([(1, Node::new("127.0.0.1:1"))]);
        let m = openraft::Membership::new(vec![std::collections::BTreeSet::from([1])], nodes);
        SnapshotMeta {
            last_log_id: None,
            last_membership: openraft::StoredMembership::new(None, m),
            snapshot_id: "x".into(),
        }
    }

    fn records(n: u32) -> Vec<Record> {
        (0..n)
            .map(|i| (i.to_be_bytes().to_vec(), vec![7u8; (i % 50) as usize]))
            .collect()
    }

    #[test]
    fn files_round_trip_and_refuse_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::open(dir.path()).unwrap();
        assert!(files.open_current().unwrap().is_none());
        let recs = records(10_000);
        let bytes = files
            .write(&meta(), recs.clone().into_iter().map(Ok))
            .unwrap();
        let (m, f) = files.open_current().unwrap().unwrap();
        assert_eq!(m.snapshot_id, "x");
        assert_eq!(f.metadata().unwrap().len(), bytes);
        let (_, rd) = Reader::open(BufReader::new(f)).unwrap();
        assert_eq!(rd.collect::<Result<Vec<_>, _>>().unwrap(), recs);

        let whole = std::fs::read(files.current()).unwrap();
        // Cut anywhere, even at a record boundary: refused.
        let last = 4 + 4 + 4 + 49;
        for cut in [whole.len() - 1, whole.len() - last, whole.len() / 2, 30] {
            let rd = Reader::open(&whole[..cut]);
            let res = rd.and_then(|(_, rd)| rd.collect::<Result<Vec<_>, _>>());
            assert!(res.is_err(), "cut at {cut} accepted");
        }
        assert!(Reader::open(&b"garbage!garbage"[..]).is_err());
    }

    #[test]
    fn previous_release_blob_is_read() {
        let header = serde_json::to_vec(&meta()).unwrap();
        let mut blob = MAGIC.to_vec();
        blob.extend_from_slice(&(header.len() as u32).to_be_bytes());
        blob.extend_from_slice(&header);
        for (k, v) in records(3) {
            blob.extend_from_slice(&(k.len() as u32).to_be_bytes());
            blob.extend_from_slice(&k);
            blob.extend_from_slice(&(v.len() as u32).to_be_bytes());
            blob.extend_from_slice(&v);
        }
        let (_, rd) = Reader::open(&blob[..]).unwrap();
        assert_eq!(rd.collect::<Result<Vec<_>, _>>().unwrap(), records(3));
        let dir = tempfile::tempdir().unwrap();
        let files = Files::open(dir.path()).unwrap();
        files.put_blob(&blob).unwrap();
        assert!(files.has_current());
        assert_eq!(files.open_current().unwrap().unwrap().0.snapshot_id, "x");
    }
}
