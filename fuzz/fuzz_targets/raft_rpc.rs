//! Raft RPC payloads and stored Raft values (`presenced_cluster::format`): what a
//! node decodes from a peer (AppendEntries, Vote and InstallSnapshot requests and
//! their replies, pre-votes and their answers, forwarded proposals and their
//! outcomes) and from its own store (log entries, the vote, log ids, membership).
//!
//! Input: byte 0 picks the message type, byte 1 the format (0, this release's, or an
//! unknown one); the rest is the payload.
//! Properties, beyond "no panic": unknown formats are refused; what decodes encodes
//! again to bytes that decode to the same value (the encoding is canonical after one
//! trip), both on the wire and in the store.
#![no_main]

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{Entry, LogId, StoredMembership, Vote};
use presenced_cluster::format;
use presenced_cluster::{Node, NodeId, PreVoteRequest, PreVoteResponse, TypeConfig};
use presenced_fuzz::bounded;
use presenced_model::{Command, Outcome};
use serde::Serialize;
use serde::de::DeserializeOwned;

const MAX_INPUT: usize = 64 * 1024;

fn rpc<T: Serialize + DeserializeOwned>(f: u32, b: &[u8]) {
    let Ok(x) = format::unwire::<T>(f, b) else {
        return;
    };
    assert!(f == 0 || f == format::WIRE, "format {f} decoded");
    let w = format::wire(&x).expect("a decoded message encodes");
    let y: T = format::unwire(format::WIRE, &w).expect("an encoded message decodes");
    assert_eq!(
        format::wire(&y).expect("encodes"),
        w,
        "wire encoding not stable"
    );
    // A peer of the previous release sends format 0: the same JSON.
    let z: T = format::unwire(0, &w).expect("format 0 reads this release's JSON");
    assert_eq!(format::wire(&z).expect("encodes"), w);
}

fn stored<T: Serialize + DeserializeOwned>(b: &[u8]) {
    let Ok(x) = format::load::<T>(b) else { return };
    if let Some(&f) = b.first() {
        assert!(f >= b' ' || f == format::STORED, "stored format {f} read");
    }
    let s = format::store(&x).expect("a loaded value stores");
    let y: T = format::load(&s).expect("a stored value loads");
    assert_eq!(
        format::store(&y).expect("stores"),
        s,
        "stored encoding not stable"
    );
}

type AppendReply = Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>;
type VoteReply = Result<VoteResponse<NodeId>, RaftError<NodeId>>;
type SnapshotReply =
    Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>;

libfuzzer_sys::fuzz_target!(
    init: {
        presenced_fuzz::write_seeds_and_exit_if_asked(seeds);
    },
    |data: &[u8]| {
        let Some(data) = bounded(data, MAX_INPUT) else { return };
        let [kind, f, payload @ ..] = data else { return };
        let f = match f % 4 {
            0 => 0,
            1 | 2 => format::WIRE,
            _ => 3 + u32::from(*f),
        };
        match kind % 14 {
            0 => rpc::<AppendEntriesRequest<TypeConfig>>(f, payload),
            1 => rpc::<VoteRequest<NodeId>>(f, payload),
            2 => rpc::<InstallSnapshotRequest<TypeConfig>>(f, payload),
            3 => rpc::<Command>(f, payload),
            4 => rpc::<AppendReply>(f, payload),
            5 => rpc::<VoteReply>(f, payload),
            6 => rpc::<SnapshotReply>(f, payload),
            7 => rpc::<Outcome>(f, payload),
            8 => stored::<Entry<TypeConfig>>(payload),
            9 => stored::<Option<Vote<NodeId>>>(payload),
            10 => stored::<Option<LogId<NodeId>>>(payload),
            11 => stored::<StoredMembership<NodeId, Node>>(payload),
            12 => rpc::<PreVoteRequest>(f, payload),
            _ => rpc::<PreVoteResponse>(f, payload),
        }
    }
);

