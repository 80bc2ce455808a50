//! Proposed commands, decoded as a follower forwards them (`format::unwire`) and
//! applied to the replicated state (`State::apply`), starting from the model's fixture
//! state (three accounts, rosters, a pending request, an offline message).
//!
//! Input: one JSON command per line (up to 8), applied in order.
//! Properties, beyond "no panic" (debug assertions are on, so `apply`'s own checks
//! run): a command survives the wire unchanged; `apply` is deterministic; a refused
//! command changes nothing; the invariants hold after every command; the records the
//! store is given after each apply (`take_changes`) rebuild exactly the state, and so
//! does a snapshot of it (`records`).
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use presenced_cluster::format;
use presenced_fuzz::{FIXTURE_RECORDS, bounded, unframe_records};
use presenced_model::{Command, State};

const MAX_INPUT: usize = 16 * 1024;

fn base() -> &'static (State, BTreeMap<Vec<u8>, Vec<u8>>) {
    static B: OnceLock<(State, BTreeMap<Vec<u8>, Vec<u8>>)> = OnceLock::new();
    B.get_or_init(|| {
        let s = State::load(unframe_records(FIXTURE_RECORDS)).expect("fixture loads");
        let stored = s.records().into_iter().collect();
        (s, stored)
    })
}

libfuzzer_sys::fuzz_target!(
    init: {
        presenced_fuzz::write_seeds_and_exit_if_asked(seeds);
    },
    |data: &[u8]| {
        let Some(data) = bounded(data, MAX_INPUT) else { return };
        let (s0, stored0) = base();
        let mut s = s0.clone();
        let mut stored = stored0.clone();
        for line in data.split(|&b| b == b'\n').take(8) {
            let Ok(cmd) = format::unwire::<Command>(0, line) else { continue };
            let wired = format::wire(&cmd).expect("a command encodes");
            let back: Command = format::unwire(format::WIRE, &wired).expect("decodes");
            assert_eq!(back, cmd, "command changed on the wire");

            let before = s.clone();
            let (out, _events) = s.apply(&cmd);
            let mut twin = before.clone();
            let (out2, _) = twin.apply(&cmd);
            assert_eq!(out, out2, "apply is not deterministic");
            assert!(twin == s, "apply is not deterministic");
            if out.is_err() {
                assert!(s == before, "a refused command changed the state: {cmd:?}");
            }
            if let Err(e) = s.check_invariants() {
                panic!("invariant broken by {cmd:?}: {e}");
            }
            for (k, v) in s.take_changes() {
                match v {
                    Some(v) => stored.insert(k, v),
                    None => stored.remove(&k),
                };
            }
            let reloaded = State::load(stored.clone()).expect("stored records load");
            assert!(reloaded == s, "stored records differ from the state after {cmd:?}");
        }
        let snap = State::load(s.records()).expect("a snapshot loads");
        assert!(snap == s, "a snapshot differs from the state");
    }
);

/// The fixture's commands, one per seed, and all of them in one.
fn seeds() -> Vec<Vec<u8>> {
    let lines: Vec<&str> = presenced_fuzz::FIXTURE_COMMANDS.lines().collect();
    let mut out: Vec<Vec<u8>> = lines.iter().map(|l| l.as_bytes().to_vec()).collect();
    let extra = [
        r#"{"op":"delete_account","user":"bob"}"#,
        r#"{"op":"remove_contact","user":"alice","contact":"bob@example.test"}"#,
        r#"{"op":"approve","user":"alice","requester":"carol@example.test"}"#,
        r#"{"op":"offline_ack","user":"carol","upto":1}"#,
        r#"{"op":"offline_ack_seqs","user":"carol","seqs":[0,1,7]}"#,
        r#"{"op":"revoke","user":"bob","watcher":"alice@example.test"}"#,
        r#"{"op":"unsubscribe","user":"alice","contact":"bob@example.test"}"#,
        r#"{"op":"update_item","user":"alice","contact":"bob@example.test","name":"B","groups":["x","y"]}"#,
        r#"{"op":"subscribe","user":"bob","contact":"carol@example.test"}"#,
        r#"{"op":"reset_setting","key":"max_contact_list_size"}"#,
    ];
    out.extend(extra.iter().map(|l| l.as_bytes().to_vec()));
    let batch = format!(r#"{{"op":"batch","commands":[{}]}}"#, lines[1..3].join(","));
    out.push(batch.into_bytes());
    out.push(lines[4..].join("\n").into_bytes());
    out
}
