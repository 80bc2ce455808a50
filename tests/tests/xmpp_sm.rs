//! XEP-0198 stream management against real nodes: the protocol as a strict client
//! sees it (raw XML), and what its acknowledgements promise: a message the server
//! acknowledged is delivered even when the recipient's node is killed with it in
//! flight, and one a recipient never acknowledged is routed again when its session
//! ends. The sender is slixmpp with its own xep_0198 plugin.

use std::net::Ipv4Addr;
use std::time::Duration;

use presenced_e2e::hostile::{PW, Tls, login, plain, runtime, starttls, tls_connector_for};
use presenced_e2e::xmpp::{Agent, jid, stream_header};
use presenced_e2e::{Cluster, Opts, metric};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(10);
const NS: &str = "urn:xmpp:sm:3";
const LOCAL: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);

fn cluster(n: usize, users: &[&str]) -> Cluster {
    let c = Cluster::start_with(n, Opts::default());
    for u in users {
        c.ctl(0, &["user", "add", u, "--password", PW]).ok();
    }
    c
}

/// slixmpp with stream management, available.
fn sm_agent(c: &Cluster, node: usize, user: &str, resource: &str) -> Agent {
    let mut a = Agent::spawn(&format!("{user}/{resource}"));
    a.connect(c, node, user, resource, PW, json!({"sm": true}));
    a.expect_session();
    a.expect("sm_enabled", T, |v| v["ev"] == "sm_enabled");
    a.available();
    a
}

fn acked_ids(a: &mut Agent, within: Duration, want: &[String]) -> Vec<String> {
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + within;
    while got.len() < want.len() && std::time::Instant::now() < deadline {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let v = a.try_expect(left, |v: &Value| {
            v["ev"] == "acked" && want.iter().any(|w| v["id"] == w.as_str())
        });
        match v {
            Some(v) => got.push(v["id"].as_str().unwrap().to_string()),
            None => break,
        }
    }
    got
}

/// A raw session with stream management enabled right after binding (before initial
/// presence), which never acknowledges anything.
async fn raw_sm_session(c: &Cluster, node: usize, user: &str) -> Tls {
    let tls = tls_connector_for(c, node);
    let mut r = login(LOCAL, c.nodes[node].xmpp, &tls, user, "raw")
        .await
        .unwrap();
    r.send(&format!("<enable xmlns='{NS}'/>")).await.unwrap();
    r.until(&["<enabled"], T).await.unwrap();
    r
}

#[test]
fn stream_management_to_the_letter() {
    let c = cluster(1, &["alice", "bob"]);
    let rt = runtime();
    let port = c.nodes[0].xmpp;
    let tls = tls_connector_for(&c, 0);
    rt.block_on(async {
        let mut r = starttls(LOCAL, port, &tls).await.unwrap();
        plain(&mut r, "alice", PW).await.unwrap();
        r.send(&stream_header()).await.unwrap();
        let features = r.until(&["</stream:features>"], T).await.unwrap();
        assert!(
            features.contains(&format!("<sm xmlns=\"{NS}\"/>"))
                || features.contains(&format!("<sm xmlns='{NS}'/>")),
            "SM offered after authentication: {features}"
        );
        // §3: enabling before binding is refused.
        r.send(&format!("<enable xmlns='{NS}'/>")).await.unwrap();
        let failed = r.until(&["</failed>"], T).await.unwrap();
        assert!(failed.contains("unexpected-request"), "{failed}");
        r.send(
            "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
             <resource>r</resource></bind></iq>",
        )
        .await
        .unwrap();
        r.until(&["</iq>"], T).await.unwrap();
        r.send(&format!("<enable xmlns='{NS}'/>")).await.unwrap();
        r.until(&["<enabled"], T).await.unwrap();
        let enabled = r.until(&["/>"], T).await.unwrap();
        assert!(!enabled.contains("resume="), "no resumption offered: {enabled}");
        // Nothing received since <enabled/>: h = 0.
        r.send(&format!("<r xmlns='{NS}'/>")).await.unwrap();
        let a = r.until(&["/>"], T).await.unwrap();
        assert!(a.contains("h=\"0\"") || a.contains("h='0'"), "{a}");
        // Enabling twice is refused too.
        r.send(&format!("<enable xmlns='{NS}'/>")).await.unwrap();
        let again = r.until(&["</failed>"], T).await.unwrap();
        assert!(again.contains("unexpected-request"), "{again}");
        // Two stanzas: a message to bob (offline: handled once stored) and a presence.
        r.send("<message to='bob@example.test' type='chat' id='m1'><body>stored</body></message><presence/>")
            .await
            .unwrap();
        r.send(&format!("<r xmlns='{NS}'/>")).await.unwrap();
        // The answer covers both (an unasked <a/> may come first: §4 allows one at any
        // time, and the server sends one once everything received is handled).
        let got = r.until(&["h=\"2\"", "h='2'"], T).await.unwrap();
        assert!(!got.contains("h='3'") && !got.contains("h=\"3\""), "{got}");
        // Acknowledging more than the server sent is a stream error (§4).
        r.send(&format!("<a xmlns='{NS}' h='1000'/>")).await.unwrap();
        let end = r.until_closed(T).await.unwrap();
        assert!(end.contains("undefined-condition"), "{end}");
        assert!(end.contains("handled-count-too-high"), "{end}");
        assert!(end.contains("send-count="), "{end}");
    });
    // bob gets the stored message once.
    let mut bob = Agent::login(&c, 0, "bob", "b", PW);
    bob.available();
    bob.expect_body("stored", T);
}

