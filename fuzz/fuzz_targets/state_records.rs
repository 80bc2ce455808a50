//! Stored state records (`State::load`): what a node reads back from its store at
//! start, in this release's record format or the previous release's.
//!
//! Input: records framed as (u32 BE length, key, u32 BE length, value), repeated (the
//! framing of the model's fixture); a cut-off tail is ignored.
//! Properties, beyond "no panic": a state that loads is written back (`records`) as
//! records that load to the same state, and those records are a fixed point.
#![no_main]

use presenced_fuzz::{bounded, unframe_records};
use presenced_model::State;

const MAX_INPUT: usize = 64 * 1024;

libfuzzer_sys::fuzz_target!(
    init: {
        presenced_fuzz::write_seeds_and_exit_if_asked(seeds);
    },
    |data: &[u8]| {
        let Some(data) = bounded(data, MAX_INPUT) else { return };
        let Ok(s) = State::load(unframe_records(data)) else { return };
        let records = s.records();
        let again = match State::load(records.clone()) {
            Ok(a) => a,
            Err(e) => panic!("a loaded state's own records do not load: {e}"),
        };
        assert!(again == s, "a loaded state changed on a trip through its records");
        assert_eq!(again.records(), records, "records are not a fixed point");
    }
);

/// The fixture (previous release), the same state written by this release, and the
/// state after each of the fixture's commands.
fn seeds() -> Vec<Vec<u8>> {
    use presenced_fuzz::{FIXTURE_COMMANDS, FIXTURE_RECORDS, frame_records};
    let mut out = vec![FIXTURE_RECORDS.to_vec()];
    let s = State::load(unframe_records(FIXTURE_RECORDS)).expect("fixture loads");
    out.push(frame_records(&s.records()));
    let mut s = State::default();
    for line in FIXTURE_COMMANDS.lines() {
        let c = serde_json::from_str(line).expect("fixture command");
        let _ = s.apply(&c);
        out.push(frame_records(
            &s.take_changes()
                .into_iter()
                .filter_map(|(k, v)| Some((k, v?)))
                .collect::<Vec<_>>(),
        ));
    }
    out
}
