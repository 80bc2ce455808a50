//! Receipts and acknowledged forwarding (router `receipt`, `forward`): a message
//! someone answers for is handled only once a recipient's client has it or it is
//! stored, and one whose session goes away first is routed again, never lost.

use std::time::Duration;

use presenced_router::{Activity, Address, Delivery, handled};
use presenced_testkit::{TestCluster, chat};

/// Resolved within `t`?
async fn resolves_within(w: presenced_router::HandledWait, t: Duration) -> bool {
    tokio::time::timeout(t, w.wait()).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_message_is_handled_once_its_recipient_takes_it() {
    let c = TestCluster::start(3).await;
    for u in ["alice", "bob"] {
        c.user(u).await;
    }
    let alice = c.connect(0, "alice", "a").await;
    let mut bob = c.connect(2, "bob", "b").await;
    c.available(&bob, Activity::Available, 0).await;
    let (h, wait) = handled();
    alice
        .session()
        .send_message_tracked(chat(Address::user("bob"), "one"), Some(h))
        .await
        .unwrap();
    // Queued on node 3 for bob, but his client has not taken it.
    let mut wait = Box::pin(resolves_within(wait, Duration::from_secs(30)));
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut wait)
            .await
            .is_err(),
        "handled before bob's client had it"
    );
    bob.expect_body("one").await;
    assert!(wait.await, "handled once bob took it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_session_ends_before_taking_it_is_stored_not_lost() {
    let c = TestCluster::start(3).await;
    for u in ["alice", "carol"] {
        c.user(u).await;
    }
    let alice = c.connect(0, "alice", "a").await;
    let carol = c.connect(2, "carol", "c").await;
    c.available(&carol, Activity::Available, 0).await;
    let (h, wait) = handled();
    alice
        .session()
        .send_message_tracked(chat(Address::user("carol"), "in flight"), Some(h))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Carol's client goes away with the message still in her queue on node 3: node 3
    // answers that it was not taken, node 1 routes it again, into the offline queue.
    drop(carol);
    assert!(
        resolves_within(wait, Duration::from_secs(10)).await,
        "handled: stored offline"
    );
    let mut carol = c.connect(1, "carol", "c2").await;
    c.available(&carol, Activity::Available, 0).await;
    carol.expect_body("in flight").await;
    carol.barrier_from(&alice).await;
    carol.assert_none_yet(
        "a second copy",
        |d| matches!(d, Delivery::Message(m) if m.body.as_deref() == Some("in flight")),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_message_left_in_a_closed_session_goes_to_the_other_resource() {
    let c = TestCluster::start(1).await;
    for u in ["alice", "dave"] {
        c.user(u).await;
    }
    let alice = c.connect(0, "alice", "a").await;
    let d1 = c.connect(0, "dave", "one").await;
    let mut d2 = c.connect(0, "dave", "two").await;
    c.available(&d1, Activity::Available, 0).await;
    c.available(&d2, Activity::Available, 0).await;
    alice
        .session()
        .send_message(chat(Address::endpoint("dave", "one"), "to one"))
        .await
        .unwrap();
    drop(d1);
    // Addressed to a resource that is gone: a chat goes to the bare JID's sessions
    // (RFC 6121 §8.5.3.2.1).
    d2.expect_body("to one").await;
}