/// Messages as nodes write them: entries carrying the model fixture's commands.
fn seeds() -> Vec<Vec<u8>> {
    use openraft::{CommittedLeaderId, EntryPayload, Membership};
    use std::collections::{BTreeMap, BTreeSet};

    let commands: Vec<Command> = presenced_fuzz::FIXTURE_COMMANDS
        .lines()
        .map(|l| serde_json::from_str(l).expect("fixture command"))
        .collect();
    let lid = |i| LogId::new(CommittedLeaderId::new(2, 1), i);
    let nodes = BTreeMap::from([
        (1, Node::new("127.0.0.1:7101")),
        (2, Node::new("127.0.0.1:7102")),
        (3, Node::new("127.0.0.1:7103")),
    ]);
    let membership = Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes);
    let mut entries: Vec<Entry<TypeConfig>> = vec![
        Entry {
            log_id: lid(1),
            payload: EntryPayload::Blank,
        },
        Entry {
            log_id: lid(2),
            payload: EntryPayload::Membership(membership.clone()),
        },
    ];
    for (i, c) in commands.iter().enumerate() {
        entries.push(Entry {
            log_id: lid(3 + i as u64),
            payload: EntryPayload::Normal(c.clone()),
        });
    }
    let vote = Vote::new_committed(2, 1);
    let append = AppendEntriesRequest::<TypeConfig> {
        vote,
        prev_log_id: Some(lid(0)),
        entries: entries.clone(),
        leader_commit: Some(lid(2)),
    };
    let meta = openraft::SnapshotMeta {
        last_log_id: Some(lid(9)),
        last_membership: StoredMembership::new(Some(lid(2)), membership.clone()),
        snapshot_id: "2-1-9-1".into(),
    };
    let snap = InstallSnapshotRequest::<TypeConfig> {
        vote,
        meta,
        offset: 0,
        data: presenced_fuzz::FIXTURE_RECORDS[..64].to_vec(),
        done: false,
    };
    let w = |kind: u8, bytes: Vec<u8>| {
        let mut s = vec![kind, 1];
        s.extend_from_slice(&bytes);
        s
    };
    let mut out = vec![
        w(0, format::wire(&append).unwrap()),
        w(
            1,
            format::wire(&VoteRequest::new(Vote::new(3, 2), Some(lid(9)))).unwrap(),
        ),
        w(2, format::wire(&snap).unwrap()),
        w(
            4,
            format::wire(&AppendReply::Ok(AppendEntriesResponse::Success)).unwrap(),
        ),
        w(
            4,
            format::wire(&AppendReply::Ok(AppendEntriesResponse::Conflict)).unwrap(),
        ),
        w(
            5,
            format::wire(&VoteReply::Ok(VoteResponse::new(vote, Some(lid(9)), true))).unwrap(),
        ),
        w(
            6,
            format::wire(&SnapshotReply::Ok(InstallSnapshotResponse { vote })).unwrap(),
        ),
        w(
            7,
            format::wire(&Outcome::Err(presenced_model::Refusal::UnknownUser(
                "x".into(),
            )))
            .unwrap(),
        ),
        w(9, format::store(&Some(vote)).unwrap()),
        w(10, format::store(&Some(lid(5))).unwrap()),
        w(
            11,
            format::store(&StoredMembership::new(Some(lid(2)), membership)).unwrap(),
        ),
        w(
            12,
            format::wire(&PreVoteRequest {
                candidate: 3,
                last_log_id: Some(lid(9)),
            })
            .unwrap(),
        ),
        w(
            13,
            format::wire(&PreVoteResponse {
                granted: false,
                reason: "a leader spoke 12 ms ago".into(),
            })
            .unwrap(),
        ),
    ];
    for c in &commands {
        out.push(w(3, format::wire(c).unwrap()));
    }
    for e in &entries {
        out.push(w(8, format::store(e).unwrap()));
        // The first release stored bare JSON.
        out.push(w(8, serde_json::to_vec(e).unwrap()));
    }
    out
}
