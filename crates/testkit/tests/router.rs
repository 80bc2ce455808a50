//! The router tested without a protocol: three in-process nodes, neutral test
//! clients, the router's own vocabulary.

use std::time::Duration;

use presenced_model::Command;
use presenced_router::{
    Activity, Address, Delivery, Extension, ExtensionFormat, MessageKind, PresenceState, Query,
    QueryKind, RouteError, SubscriptionKind,
};
use presenced_testkit::{TestCluster, body_of, chat};

fn presence_from(d: &Delivery, from: &Address) -> Option<PresenceState> {
    match d {
        Delivery::Presence { from: f, state } if f == from => Some(state.clone()),
        _ => None,
    }
}

async fn three(users: &[&str]) -> TestCluster {
    let c = TestCluster::start(3).await;
    for u in users {
        c.user(u).await;
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_crosses_nodes_and_follows_visibility() {
    let c = three(&["alice", "bob"]).await;
    c.contact("alice", "bob").await;
    let mut alice = c.connect(0, "alice", "a").await;
    let mut bob = c.connect(2, "bob", "b").await;
    c.available(&alice, Activity::Available, 0).await;
    bob.available(Activity::OnThePhone, Some("call"), 5);
    let bob_b = Address::endpoint("bob", "b");
    // The sender gets its own presence back (RFC 6121 §4.2.2), in neutral terms.
    bob.expect("own presence", |d| presence_from(d, &bob_b).is_some())
        .await;
    let seen = alice
        .expect("bob's availability", |d| presence_from(d, &bob_b).is_some())
        .await;
    let Delivery::Presence {
        state: PresenceState::Available(a),
        ..
    } = seen
    else {
        panic!("{seen:?}");
    };
    assert_eq!(
        (a.activity, a.note.as_deref(), a.preference),
        (Activity::OnThePhone, Some("call"), 5)
    );
    // Sharing off: alice sees bob unavailable, without any note.
    c.setting("availability_sharing", "off").await;
    alice
        .expect("unavailable", |d| {
            presence_from(d, &bob_b) == Some(PresenceState::Unavailable { note: None })
        })
        .await;
    // Bob's later changes reach only bob.
    bob.available(Activity::Busy, Some("secret"), 5);
    bob.expect("own change", |d| {
        matches!(presence_from(d, &bob_b), Some(PresenceState::Available(a)) if a.activity == Activity::Busy)
    })
    .await;
    alice.barrier_from(&bob).await;
    alice.assert_none_yet("bob's unshared availability", |d| {
        matches!(presence_from(d, &bob_b), Some(PresenceState::Available(_)))
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_fork_then_stick_and_keep_extensions() {
    let c = three(&["alice", "bob"]).await;
    let mut alice = c.connect(0, "alice", "a").await;
    let mut b1 = c.connect(1, "bob", "b1").await;
    let mut b2 = c.connect(2, "bob", "b2").await;
    c.available(&alice, Activity::Available, 0).await;
    c.available(&b1, Activity::Available, 0).await;
    c.available(&b2, Activity::Available, 0).await;
    let mut m = chat(Address::user("bob"), "to all");
    m.extensions.push(Extension {
        format: ExtensionFormat::Xml,
        key: "http://jabber.org/protocol/chatstates".into(),
        data: "<active xmlns='http://jabber.org/protocol/chatstates'/>".into(),
    });
    alice.session().send_message(m.clone()).await.unwrap();
    for b in [&mut b1, &mut b2] {
        let got = b.expect_body("to all").await;
        assert_eq!(got.extensions, m.extensions, "extensions carried unchanged");
        assert_eq!(
            got.from,
            Address::endpoint("alice", "a"),
            "from stamped by the router"
        );
    }
    b2.session()
        .send_message(chat(Address::user("alice"), "reply"))
        .await
        .unwrap();
    alice.expect_body("reply").await;
    alice
        .session()
        .send_message(chat(Address::user("bob"), "sticky"))
        .await
        .unwrap();
    b2.expect_body("sticky").await;
    b1.barrier_from(&alice).await;
    b1.assert_none_yet("the sticky message", |d| body_of(d) == Some("sticky"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_messages_wait_for_the_next_login_and_go_once() {
    let c = three(&["alice", "carol"]).await;
    let alice = c.connect(0, "alice", "a").await;
    c.available(&alice, Activity::Available, 0).await;
    alice
        .session()
        .send_message(chat(Address::user("carol"), "later"))
        .await
        .unwrap();
    let mut m = chat(Address::user("carol"), "headline");
    m.kind = MessageKind::Headline;
    alice.session().send_message(m).await.unwrap();
    let mut carol = c.connect(2, "carol", "c").await;
    c.available(&carol, Activity::Available, 0).await;
    let got = carol.expect_body("later").await;
    assert!(got.delay.is_some(), "delivered with its delay stamp");
    carol.disconnect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut carol = c.connect(1, "carol", "c2").await;
    c.available(&carol, Activity::Available, 0).await;
    carol.barrier_from(&alice).await;
    carol.assert_none_yet("a redelivery or the headline", |d| {
        matches!(body_of(d), Some("later" | "headline"))
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_come_from_the_applied_log() {
    let c = three(&["alice", "bob"]).await;
    c.contact("alice", "bob").await;
    c.contact("bob", "alice").await;
    let alice = c.connect(0, "alice", "a").await;
    let mut bob = c.connect(2, "bob", "b").await;
    c.available(&alice, Activity::Available, 0).await;
    c.available(&bob, Activity::Available, 0).await;
    // An operator's removal, proposed on node 2: nobody's session asked for it.
    c.nodes[1]
        .node
        .write(Command::RemoveContact {
            user: "alice".into(),
            contact: "bob@example.test".into(),
        })
        .await
        .unwrap()
        .unwrap();
    for kind in [
        SubscriptionKind::Unsubscribe,
        SubscriptionKind::Unsubscribed,
    ] {
        bob.expect("a notice from alice", |d| {
            matches!(d, Delivery::Subscription { from, kind: k } if *from == Address::user("alice") && *k == kind)
        })
        .await;
    }
    bob.expect("alice's presence taken back", |d| {
        presence_from(d, &Address::endpoint("alice", "a"))
            == Some(PresenceState::Unavailable { note: None })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_reach_endpoints_only_where_availability_is_visible() {
    let c = three(&["alice", "bob", "carol"]).await;
    c.contact("alice", "bob").await;
    let alice = c.connect(0, "alice", "a").await;
    let mut bob = c.connect(2, "bob", "b").await;
    let carol = c.connect(1, "carol", "c").await;
    c.available(&bob, Activity::Available, 0).await;
    let q = |id: &str| Query {
        from: Address::Server,
        to: Address::endpoint("bob", "b"),
        id: id.into(),
        kind: QueryKind::Get,
        payload: vec![],
    };
    alice.session().send_query(q("q1")).unwrap();
    bob.expect("alice's query", |d| {
        matches!(d, Delivery::Query(q) if q.id == "q1" && q.from == Address::endpoint("alice", "a"))
    })
    .await;
    assert!(matches!(
        carol.session().send_query(q("q2")),
        Err(RouteError::NotDeliverable(_))
    ));
    let mut ghost = q("q3");
    ghost.to = Address::endpoint("bob", "ghost");
    assert!(matches!(
        alice.session().send_query(ghost),
        Err(RouteError::NotDeliverable(_))
    ));
    // A remote domain: refused by egress with the federation error.
    let mut remote = q("q4");
    remote.to = presenced_router::Domains {
        users: "example.test".into(),
        rooms: None,
    }
    .classify(Some("x"), "elsewhere.test", Some("r"));
    assert!(matches!(
        alice.session().send_query(remote),
        Err(RouteError::RemoteDomain(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_takes_its_sessions_with_it() {
    let mut c = three(&["alice", "bob"]).await;
    c.contact("alice", "bob").await;
    let mut alice = c.connect(0, "alice", "a").await;
    let bob = c.connect(2, "bob", "b").await;
    c.available(&alice, Activity::Available, 0).await;
    c.available(&bob, Activity::Away, 0).await;
    let bob_b = Address::endpoint("bob", "b");
    alice
        .expect("bob available", |d| {
            matches!(presence_from(d, &bob_b), Some(PresenceState::Available(_)))
        })
        .await;
    c.stop(2).await;
    alice
        .expect("bob unavailable after his node stopped", |d| {
            presence_from(d, &bob_b) == Some(PresenceState::Unavailable { note: None })
        })
        .await;
    drop(bob);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directed_presence_is_re_decided_when_sharing_flips() {
    let c = three(&["alice", "carol"]).await;
    let alice = c.connect(0, "alice", "a").await;
    let mut carol = c.connect(2, "carol", "c").await;
    c.available(&alice, Activity::Available, 0).await;
    c.available(&carol, Activity::Available, 0).await;
    let alice_a = Address::endpoint("alice", "a");
    alice
        .session()
        .directed_presence(
            &Address::user("carol"),
            presenced_router::Presence::Available(presenced_router::Availability {
                activity: Activity::Chatty,
                ..Default::default()
            }),
        )
        .unwrap();
    carol
        .expect("directed availability", |d| {
            matches!(
                presence_from(d, &alice_a),
                Some(PresenceState::Available(_))
            )
        })
        .await;
    c.setting("availability_sharing", "off").await;
    carol
        .expect("taken back when sharing goes off", |d| {
            presence_from(d, &alice_a) == Some(PresenceState::Unavailable { note: None })
        })
        .await;
}
