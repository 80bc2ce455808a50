//! One record of the Raft log's segment files (format in `wal.rs`): u32 payload length,
//! u32 CRC-32 of index and payload, u64 index, payload; little-endian.

pub(super) const RECORD_HEAD: usize = 16;
/// No legal log entry comes near this; a larger length is damage, not an entry.
pub(super) const MAX_RECORD: u32 = 1 << 30;

fn crc(index: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&index.to_le_bytes());
    h.update(payload);
    h.finalize()
}

pub(super) fn encode(out: &mut Vec<u8>, index: u64, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc(index, payload).to_le_bytes());
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(payload);
}

/// One record parsed from `b` at `off`: (index, payload range), or why not.
pub(super) fn decode(
    b: &[u8],
    off: usize,
) -> std::result::Result<(u64, usize, usize), &'static str> {
    let head = b
        .get(off..off + RECORD_HEAD)
        .ok_or("a torn record header")?;
    let len = u32::from_le_bytes(head[0..4].try_into().expect("4 bytes"));
    let sum = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes"));
    let index = u64::from_le_bytes(head[8..16].try_into().expect("8 bytes"));
    if len > MAX_RECORD {
        return Err("a record length beyond any entry");
    }
    let start = off + RECORD_HEAD;
    let end = start + len as usize;
    let payload = b.get(start..end).ok_or("a torn record")?;
    if crc(index, payload) != sum {
        return Err("a record that fails its CRC");
    }
    Ok((index, start, end))
}
