//! A second, independent client library against a 3-node cluster: xmpp.js
//! (tests/clients/xmppjs/agent.mjs), alone and together with slixmpp, so that no
//! server behaviour is tuned to one client's habits.

use std::time::Duration;

use presenced_e2e::Cluster;
use presenced_e2e::xmpp::{Agent, Lib, jid};
use serde_json::{Value, json};

const PW: &str = "secret-pw-js";
const T: Duration = Duration::from_secs(10);

fn cluster(users: &[&str]) -> Cluster {
    let c = Cluster::start(3);
    for u in users {
        c.ctl(0, &["user", "add", u, "--password", PW]).ok();
    }
    c
}

/// The SASL mechanism of the xmpp.js clients in the tests that are not about
/// authentication. xmpp.js's own choice is SCRAM-SHA-1, but its SCRAM parser loses a
/// server nonce that contains '"', which presenced's nonces do about one login in four
/// today (see `xmppjs_logs_in_thirty_times_with_scram`); PLAIN over TLS, which xmpp.js
/// supports too, keeps these tests about presence and messaging. `None` (xmpp.js's
/// default) once the server's nonces are fixed.
const MECH: Option<&str> = None;

/// An xmpp.js client logged in as `user/resource` on `node`; `extra` connect options.
fn js_with(c: &Cluster, node: usize, user: &str, resource: &str, extra: Value) -> Agent {
    let mut a = Agent::spawn_lib(Lib::XmppJs, &format!("{user}/{resource}@node{}", node + 1));
    let mut opts = extra;
    if let Some(m) = MECH {
        opts["mech"] = json!(m);
    }
    a.connect(c, node, user, resource, PW, opts);
    a.expect("session start", T, |e| e["ev"] == "session_start");
    a
}

fn js(c: &Cluster, node: usize, user: &str, resource: &str) -> Agent {
    js_with(c, node, user, resource, json!({}))
}

/// `{ns}name` of the extension children an agent reported for a stanza.
fn extensions(e: &Value) -> Vec<&str> {
    e["extensions"]
        .as_array()
        .unwrap_or_else(|| panic!("no extensions field: {e}"))
        .iter()
        .filter_map(Value::as_str)
        .collect()
}

#[test]
fn xmppjs_logs_in_thirty_times_with_scram() {
    let c = cluster(&["alice"]);
    for i in 0..30 {
        let node = i % 3;
        let resource = format!("r{i}");
        let mut a = Agent::spawn_lib(Lib::XmppJs, &format!("alice/{resource}@node{}", node + 1));
        a.connect(&c, node, "alice", &resource, PW, json!({}));
        let s = a.expect("session start", T, |e| {
            e["ev"] == "session_start" || e["ev"] == "failed_auth" || e["ev"] == "agent_error"
        });
        if s["ev"] == "failed_auth" {
            // The event carries the SCRAM server-first message ("r=NONCE,s=..,i=..").
            let nonce = s["challenge"].as_str().and_then(|c| c.split(',').next());
            let hint = if nonce.is_some_and(|r| r.contains('"')) {
                "\nthe server nonce contains '\"': RFC 5802 allows any printable but ',', \
                 yet xmpp.js's SCRAM parser (sasl-scram-sha-1) treats '\"' as quoting and \
                 loses the nonce (other servers typically send base64 or hex nonces)"
            } else {
                ""
            };
            panic!(
                "login {i} on node {}: the right password was refused: {s}{hint}",
                node + 1
            );
        }
        assert_eq!(
            s["ev"],
            "session_start",
            "login {i} on node {}: {s}",
            node + 1
        );
        assert_eq!(s["mech"], "SCRAM-SHA-1", "xmpp.js's default mechanism: {s}");
        assert_eq!(s["jid"], format!("alice@example.test/{resource}"), "{s}");
        a.quit();
    }
    // The SCRAM exchange is really checked: a wrong password is refused.
    let mut bad = Agent::spawn_lib(Lib::XmppJs, "alice/wrong-pw");
    bad.connect(&c, 1, "alice", "x", "not-the-password", json!({}));
    bad.expect("failed auth", T, |e| e["ev"] == "failed_auth");
    bad.expect_none("a session", Duration::from_millis(500), |e| {
        e["ev"] == "session_start"
    });
}

