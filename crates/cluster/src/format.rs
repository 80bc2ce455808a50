//! Versioned encodings of what the cluster stores and sends between nodes.
//!
//! - Stored values (log entries, Raft metadata, the applied marker): a format byte
//!   in front of the JSON. The first release wrote bare JSON, which never starts
//!   with that byte, so both are read.
//! - RPC payloads (Raft messages, forwarded proposals): the `format` field of the
//!   protobuf envelope, 0 (absent) from the first release, [`WIRE`] now; a peer one
//!   release older ignores the field and reads the same JSON.
//!
//! Within a format, new optional fields carry `#[serde(default)]` and unknown ones
//! are ignored, so a newer writer that only added fields is still read. A format a
//! node does not know is refused with a clear error, never misread.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Format of stored values written by this release.
pub const STORED: u8 = 2;
/// Format of RPC payloads written by this release.
pub const WIRE: u32 = 2;

pub fn store<T: Serialize>(v: &T) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = vec![STORED];
    serde_json::to_writer(&mut out, v)?;
    Ok(out)
}

pub fn load<T: DeserializeOwned>(b: &[u8]) -> Result<T, String> {
    match b.first() {
        Some(&STORED) => serde_json::from_slice(&b[1..]).map_err(|e| e.to_string()),
        Some(&f) if f < b' ' => Err(format!("stored format {f} is newer than this node reads")),
        _ => serde_json::from_slice(b).map_err(|e| e.to_string()),
    }
}

pub fn wire<T: Serialize>(v: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(v)
}

pub fn unwire<T: DeserializeOwned>(format: u32, b: &[u8]) -> Result<T, String> {
    match format {
        0 | WIRE => serde_json::from_slice(b).map_err(|e| e.to_string()),
        f => Err(format!("message format {f} is newer than this node reads")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_values_of_both_releases_are_read() {
        let v = vec![1u64, 2, 3];
        assert_eq!(load::<Vec<u64>>(&store(&v).unwrap()).unwrap(), v);
        assert_eq!(
            load::<Vec<u64>>(b"[1,2,3]").unwrap(),
            v,
            "first release: bare JSON"
        );
        assert!(
            load::<Vec<u64>>(&[9, b'[', b']']).is_err(),
            "unknown format refused"
        );
        assert!(unwire::<Vec<u64>>(7, b"[]").is_err());
        assert_eq!(unwire::<Vec<u64>>(0, b"[4]").unwrap(), vec![4]);
    }
}
