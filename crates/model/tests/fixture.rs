//! Data written by an earlier release must load: `fixtures/state-v1.records` holds the
//! state records (as the state machine persists them and snapshots carry them) and
//! `fixtures/commands-v1.jsonl` Raft commands as the log stored them, both written by
//! the release before versioned records. `cargo test -p presenced-model --test
//! fixture -- --ignored write_fixture` rewrites them with the current code (only do
//! that for a new fixture next to the old ones, never over them).

use std::path::PathBuf;

use presenced_model::{
    Command, Credentials, NewContact, OfflineMessage, Override, PolicyKey, State, Subscription,
};

const D: &str = "example.test";

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The commands that built the fixture's state.
fn commands() -> Vec<Command> {
    let mut cmds = vec![Command::Init { domain: D.into() }];
    for u in ["alice", "bob", "carol"] {
        cmds.push(Command::CreateAccount {
            user: u.into(),
            credentials: Credentials::derive(u, D, "fixture-pw", 16),
        });
    }
    let add = |user: &str, contact: &str, group: Option<&str>| NewContact {
        user: user.into(),
        contact: contact.into(),
        name: Some(format!("{contact} as {user} calls it")),
        groups: group.into_iter().map(str::to_string).collect(),
    };
    cmds.extend([
        Command::SetSetting {
            key: "max_contact_list_size".into(),
            value: "300".into(),
        },
        Command::SetSetting {
            key: "availability_sharing".into(),
            value: "off".into(),
        },
        Command::SetPolicy {
            user: "bob".into(),
            key: PolicyKey::AvailabilitySharing,
            value: Override::On,
        },
        Command::AddContacts {
            entries: vec![
                add("alice", "bob@example.test", Some("Team")),
                add("alice", "friend@elsewhere.test", None),
            ],
        },
        Command::Subscribe {
            user: "carol".into(),
            contact: "alice@example.test".into(),
        },
        Command::OfflineEnqueue {
            user: "carol".into(),
            message: OfflineMessage {
                from: "alice@example.test/phone".into(),
                stamp_ms: 1_795_000_000_000,
                payload: r#"{"from":"alice@example.test/phone","to":"carol@example.test","id":"m1","kind":"chat","body":"while you were out","subject":null,"thread":null,"addresses":[],"delay":null,"no_store":false}"#.into(),
            },
        },
    ]);
    cmds
}

fn frame(records: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        out.extend_from_slice(&(k.len() as u32).to_be_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(v);
    }
    out
}

fn unframe(mut b: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let take = |b: &mut &[u8]| {
        let n = u32::from_be_bytes(b[..4].try_into().unwrap()) as usize;
        let v = b[4..4 + n].to_vec();
        *b = &b[4 + n..];
        v
    };
    while !b.is_empty() {
        let k = take(&mut b);
        let v = take(&mut b);
        out.push((k, v));
    }
    out
}

#[test]
#[ignore = "writes the fixture files"]
fn write_fixture() {
    let mut s = State::default();
    let mut log = String::new();
    for c in commands() {
        assert!(s.apply(&c).0.is_ok(), "{c:?}");
        log.push_str(&serde_json::to_string(&c).unwrap());
        log.push('\n');
    }
    std::fs::create_dir_all(dir()).unwrap();
    std::fs::write(dir().join("state-v1.records"), frame(&s.records())).unwrap();
    std::fs::write(dir().join("commands-v1.jsonl"), log).unwrap();
}

fn check(s: &State) {
    assert_eq!(s.domain(), Some(D));
    assert_eq!(s.settings().max_contact_list_size.to_string(), "300");
    assert!(!s.settings().availability_sharing);
    assert!(s.sharing_for("bob") && !s.sharing_for("alice"));
    let alice = s.user("alice").expect("alice");
    let bob_item = &alice.roster.items["bob@example.test"];
    assert_eq!(bob_item.subscription, Subscription::To);
    assert!(bob_item.groups.contains("Team"));
    assert!(alice.roster.items["friend@elsewhere.test"].ask);
    assert!(alice.roster.pending_in.contains("carol@example.test"));
    assert!(alice.account.credentials.verify_password("fixture-pw"));
    let carol = s.user("carol").expect("carol");
    let (_, m) = carol
        .offline
        .messages
        .iter()
        .next()
        .expect("offline message");
    assert!(m.payload.contains("while you were out"));
    assert_eq!(s.user_count(), 3);
}

#[test]
fn records_of_the_previous_release_load() {
    let bytes = std::fs::read(dir().join("state-v1.records")).expect("fixture");
    let s = State::load(unframe(&bytes)).expect("the previous release's records load");
    check(&s);
    // Written again by this release, they load to the same state.
    let again = State::load(s.records()).unwrap();
    assert_eq!(again, s);
}

#[test]
fn commands_of_the_previous_release_apply() {
    let text = std::fs::read_to_string(dir().join("commands-v1.jsonl")).expect("fixture");
    let mut s = State::default();
    for line in text.lines() {
        let c: Command = serde_json::from_str(line).expect("an old command decodes");
        assert!(s.apply(&c).0.is_ok(), "{c:?}");
    }
    check(&s);
}