#[test]
fn a_message_its_recipient_never_acknowledged_is_routed_again_when_its_session_ends() {
    let c = cluster(1, &["alice", "bob"]);
    let rt = runtime();
    let mut bob_raw = rt.block_on(async {
        let mut r = raw_sm_session(&c, 0, "bob").await;
        r.send("<presence/>").await.unwrap();
        r
    });
    let mut alice = sm_agent(&c, 0, "alice", "a");
    alice.send(json!({"cmd": "message", "to": jid("bob"), "body": "take it", "id": "t1"}));
    rt.block_on(async {
        bob_raw.until(&["take it"], T).await.unwrap();
        // The server asks for an acknowledgement after writing a message.
        bob_raw
            .until(
                &[&format!("<r xmlns=\"{NS}\""), &format!("<r xmlns='{NS}'")],
                T,
            )
            .await
            .unwrap();
    });
    // Not acknowledged by bob: not handled, so alice has no acknowledgement either.
    assert!(
        acked_ids(&mut alice, Duration::from_secs(1), &["t1".into()]).is_empty(),
        "acknowledged before its recipient had it"
    );
    // bob's connection ends without acknowledging: the message goes offline, and
    // alice's acknowledgement comes.
    drop(bob_raw);
    let got = acked_ids(&mut alice, T, &["t1".into()]);
    assert_eq!(got, ["t1"]);
    let mut bob = Agent::login(&c, 0, "bob", "b2", PW);
    bob.available();
    let m = bob.expect_body("take it", T);
    assert!(m["delay"].is_string(), "from the offline queue: {m}");
}

#[test]
fn an_acknowledged_message_survives_its_recipients_node_being_killed() {
    let mut c = cluster(3, &["alice", "bob"]);
    let rt = runtime();
    // bob on node 2 takes messages and never acknowledges them: each stays in flight.
    let mut bob_raw = rt.block_on(async {
        let mut r = raw_sm_session(&c, 1, "bob").await;
        r.send("<presence/>").await.unwrap();
        r
    });
    let mut alice = sm_agent(&c, 0, "alice", "a");
    // Wait until node 1 routes to bob's session on node 2.
    std::thread::sleep(Duration::from_millis(500));
    let ids: Vec<String> = (1..=5).map(|i| format!("k{i}")).collect();
    for id in &ids {
        alice.send(
            json!({"cmd": "message", "to": jid("bob"), "body": format!("body {id}"), "id": id}),
        );
    }
    rt.block_on(async {
        bob_raw.until(&["body k5"], T).await.unwrap();
    });
    assert!(
        acked_ids(&mut alice, Duration::from_secs(1), &ids).is_empty(),
        "acknowledged while only bob's node had them"
    );
    // alice's node forwarded the five and answers for each until bob's node does (the
    // metrics' handles are registered once: one registered too early would read 0).
    let m = c.metrics(0);
    for name in ["presenced_forwarded_total", "presenced_receipts_open"] {
        assert!(metric(&m, name).unwrap_or(0.0) >= 5.0, "{name}: {m}");
    }
    // Node 2 dies with the five messages on it.
    c.kill(1);
    drop(bob_raw);
    // Node 1 learns node 2 is gone, routes them again (offline), and acknowledges.
    let mut acked = acked_ids(&mut alice, Duration::from_secs(20), &ids);
    acked.sort();
    assert_eq!(acked, ids, "every message acknowledged after the node died");
    let mut bob = Agent::login(&c, 2, "bob", "b", PW);
    bob.available();
    for id in &ids {
        bob.expect_body(&format!("body {id}"), T);
    }
    bob.barrier_from(&mut alice);
    bob.assert_none_yet("a second copy", |v| {
        v["ev"] == "message" && v["body"].as_str().is_some_and(|b| b.starts_with("body k"))
    });
}
