//! The tag-first reader reads what serde's derived writer writes, and the same
//! objects with their fields in any order.

use super::*;
use crate::{Activity, Address, Message, MessageKind, PresenceState};

fn every_variant() -> Vec<PeerEvent> {
    let a = Availability {
        activity: Activity::Busy,
        note: Some("in a \"meeting\" \u{e9}".into()),
        preference: -2,
        extensions: vec![],
    };
    let mut m = Message::new(Address::user("bob"));
    m.from = Address::endpoint("alice", "a");
    m.kind = MessageKind::Chat;
    m.body = Some("hi \\ there \n".into());
    m.uid = 42;
    vec![
        PeerEvent::Hello {
            sessions: vec![SessionInfo {
                user: "alice".into(),
                resource: "a".into(),
                sid: 7,
                avail: Some(a.clone()),
            }],
        },
        PeerEvent::Up {
            user: "alice".into(),
            resource: "a".into(),
            sid: 7,
        },
        PeerEvent::Presence {
            user: "alice".into(),
            resource: "a".into(),
            avail: Some(a.clone()),
            note: None,
        },
        PeerEvent::Presence {
            user: "alice".into(),
            resource: "a".into(),
            avail: None,
            note: Some("gone".into()),
        },
        PeerEvent::Down {
            user: "alice".into(),
            resource: "a".into(),
            sid: 7,
        },
        PeerEvent::Deliver {
            user: "bob".into(),
            resource: "b".into(),
            delivery: Delivery::Presence {
                from: Address::endpoint("alice", "a"),
                state: PresenceState::Available(a),
            },
        },
        PeerEvent::Heartbeat,
        PeerEvent::Forward {
            user: "bob".into(),
            resource: "b".into(),
            sid: 9,
            id: u64::MAX,
            message: std::sync::Arc::new(m),
        },
        PeerEvent::Receipt { id: 3, done: true },
    ]
}

fn text<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap()
}

#[test]
fn what_the_writer_writes_is_read_back_unchanged() {
    let events = every_variant();
    let wire = serde_json::to_vec(&events).unwrap();
    let back: Vec<PeerEvent> = serde_json::from_slice(&wire).unwrap();
    assert_eq!(text(&back), text(&events));
    assert_eq!(format!("{back:?}"), format!("{events:?}"));
}

#[test]
fn the_tag_may_come_anywhere_and_unknown_fields_are_ignored() {
    for ev in every_variant() {
        let value = serde_json::to_value(&ev).unwrap();
        // A field a later release might add, then this release's fields.
        let unknown = "\"added_later\":[1,{\"x\":2}]";
        for json in presenced_model::tag_first::other_writers_forms(&value, "e", unknown).unwrap() {
            let back: PeerEvent = serde_json::from_str(&json).unwrap();
            assert_eq!(text(&back), text(&ev), "{json}");
        }
    }
}

#[test]
fn bad_events_are_errors_not_panics() {
    for bad in [
        "{}",
        "{\"e\":\"no_such_event\"}",
        "{\"user\":\"a\"}",
        "{\"e\":\"receipt\",\"id\":1}",
        "{\"id\":1,\"e\":\"receipt\"}",
        "{\"e\":7}",
        "{\"e\":\"receipt\",\"id\":\"one\",\"done\":true}",
        "[\"receipt\",1,true]",
        "\"heartbeat\"",
    ] {
        assert!(serde_json::from_str::<PeerEvent>(bad).is_err(), "{bad}");
    }
    // What an earlier release with the derived reader accepted is still accepted.
    let ok: PeerEvent = serde_json::from_str("{\"e\":\"heartbeat\",\"x\":1}").unwrap();
    assert!(matches!(ok, PeerEvent::Heartbeat));
}
