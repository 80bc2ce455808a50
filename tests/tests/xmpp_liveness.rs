//! Liveness with real XMPP clients on a 3-node cluster: a node killed with -9, a peer
//! that falls silent, clients that answer the server's pings and one that does not.

use std::time::{Duration, Instant};

use presenced_e2e::Cluster;
use presenced_e2e::xmpp::{Agent, jid};
use serde_json::json;

const PW: &str = "secret-pw-1";
const T: Duration = Duration::from_secs(10);

fn cluster_with(users: &[&str], extra: &str) -> Cluster {
    Cluster::with_users(users, PW, extra)
}

fn cluster(users: &[&str]) -> Cluster {
    cluster_with(users, "")
}

/// Provision `user` seeing `contact` (and `contact` letting `user` watch).
fn provision(c: &Cluster, user: &str, contact: &str) {
    c.ctl(0, &["roster", "add", user, contact]).ok();
}

#[test]
fn killed_node_users_go_unavailable_and_find_their_offline_messages_elsewhere() {
    let c = cluster(&["alice", "bob"]);
    let mut c = c;
    provision(&c, "alice", "bob");
    provision(&c, "bob", "alice");
    let mut alice = Agent::login(&c, 0, "alice", "a", PW);
    let mut bob = Agent::login(&c, 2, "bob", "b", PW);
    alice.available();
    bob.available();
    alice.expect_available("bob@example.test/b", T);

    // kill -9 the node holding bob's session: alice (another node) hears within 5 s.
    let t0 = Instant::now();
    c.kill(2);
    alice.expect_unavailable("bob@example.test/b", Duration::from_secs(5));
    let detected = t0.elapsed();
    assert!(detected < Duration::from_secs(5), "took {detected:?}");
    drop(bob);

    // Messages to bob are now stored (in Raft, on the two surviving nodes).
    alice.chat(&jid("bob"), "while you were away 1");
    alice.chat(&jid("bob"), "while you were away 2");
    alice.expect_none("an error", Duration::from_millis(500), |e| {
        e["type"] == "error"
    });

    // The node holding alice (and possibly the leader) dies too, then comes back:
    // the stored messages survive.
    c.kill(0);
    drop(alice);
    c.start_node(0);
    c.wait_healthy(0, Duration::from_secs(30));

    // bob reconnects to another node: roster and offline messages are there.
    let mut bob = Agent::login(&c, 1, "bob", "b", PW);
    let r = bob.roster();
    assert_eq!(r["items"][jid("alice")]["subscription"], "both", "{r}");
    bob.available();
    let m1 = bob.expect_body("while you were away 1", T);
    let m2 = bob.expect_body("while you were away 2", T);
    for m in [&m1, &m2] {
        assert!(
            m["delay"].as_str().is_some_and(|s| s.ends_with('Z')),
            "no delay stamp: {m}"
        );
        assert_eq!(m["from"], "alice@example.test/a");
    }
    // Delivered once: a second login does not get them again.
    bob.quit();
    let mut bob = Agent::login(&c, 0, "bob", "again", PW);
    bob.available();
    bob.expect_none(
        "a redelivered offline message",
        Duration::from_secs(2),
        |e| e["ev"] == "message" && e["body"].as_str().is_some_and(|b| b.starts_with("while")),
    );
}

