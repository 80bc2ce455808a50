//! Peer-link frames (`presenced_router::wire`): the event batch of one frame as a
//! peer sends it, in this release's format (3), the previous release's (2) or the
//! one before (0/1).
//!
//! Input: byte 0 picks the format (0, 1, 2, 3, or a format this node does not read)
//! and whether the cluster has a room domain; the rest is the batch.
//! Properties, beyond "no panic": a format this node does not know is refused; what
//! decodes re-encodes and decodes to the same events in this release's format, and in
//! the older format it came in to what a peer of that format is sent
//! (`wire::downgrade`: forwarded messages as deliveries, no receipts), which for a
//! format 0/1 batch is all of it.
#![no_main]

use presenced_fuzz::bounded;
use presenced_router::Domains;
use presenced_router::peer::PeerEvent;
use presenced_router::wire;

const MAX_INPUT: usize = 64 * 1024;

fn text(v: &[PeerEvent]) -> String {
    serde_json::to_string(v).expect("peer events serialise")
}

fn domains(rooms: bool) -> Domains {
    Domains {
        users: "example.test".into(),
        rooms: rooms.then(|| "rooms.example.test".into()),
    }
}

libfuzzer_sys::fuzz_target!(
    init: {
        presenced_fuzz::write_seeds_and_exit_if_asked(seeds);
    },
    |data: &[u8]| {
        let Some(data) = bounded(data, MAX_INPUT) else { return };
        let Some((&sel, bytes)) = data.split_first() else { return };
        let format = match sel & 0x3 {
            3 => 3 + u32::from(sel >> 2),
            f => u32::from(f),
        };
        let d = domains(sel & 0x40 != 0);
        let Ok(events) = wire::decode(format, &d, bytes) else { return };
        assert!(format <= wire::FORMAT, "format {format} decoded");

        // This release's format says everything.
        let again = wire::decode(wire::FORMAT, &d, &wire::encode(&events))
            .expect("what this node encodes it decodes");
        assert_eq!(text(&again), text(&events), "format {} round trip", wire::FORMAT);

        // A batch that came in an older format is said again in it as such a peer
        // reads it. (Found by fuzzing when the format went to 3: a format 2 batch was
        // said again in format 0, which has no note on unavailable presence.)
        if format < wire::FORMAT {
            let said = wire::downgrade(&events);
            if format < wire::FORMAT_2 {
                assert_eq!(text(&said), text(&events), "a format {format} batch holds more than format 2 says");
            }
            let old = wire::decode(format, &d, &wire::encode_for(format, &d, &events))
                .expect("what this node encodes for an old peer it decodes");
            assert_eq!(text(&old), text(&said), "format {format} round trip");
        }
        assert_eq!(wire::encode_for(wire::FORMAT, &d, &events), wire::encode(&events));
    }
);

/// Batches as peers write them: this release's encoder and the older releases'.
fn seeds() -> Vec<Vec<u8>> {
    use presenced_router::{
        Activity, Address, Availability, Delivery, Message, MessageKind, PresenceState,
    };
    let a = Availability {
        activity: Activity::Away,
        note: Some("lunch".into()),
        preference: 3,
        extensions: vec![],
    };
    let mut m = Message::new(Address::user("bob"));
    m.from = Address::endpoint("alice", "phone");
    m.kind = MessageKind::Chat;
    m.body = Some("hi & <bye>".into());
    m.thread = Some("t1".into());
    let batches: Vec<Vec<PeerEvent>> = vec![
        vec![PeerEvent::Heartbeat],
        vec![PeerEvent::Up {
            user: "alice".into(),
            resource: "phone".into(),
            sid: 7,
        }],
        vec![
            PeerEvent::Presence {
                user: "alice".into(),
                resource: "phone".into(),
                avail: Some(a.clone()),
                note: None,
            },
            PeerEvent::Presence {
                user: "alice".into(),
                resource: "desk".into(),
                avail: None,
                note: Some("gone".into()),
            },
            PeerEvent::Down {
                user: "alice".into(),
                resource: "desk".into(),
                sid: 9,
            },
        ],
        vec![
            PeerEvent::Deliver {
                user: "bob".into(),
                resource: "b".into(),
                delivery: Delivery::Message(Box::new(m.clone())),
            },
            PeerEvent::Deliver {
                user: "bob".into(),
                resource: "b".into(),
                delivery: Delivery::Presence {
                    from: Address::endpoint("alice", "phone"),
                    state: PresenceState::Available(a.clone()),
                },
            },
            PeerEvent::Deliver {
                user: "bob".into(),
                resource: "b".into(),
                delivery: Delivery::Replaced,
            },
            PeerEvent::Deliver {
                user: "bob".into(),
                resource: "b".into(),
                delivery: Delivery::Close {
                    reason: "shutdown".into(),
                },
            },
        ],
        vec![
            PeerEvent::Forward {
                user: "bob".into(),
                resource: "b".into(),
                sid: 3,
                id: 41,
                message: std::sync::Arc::new(m.clone()),
            },
            PeerEvent::Receipt { id: 41, done: true },
            PeerEvent::Receipt {
                id: 42,
                done: false,
            },
        ],
    ];
    let d = domains(false);
    let mut out = Vec::new();
    for b in &batches {
        // Selector 3 is format 3, 2 and 0 the formats of the same number.
        for (sel, format) in [(3u8, wire::FORMAT), (2, wire::FORMAT_2), (0, 0)] {
            let mut s = vec![sel];
            s.extend_from_slice(&wire::encode_for(format, &d, b));
            out.push(s);
        }
    }
    out
}
