//! The tag-first reader reads what the derived writer writes, in any field order, and
//! refuses what is not a command.

use super::*;
use crate::{Credentials, NewContact, OfflineMessage, Override, PolicyKey};

fn every_variant() -> Vec<Command> {
    let u = || "alice".to_string();
    let c = || "bob@example.test".to_string();
    let contact = |user: &str| NewContact {
        user: user.into(),
        contact: c(),
        name: Some("Bob \"B\" \u{e9}".into()),
        groups: vec!["a\\b".into(), "".into()],
    };
    let one = vec![
        Command::Init {
            domain: "example.test".into(),
        },
        Command::SetSetting {
            key: "presence.availability_sharing".into(),
            value: "off".into(),
        },
        Command::ResetSetting { key: "k".into() },
        Command::CreateAccount {
            user: u(),
            credentials: Credentials::derive("alice", "example.test", "pw", 4096),
        },
        Command::DeleteAccount { user: u() },
        Command::SetCredentials {
            user: u(),
            credentials: Credentials::derive("alice", "example.test", "pw2", 4096),
        },
        Command::SetPolicy {
            user: u(),
            key: PolicyKey::ViewWithoutApproval,
            value: Override::Off,
        },
        Command::AddContacts {
            entries: vec![contact("alice"), contact("carol")],
        },
        Command::UpdateItem {
            user: u(),
            contact: c(),
            name: None,
            groups: vec![],
        },
        Command::RemoveContact {
            user: u(),
            contact: c(),
        },
        Command::Subscribe {
            user: u(),
            contact: c(),
        },
        Command::Approve {
            user: u(),
            requester: c(),
        },
        Command::Unsubscribe {
            user: u(),
            contact: c(),
        },
        Command::Revoke {
            user: u(),
            watcher: c(),
        },
        Command::OfflineEnqueue {
            user: u(),
            message: OfflineMessage {
                from: "bob@example.test/x".into(),
                stamp_ms: u64::MAX,
                payload: "{\"body\":\"hi\\n\"}".into(),
            },
        },
        Command::OfflineAck { user: u(), upto: 7 },
        Command::OfflineAckSeqs {
            user: u(),
            seqs: vec![1, 5, 9],
        },
    ];
    let mut all = one.clone();
    all.push(Command::Batch { commands: one });
    all
}

#[test]
fn what_the_writer_writes_is_read_back_unchanged() {
    let all = every_variant();
    for cmd in &all {
        let back: Command = serde_json::from_slice(&serde_json::to_vec(cmd).unwrap()).unwrap();
        assert_eq!(&back, cmd);
    }
    // A batch of batches' worth, from bytes as the log holds them.
    let wire = serde_json::to_vec(&all).unwrap();
    assert_eq!(serde_json::from_slice::<Vec<Command>>(&wire).unwrap(), all);
}

#[test]
fn the_tag_may_come_anywhere_and_unknown_fields_are_ignored() {
    for cmd in every_variant() {
        let value = serde_json::to_value(&cmd).unwrap();
        let unknown = "\"added_later\":{\"op\":\"init\"}";
        for json in crate::tag_first::other_writers_forms(&value, "op", unknown).unwrap() {
            let back: Command = serde_json::from_str(&json).unwrap();
            assert_eq!(back, cmd, "{json}");
        }
    }
}

#[test]
fn what_is_not_a_command_is_an_error() {
    for bad in [
        "{}",
        "{\"op\":\"no_such_op\"}",
        "{\"op\":\"delete_account\"}",
        "{\"user\":\"a\",\"op\":\"offline_ack\"}",
        "{\"op\":\"offline_ack\",\"user\":\"a\",\"upto\":-1}",
        "{\"op\":3,\"user\":\"a\"}",
        "{\"op\":\"batch\",\"commands\":[{\"op\":\"nope\"}]}",
        "[\"delete_account\",\"a\"]",
        "\"init\"",
    ] {
        assert!(serde_json::from_str::<Command>(bad).is_err(), "{bad}");
    }
}