#[test]
fn a_peer_that_falls_silent_is_declared_dead_and_its_sessions_go_unavailable() {
    // A partition, not a process death: the link stays open but nothing arrives. A fake
    // peer (node 9) announces a session of bob, then stops sending heartbeats.
    let c = cluster(&["alice", "bob"]);
    provision(&c, "alice", "bob");
    let mut alice = Agent::login(&c, 0, "alice", "a", PW);
    alice.available();
    let addr = c.nodes[0].cluster_addr();
    let (node1, transport) = (c.nodes[0].id, c.peer_transport(9));
    let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
    let peer = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            use presenced_proto::router::Frame;
            use presenced_proto::router::peer_client::PeerClient;
            let ep = presenced_tls::endpoint(&addr).unwrap();
            let ch = transport
                .connect(&ep, presenced_tls::Expect::Node(node1))
                .await
                .unwrap();
            let mut client = PeerClient::with_interceptor(ch, |mut r: tonic::Request<()>| {
                r.metadata_mut().insert(
                    presenced_proto::SECRET_HEADER,
                    presenced_e2e::SECRET.parse().unwrap(),
                );
                Ok(r)
            });
            // Written in the previous release's format (no `format` in the envelope):
            // a node reads a peer one release older.
            let hello = json!([{"e": "hello", "sessions": [{
                "user": "bob", "resource": "ghost", "sid": 1,
                "avail": {"show": "away", "status": "behind a partition", "priority": 0}
            }]}]);
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tx.send(Frame {
                from_node: 9,
                epoch: 1,
                events: hello.to_string().into_bytes(),
                format: 0,
            })
            .await
            .unwrap();
            let call = tokio::spawn(async move {
                client
                    .link(tokio_stream::wrappers::ReceiverStream::new(rx))
                    .await
            });
            // Hold the stream open (tx alive) without sending until the test is done.
            let _ = tokio::task::spawn_blocking(move || hold_rx.recv()).await;
            drop(tx);
            let _ = call.await;
        });
    });
    let p = alice.expect_available("bob@example.test/ghost", T);
    assert_eq!(p["status"], "behind a partition");
    let t0 = Instant::now();
    alice.expect_unavailable("bob@example.test/ghost", Duration::from_secs(8));
    let silent = t0.elapsed();
    // Declared dead after router.peer_dead_after_ms (3 s by default), not at once.
    assert!(
        silent >= Duration::from_millis(1500),
        "dropped too early: {silent:?}"
    );
    let _ = hold_tx.send(());
    let _ = peer.join();
}

#[test]
fn a_silent_client_is_pinged_and_kept_while_it_answers() {
    // The server pings a client silent for 1 s and closes a stream silent for 3 s:
    // slixmpp answers the XEP-0199 pings, so its session outlives the idle timeout.
    let c = cluster_with(
        &["alice", "bob"],
        "[xmpp]\nping_after_secs = 1\nidle_timeout_secs = 3\n",
    );
    let mut alice = Agent::login(&c, 0, "alice", "a", PW);
    let mut bob = Agent::login(&c, 0, "bob", "b", PW);
    alice.available();
    bob.available();
    alice.expect_none("a disconnection", Duration::from_secs(5), |e| {
        e["ev"] == "disconnected" || e["ev"] == "stream_error"
    });
    bob.chat(&jid("alice"), "still connected after 5 s of silence");
    alice.expect_body("still connected after 5 s of silence", T);
}

#[test]
fn a_client_that_ignores_pings_is_closed_after_the_idle_timeout() {
    let c = cluster_with(
        &["alice", "bob"],
        "[xmpp]\nping_after_secs = 1\nidle_timeout_secs = 3\n",
    );
    let mut bob = Agent::login(&c, 1, "bob", "b", PW);
    bob.available();
    let mut alice = Agent::spawn("alice/deaf@node1");
    alice.connect(&c, 0, "alice", "deaf", PW, json!({"ignore_pings": true}));
    alice.expect_session();
    alice.available();
    c.ctl(0, &["roster", "add", "bob", "alice"]).ok();
    bob.expect_available("alice@example.test/deaf", T);
    let t = Instant::now();
    alice.expect("the server's ping", T, |e| e["ev"] == "ping_ignored");
    let e = alice.expect("the idle timeout", T, |e| {
        e["ev"] == "stream_error" || e["ev"] == "disconnected"
    });
    if e["ev"] == "stream_error" {
        assert_eq!(e["condition"], "connection-timeout", "{e}");
    }
    let after = t.elapsed();
    assert!(after <= Duration::from_secs(5), "closed after {after:?}");
    // Its watchers see it go.
    bob.expect_unavailable("alice@example.test/deaf", T);
}