#[test]
fn xmppjs_and_slixmpp_subscribe_see_each_other_and_chat() {
    let c = cluster(&["alice", "bob"]);
    let mut alice = js(&c, 0, "alice", "laptop");
    let mut bob = Agent::login(&c, 2, "bob", "phone", PW);
    let r = alice.roster();
    assert_eq!(r["items"], json!({}), "{r}");
    alice.presence(json!({"status": "at my desk"}));
    bob.presence(json!({"status": "on the bus"}));

    // alice (xmpp.js) asks, bob (slixmpp, another node) approves.
    alice.presence(json!({"type": "subscribe", "to": jid("bob")}));
    bob.expect("alice's subscription request", T, |e| {
        e["ev"] == "presence" && e["type"] == "subscribe" && e["from"] == jid("alice")
    });
    alice.expect("pending roster push", T, |e| {
        e["ev"] == "roster_push" && e["items"][jid("bob")]["ask"] == "subscribe"
    });
    bob.presence(json!({"type": "subscribed", "to": jid("alice")}));
    alice.expect("subscribed", T, |e| {
        e["ev"] == "presence" && e["type"] == "subscribed" && e["from"] == jid("bob")
    });
    let p = alice.expect_available("bob@example.test/phone", T);
    assert_eq!(p["status"], "on the bus", "{p}");

    // And the other way round: bob (slixmpp) asks, alice (xmpp.js) approves.
    bob.presence(json!({"type": "subscribe", "to": jid("alice")}));
    alice.expect("bob's subscription request", T, |e| {
        e["ev"] == "presence" && e["type"] == "subscribe" && e["from"] == jid("bob")
    });
    alice.presence(json!({"type": "subscribed", "to": jid("bob")}));
    bob.expect("subscribed", T, |e| {
        e["ev"] == "presence" && e["type"] == "subscribed" && e["from"] == jid("alice")
    });
    let p = bob.expect_available("alice@example.test/laptop", T);
    assert_eq!(p["status"], "at my desk", "{p}");

    // Availability changes both ways.
    alice.presence(json!({"show": "away", "status": "lunch", "priority": 3}));
    let p = bob.expect("alice away", T, |e| {
        e["ev"] == "presence" && e["from"] == "alice@example.test/laptop" && e["show"] == "away"
    });
    assert_eq!(
        (p["status"].clone(), p["priority"].clone()),
        (json!("lunch"), json!(3))
    );
    bob.presence(json!({"show": "dnd", "status": "meeting"}));
    alice.expect("bob dnd", T, |e| {
        e["ev"] == "presence" && e["from"] == "bob@example.test/phone" && e["show"] == "dnd"
    });

    // Chat both ways; the server stamps `from`.
    alice.chat(&jid("bob"), "hello from xmpp.js");
    let m = bob.expect_body("hello from xmpp.js", T);
    assert_eq!(m["from"], "alice@example.test/laptop", "{m}");
    assert_eq!(m["type"], "chat", "{m}");
    bob.chat(m["from"].as_str().unwrap(), "hello from slixmpp");
    let m = alice.expect_body("hello from slixmpp", T);
    assert_eq!(m["from"], "bob@example.test/phone", "{m}");
    assert_eq!(m["to"], "alice@example.test/laptop", "{m}");

    let ra = alice.roster();
    assert_eq!(ra["items"][jid("bob")]["subscription"], "both", "{ra}");
    let rb = bob.roster();
    assert_eq!(rb["items"][jid("alice")]["subscription"], "both", "{rb}");

    // alice closes her xmpp.js stream: bob sees her go.
    alice.quit();
    bob.expect_unavailable("alice@example.test/laptop", T);
}

#[test]
fn message_extension_elements_are_delivered_intact() {
    // RFC 6120 §8.4: a server routes extended content it does not understand
    // unchanged, so chat states (XEP-0085) and receipt requests (XEP-0184) reach
    // the recipient.
    let c = cluster(&["alice", "bob"]);
    c.ctl(0, &["roster", "add", "alice", "bob"]).ok();
    c.ctl(0, &["roster", "add", "bob", "alice"]).ok();
    let mut alice = js(&c, 0, "alice", "a");
    let mut bob = js_with(&c, 2, "bob", "b", json!({"trace": true}));
    alice.available();
    bob.available();
    alice.expect_available("bob@example.test/b", T);

    alice.send(json!({
        "cmd": "message", "to": jid("bob"), "type": "chat", "id": "receipt-1",
        "body": "with extensions",
        "extensions": [
            "<active xmlns='http://jabber.org/protocol/chatstates'/>",
            "<request xmlns='urn:xmpp:receipts'/>",
        ],
    }));
    let m = bob.expect_body("with extensions", T);
    let got = extensions(&m);
    for want in [
        "{http://jabber.org/protocol/chatstates}active",
        "{urn:xmpp:receipts}request",
    ] {
        assert!(
            got.contains(&want),
            "{want} missing from the delivered message: {m}"
        );
    }
    assert_eq!(m["id"], "receipt-1", "a receipt needs the message id: {m}");
    assert_eq!(m["from"], "alice@example.test/a", "{m}");
    let raw = bob.expect("the raw stanza", T, |e| {
        e["ev"] == "stanza"
            && e["xml"]
                .as_str()
                .is_some_and(|x| x.contains("with extensions"))
    });
    assert!(
        raw["xml"].as_str().unwrap().contains("urn:xmpp:receipts"),
        "{raw}"
    );
}

#[test]
fn own_initial_presence_is_reflected_to_the_sender() {
    // RFC 6121 §4.2.2: the server sends the user's initial presence to all of
    // the user's available resources, including the one that sent it.
    let c = cluster(&["alice"]);
    let mut alice = js(&c, 0, "alice", "desk");
    alice.presence(json!({"show": "chat", "status": "hello me", "priority": 2}));
    let p = alice.expect_available("alice@example.test/desk", T);
    assert_eq!(p["show"], "chat", "{p}");
    assert_eq!(p["status"], "hello me", "{p}");
    assert_eq!(p["priority"], 2, "{p}");
}
