//! Snapshot files (`presenced_cluster::snapshot::Reader`): a node's own snapshot at
//! start, and one a leader sent, read as an install reads it, records into
//! `State::load`.
//!
//! Input: a snapshot file (`PSNAP001`, header, records); byte 0 of the input also
//! picks where the property check cuts the rebuilt file.
//! Properties, beyond "no panic": a file that reads is rebuilt from what was read (the
//! documented format, with the record count) and reads back the same; that file cut
//! short anywhere is refused (the count makes even a cut at a record boundary show).
#![no_main]

use presenced_cluster::snapshot::{Meta, Reader};
use presenced_fuzz::bounded;
use presenced_model::State;

const MAX_INPUT: usize = 64 * 1024;
const MAX_RECORDS: usize = 4096;

type Records = Vec<(Vec<u8>, Vec<u8>)>;

fn read(b: &[u8]) -> Result<(Meta, Records), String> {
    let (meta, rd) = Reader::open(b)?;
    let mut recs = Vec::new();
    for r in rd.take(MAX_RECORDS + 1) {
        recs.push(r?);
    }
    Ok((meta, recs))
}

fn build(meta: &Meta, recs: &[(Vec<u8>, Vec<u8>)], count: bool) -> Vec<u8> {
    let mut header = serde_json::to_vec(meta).expect("meta serialises");
    if count {
        assert_eq!(header.pop(), Some(b'}'));
        header.extend_from_slice(format!(",\"records\":{}}}", recs.len()).as_bytes());
        header.extend_from_slice(b"      ");
    }
    let mut out = b"PSNAP001".to_vec();
    out.extend_from_slice(&(header.len() as u32).to_be_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&presenced_fuzz::frame_records(recs));
    out
}

fn meta_json(m: &Meta) -> String {
    serde_json::to_string(m).expect("meta serialises")
}

libfuzzer_sys::fuzz_target!(
    init: {
        presenced_fuzz::write_seeds_and_exit_if_asked(seeds);
    },
    |data: &[u8]| {
        let Some(data) = bounded(data, MAX_INPUT) else { return };
        let Ok((meta, recs)) = read(data) else { return };
        if recs.len() > MAX_RECORDS {
            return;
        }
        // What installing it does with the records.
        let _ = State::load(recs.clone());

        let file = build(&meta, &recs, true);
        let (m2, r2) = read(&file).expect("a rebuilt snapshot reads");
        assert_eq!(meta_json(&m2), meta_json(&meta), "snapshot meta changed");
        assert_eq!(r2, recs, "snapshot records changed");
        let legacy = build(&meta, &recs, false);
        assert_eq!(read(&legacy).expect("a count-less snapshot reads").1, recs);

        let cut = usize::from(data[data.len() - 1]) * file.len() / 256;
        assert!(read(&file[..cut]).is_err(), "a snapshot cut at {cut} of {} read", file.len());
    }
);

/// Snapshot files of the model fixture's state, with and without the record count.
fn seeds() -> Vec<Vec<u8>> {
    use openraft::{CommittedLeaderId, LogId, Membership, StoredMembership};
    use presenced_cluster::Node;
    use std::collections::{BTreeMap, BTreeSet};
    let s = State::load(presenced_fuzz::unframe_records(
        presenced_fuzz::FIXTURE_RECORDS,
    ))
    .expect("fixture loads");
    let nodes = BTreeMap::from([
        (1, Node::new("127.0.0.1:7101")),
        (2, Node::new("127.0.0.1:7102")),
    ]);
    let m = Membership::new(vec![BTreeSet::from([1, 2])], nodes);
    let lid = LogId::new(CommittedLeaderId::new(3, 1), 42);
    let meta = Meta {
        last_log_id: Some(lid),
        last_membership: StoredMembership::new(Some(lid), m),
        snapshot_id: "3-1-42-7".into(),
    };
    let recs = s.records();
    vec![
        build(&meta, &recs, true),
        build(&meta, &recs, false),
        build(&meta, &recs[..2], true),
        build(&meta, &[], true),
    ]
}
