//! Stored formats that last: an offline message this node cannot read is never
//! acknowledged away. It stays queued, is counted, and `presencectl troubleshoot`
//! lists it, while the readable messages around it are delivered once.

use std::time::Duration;

use presenced_e2e::xmpp::{Agent, jid};
use presenced_e2e::{Cluster, metric, with_secret};
use serde_json::json;

const PW: &str = "formats-pw";
const T: Duration = Duration::from_secs(10);

/// Propose a raw command through the cluster API (what a node of a later release
/// could have written).
fn propose(c: &Cluster, command: serde_json::Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use presenced_proto::raft::ProposeRequest;
        use presenced_proto::raft::cluster_client::ClusterClient;
        let ch = c.cluster_channel(0).await;
        let mut cluster = ClusterClient::with_interceptor(ch, with_secret);
        let r = cluster
            .propose(ProposeRequest {
                command: command.to_string().into_bytes(),
                format: 2,
                id: 0,
            })
            .await
            .expect("propose");
        let outcome: serde_json::Value = serde_json::from_slice(&r.into_inner().outcome).unwrap();
        assert!(outcome.get("Ok").is_some(), "{outcome}");
    });
}

#[test]
fn an_unreadable_offline_message_stays_queued_and_is_reported() {
    let c = Cluster::start(3);
    for u in ["alice", "carol"] {
        c.ctl(0, &["user", "add", u, "--password", PW]).ok();
    }
    let mut alice = Agent::login(&c, 0, "alice", "a", PW);
    alice.available();
    alice.chat(&jid("carol"), "first");
    // A payload of a format from the future, between two readable messages.
    propose(
        &c,
        json!({"op": "offline_enqueue", "user": "carol", "message": {
            "from": "alice@example.test/a", "stamp_ms": 1_795_000_000_000u64,
            "payload": "{\"v\": 99, \"body\": \"from the future\"}"
        }}),
    );
    alice.chat(&jid("carol"), "second");
    let t = c.ctl_json(1, &["troubleshoot"]);
    let unreadable = |t: &serde_json::Value| {
        t["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["problem"] == "offline_unreadable" && f["subject"] == jid("carol"))
            .count()
    };
    assert_eq!(unreadable(&t), 1, "{t}");

    let mut carol = Agent::login(&c, 2, "carol", "c", PW);
    carol.available();
    carol.expect_body("first", T);
    carol.expect_body("second", T);
    let m = c.metrics(2);
    assert!(
        metric(&m, "presenced_offline_unreadable_total").unwrap_or(0.0) >= 1.0,
        "counted"
    );
    carol.quit();
    // Still queued (and still reported) after the readable ones were acknowledged.
    std::thread::sleep(Duration::from_millis(500));
    let t = c.ctl_json(0, &["troubleshoot"]);
    assert_eq!(unreadable(&t), 1, "{t}");
    let mut carol = Agent::login(&c, 1, "carol", "c2", PW);
    carol.available();
    carol.barrier_from(&mut alice);
    carol.assert_none_yet("a redelivery", |e| {
        e["ev"] == "message" && matches!(e["body"].as_str(), Some("first" | "second"))
    });
}
