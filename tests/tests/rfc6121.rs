//! RFC 6121 presence and delivery rules, and RFC 6120 routing, one test per rule, as a
//! strict client would notice them: slixmpp agents on different nodes of a 3-node
//! cluster, some tracing every stanza they receive.

use std::time::Duration;

use presenced_e2e::Cluster;
use presenced_e2e::xmpp::{Agent, jid};
use serde_json::{Value, json};

const PW: &str = "rfc-pw";
const T: Duration = Duration::from_secs(10);
const D: &str = "example.test";

fn cluster(users: &[&str]) -> Cluster {
    let c = Cluster::start(3);
    for u in users {
        c.ctl(0, &["user", "add", u, "--password", PW]).ok();
    }
    c
}

/// A client that reports every stanza it receives (`{"ev": "stanza", ...}`).
fn traced(c: &Cluster, node: usize, user: &str, resource: &str) -> Agent {
    let mut a = Agent::spawn(&format!("{user}/{resource}@node{}", node + 1));
    a.connect(c, node, user, resource, PW, json!({"trace": true}));
    a.expect_session();
    a
}

fn full(user: &str, res: &str) -> String {
    format!("{user}@{D}/{res}")
}

fn is_stanza(e: &Value, name: &str) -> bool {
    e["ev"] == "stanza" && e["name"] == name
}

fn has_child(e: &Value, tag: &str) -> bool {
    e["children"]
        .as_array()
        .is_some_and(|c| c.iter().any(|x| x.as_str() == Some(tag)))
}

/// RFC 6121 §4.2.2 and §4.4.2: broadcast presence goes to all of the user's available
/// resources, the one that sent it included; initial presence shows the others.
#[test]
fn broadcast_presence_reaches_every_own_resource_including_the_sender() {
    let c = cluster(&["alice"]);
    let mut a1 = traced(&c, 0, "alice", "a1");
    let mut a2 = traced(&c, 1, "alice", "a2");
    a1.available();
    a1.expect("a1's own initial presence reflected", T, |e| {
        is_stanza(e, "presence") && e["from"] == full("alice", "a1") && e["type"].is_null()
    });
    a2.available();
    a2.expect("a2's own initial presence reflected", T, |e| {
        is_stanza(e, "presence") && e["from"] == full("alice", "a2") && e["type"].is_null()
    });
    a2.expect("a1 shown to the new resource", T, |e| {
        is_stanza(e, "presence") && e["from"] == full("alice", "a1")
    });
    a1.expect("a2's initial presence at a1 (other node)", T, |e| {
        is_stanza(e, "presence") && e["from"] == full("alice", "a2")
    });
    a1.presence(json!({"show": "away", "status": "lunch"}));
    for a in [&mut a1, &mut a2] {
        a.expect("a1's subsequent presence at every resource", T, |e| {
            e["ev"] == "presence" && e["from"] == full("alice", "a1") && e["show"] == "away"
        });
    }
}

/// RFC 6121 §4.5.2: unavailable presence may carry a status, and contacts get it.
#[test]
fn unavailable_presence_keeps_its_status() {
    let c = cluster(&["alice", "bob"]);
    c.ctl(0, &["roster", "add", "alice", "bob"]).ok();
    let mut alice = Agent::login(&c, 0, "alice", "a", PW);
    let mut bob = Agent::login(&c, 2, "bob", "b", PW);
    alice.available();
    bob.available();
    alice.expect_available(&full("bob", "b"), T);
    bob.send(json!({"cmd": "raw", "xml": "<presence type='unavailable'><status>gone fishing</status></presence>"}));
    let p = alice.expect_unavailable(&full("bob", "b"), T);
    assert_eq!(p["status"], "gone fishing", "{p}");
}

/// RFC 6121 §4.3.2: a probe is answered with the contact's presence if the prober
/// may see it, "unsubscribed" if not, and "unavailable" when the contact is offline.
#[test]
fn probes_are_answered_by_the_rules() {
    let c = cluster(&["alice", "bob", "carol", "dave"]);
    c.ctl(0, &["roster", "add", "alice", "bob"]).ok();
    c.ctl(0, &["roster", "add", "alice", "dave"]).ok();
    let mut bob = Agent::login(&c, 1, "bob", "b", PW);
    bob.presence(json!({"show": "dnd"}));
    let mut alice = traced(&c, 0, "alice", "a");
    let mut carol = traced(&c, 2, "carol", "c");
    alice.available();
    carol.available();
    alice.expect_available(&full("bob", "b"), T);
    alice.clear();
    alice.send(
        json!({"cmd": "raw", "xml": format!("<presence type='probe' to='{}'/>", jid("bob"))}),
    );
    let p = alice.expect("bob's presence for the probe", T, |e| {
        e["ev"] == "presence" && e["from"] == full("bob", "b")
    });
    assert_eq!(p["show"], "dnd");
    carol.send(
        json!({"cmd": "raw", "xml": format!("<presence type='probe' to='{}'/>", jid("bob"))}),
    );
    carol.expect("unsubscribed for a probe without subscription", T, |e| {
        is_stanza(e, "presence") && e["from"] == jid("bob") && e["type"] == "unsubscribed"
    });
    alice.send(
        json!({"cmd": "raw", "xml": format!("<presence type='probe' to='{}'/>", jid("dave"))}),
    );
    alice.expect("unavailable for an offline contact", T, |e| {
        is_stanza(e, "presence") && e["from"] == jid("dave") && e["type"] == "unavailable"
    });
    carol.barrier_from(&mut bob);
    carol.assert_none_yet("bob's availability", |e| {
        e["ev"] == "presence" && e["from"] == full("bob", "b") && e["type"] != "unavailable"
    });
}

/// RFC 6121 §4.6 and §8.5.2.1.2/§8.5.3.2.2: directed presence to a bare JID reaches
/// every available resource, to a full JID only that one, to a full JID that is not
/// connected nobody; the end of the session ends it.
#[test]
fn directed_presence_to_bare_and_full_jids() {
    let c = cluster(&["bob", "carol"]);
    let mut b1 = Agent::login(&c, 0, "bob", "b1", PW);
    let mut b2 = Agent::login(&c, 1, "bob", "b2", PW);
    b1.available();
    b2.available();
    let mut carol = Agent::login(&c, 2, "carol", "c", PW);
    carol.available();
    carol.send(json!({"cmd": "presence", "to": jid("bob"), "show": "chat"}));
    for b in [&mut b1, &mut b2] {
        b.expect_available(&full("carol", "c"), T);
    }
    carol.send(json!({"cmd": "presence", "to": full("bob", "b1"), "status": "only b1"}));
    b1.expect("directed to the full JID", T, |e| {
        e["ev"] == "presence" && e["from"] == full("carol", "c") && e["status"] == "only b1"
    });
    carol.send(json!({"cmd": "presence", "to": full("bob", "ghost"), "status": "to nobody"}));
    for b in [&mut b1, &mut b2] {
        b.barrier_from(&mut carol);
    }
    b2.assert_none_yet("presence meant for b1 or a missing resource", |e| {
        e["ev"] == "presence" && matches!(e["status"].as_str(), Some("only b1" | "to nobody"))
    });
    b1.assert_none_yet("presence for a missing resource", |e| {
        e["ev"] == "presence" && e["status"] == "to nobody"
    });
    carol.quit();
    b1.expect_unavailable(&full("carol", "c"), T);
}

/// RFC 6121 §8.5.2 and §8.5.3: how each message type is delivered to a bare or full
/// JID with and without available resources.
#[test]
fn message_delivery_follows_section_8_5() {
    let c = cluster(&["alice", "bob", "dave"]);
    let mut alice = traced(&c, 0, "alice", "a");
    let mut bob = Agent::login(&c, 1, "bob", "b", PW);
    alice.available();
    bob.available();
    // groupchat to a bare JID: service-unavailable, never delivered.
    alice.send(json!({"cmd": "message", "to": jid("bob"), "body": "gc", "type": "groupchat"}));
    alice.expect("service-unavailable for groupchat to a bare JID", T, |e| {
        e["ev"] == "message" && e["type"] == "error" && e["error"] == "service-unavailable"
    });
    // chat to a full JID that is not connected: delivered as to the bare JID.
    alice.send(json!({"cmd": "message", "to": full("bob", "gone"), "body": "to the bare jid", "type": "chat"}));
    bob.expect_body("to the bare jid", T);
    // headline to a user with no resource: dropped, no error, not stored.
    alice.send(json!({"cmd": "message", "to": jid("dave"), "body": "news", "type": "headline"}));
    // an error message to a bare JID: dropped silently.
    alice.send(json!({"cmd": "raw", "xml": format!("<message type='error' to='{}'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>", jid("dave"))}));
    // a normal message to dave is stored: the barrier.
    alice.send(json!({"cmd": "message", "to": jid("dave"), "body": "stored", "type": "normal"}));
    let mut dave = Agent::login(&c, 2, "dave", "d", PW);
    dave.available();
    dave.expect_body("stored", T);
    dave.assert_none_yet("the headline", |e| {
        e["ev"] == "message" && e["body"] == "news"
    });
    alice.barrier_from(&mut dave);
    alice.assert_none_yet("an error for the headline or the error", |e| {
        e["ev"] == "message" && e["type"] == "error" && e["body"] != "gc"
    });
}

/// RFC 6120 §10.5.4 / RFC 6121 §8.5.3.1: an iq to another entity's full JID is routed
/// to it, across nodes, and its answer comes back; nobody learns of a resource whose
/// availability they may not see.
#[test]
fn iqs_to_full_jids_are_routed_across_nodes() {
    let c = cluster(&["alice", "bob", "carol"]);
    c.ctl(0, &["roster", "add", "alice", "bob"]).ok();
    c.ctl(0, &["roster", "add", "bob", "alice"]).ok();
    let mut alice = traced(&c, 0, "alice", "a");
    let mut bob = Agent::login(&c, 2, "bob", "b", PW);
    let mut carol = traced(&c, 1, "carol", "c");
    alice.available();
    bob.available();
    carol.available();
    alice.expect_available(&full("bob", "b"), T);
    let ping = |to: &str, id: &str| json!({"cmd": "raw", "xml": format!("<iq type='get' id='{id}' to='{to}'><ping xmlns='urn:xmpp:ping'/></iq>")});
    alice.send(ping(&full("bob", "b"), "p1"));
    alice.expect("bob's client answers alice's ping", T, |e| {
        is_stanza(e, "iq")
            && e["id"] == "p1"
            && e["type"] == "result"
            && e["from"] == full("bob", "b")
    });
    alice.send(json!({"cmd": "raw", "xml": format!("<iq type='get' id='d1' to='{}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>", full("bob", "b"))}));
    let d = alice.expect("bob's client answers disco#info", T, |e| {
        is_stanza(e, "iq") && e["id"] == "d1" && e["type"] == "result"
    });
    assert!(
        has_child(&d, "{http://jabber.org/protocol/disco#info}query"),
        "{d}"
    );
    let ghost = full("bob", "ghost");
    alice.send(ping(&ghost, "p2"));
    alice.expect(
        "service-unavailable for a resource that is not there",
        T,
        |e| {
            is_stanza(e, "iq")
                && e["id"] == "p2"
                && e["error"] == "service-unavailable"
                && e["from"] == ghost.as_str()
        },
    );
    // carol may not see bob: the answer is the same as for a missing resource.
    carol.send(ping(&full("bob", "b"), "p3"));
    carol.expect("service-unavailable for a user one may not see", T, |e| {
        is_stanza(e, "iq")
            && e["id"] == "p3"
            && e["error"] == "service-unavailable"
            && e["from"] == full("bob", "b")
    });
}

/// RFC 6120 §10.5.3.2 and XEP-0030: the server answers disco#info for a bare JID on
/// the account's behalf: to the user, and to contacts the account shares with.
#[test]
fn disco_info_on_bare_jids() {
    let c = cluster(&["alice", "bob", "carol"]);
    c.ctl(0, &["roster", "add", "alice", "bob"]).ok();
    let mut alice = traced(&c, 0, "alice", "a");
    let mut carol = traced(&c, 1, "carol", "c");
    let info = |to: &str, id: &str| json!({"cmd": "raw", "xml": format!("<iq type='get' id='{id}' to='{to}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")});
    alice.send(info(&jid("alice"), "own"));
    let own = alice.expect("disco#info of the own bare JID", T, |e| {
        is_stanza(e, "iq") && e["id"] == "own" && e["type"] == "result" && e["from"] == jid("alice")
    });
    let xml = own["xml"].as_str().unwrap();
    assert!(xml.contains("category=\"account\""), "{xml}");
    assert!(
        xml.contains("var=\"http://jabber.org/protocol/disco#info\""),
        "{xml}"
    );
    alice.send(info(&jid("bob"), "contact"));
    let contact = alice.expect("disco#info of a contact's bare JID", T, |e| {
        is_stanza(e, "iq") && e["id"] == "contact" && e["from"] == jid("bob")
    });
    assert_eq!(contact["type"], "result", "{contact}");
    carol.send(info(&jid("bob"), "stranger"));
    carol.expect("service-unavailable for a stranger", T, |e| {
        is_stanza(e, "iq")
            && e["id"] == "stranger"
            && e["error"] == "service-unavailable"
            && e["from"] == jid("bob")
    });
}

/// RFC 6120 §8.3.1: errors the server generates come from the entity addressed, so
/// clients matching replies by (from, id) get them.
#[test]
fn server_generated_errors_carry_from() {
    let c = cluster(&["alice"]);
    let mut alice = traced(&c, 0, "alice", "a");
    alice.send(json!({"cmd": "raw", "xml": format!("<iq type='get' id='u1' to='{D}'><query xmlns='urn:example:unknown'/></iq>")}));
    alice.expect("an error from the domain", T, |e| {
        is_stanza(e, "iq")
            && e["id"] == "u1"
            && e["error"] == "service-unavailable"
            && e["from"] == D
    });
    alice.send(json!({"cmd": "raw", "xml": format!("<iq type='get' id='u2' to='{D}'><a xmlns='urn:x'/><b xmlns='urn:x'/></iq>")}));
    alice.expect("bad-request from the domain", T, |e| {
        is_stanza(e, "iq") && e["id"] == "u2" && e["error"] == "bad-request" && e["from"] == D
    });
    alice.send(json!({"cmd": "raw", "xml": format!("<iq type='get' id='u3' to='{}'><query xmlns='urn:example:unknown'/></iq>", jid("alice"))}));
    alice.expect("an error from the own bare JID", T, |e| {
        is_stanza(e, "iq")
            && e["id"] == "u3"
            && e["error"] == "service-unavailable"
            && e["from"] == jid("alice")
    });
}

/// RFC 6121 §2.3.3: a roster set has one item; its groups are distinct and not empty.
#[test]
fn roster_set_validation() {
    let c = cluster(&["alice", "bob", "carol"]);
    let mut alice = traced(&c, 0, "alice", "a");
    let set = |id: &str, items: &str| json!({"cmd": "raw", "xml": format!("<iq type='set' id='{id}'><query xmlns='jabber:iq:roster'>{items}</query></iq>")});
    let cases = [
        (
            "two",
            format!("<item jid='{}'/><item jid='{}'/>", jid("bob"), jid("carol")),
            "bad-request",
        ),
        (
            "dup",
            format!(
                "<item jid='{}'><group>A</group><group>A</group></item>",
                jid("bob")
            ),
            "bad-request",
        ),
        (
            "empty",
            format!("<item jid='{}'><group></group></item>", jid("bob")),
            "not-acceptable",
        ),
    ];
    for (id, items, cond) in &cases {
        alice.send(set(id, items));
        alice.expect(&format!("{cond} for {id}"), T, |e| {
            is_stanza(e, "iq") && e["id"] == *id && e["error"] == *cond
        });
    }
    alice.send(set(
        "ok",
        &format!(
            "<item jid='{}'><group>A</group><group>B</group></item>",
            jid("bob")
        ),
    ));
    alice.expect("a valid set is accepted", T, |e| {
        is_stanza(e, "iq") && e["id"] == "ok" && e["type"] == "result"
    });
    let roster = alice.roster();
    assert!(roster["items"][jid("bob")].is_object(), "{roster}");
    assert!(roster["items"][jid("carol")].is_null(), "{roster}");
}

/// RFC 6120 §8.4: extended content passes unchanged: chat states alone, receipts,
/// entity caps and avatar hashes in presence, also through offline storage.
#[test]
fn extension_elements_pass_unchanged() {
    let c = cluster(&["alice", "bob"]);
    c.ctl(0, &["roster", "add", "alice", "bob"]).ok();
    let mut alice = traced(&c, 0, "alice", "a");
    let mut bob = Agent::login(&c, 2, "bob", "b", PW);
    alice.available();
    bob.send(json!({"cmd": "raw", "xml": "<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='https://example.test/client' ver='QgayPKawpkPSDYmwT/WM94uAlu0='/><x xmlns='vcard-temp:x:update'><photo>01b87fcd030b72895ff8e88db57ec525450f000d</photo></x></presence>"}));
    let p = alice.expect("bob's presence with caps and avatar", T, |e| {
        is_stanza(e, "presence") && e["from"] == full("bob", "b")
    });
    let xml = p["xml"].as_str().unwrap();
    assert!(
        xml.contains("ver=\"QgayPKawpkPSDYmwT/WM94uAlu0=\""),
        "{xml}"
    );
    assert!(
        xml.contains("<photo>01b87fcd030b72895ff8e88db57ec525450f000d</photo>"),
        "{xml}"
    );
    bob.send(json!({"cmd": "raw", "xml": format!("<message type='chat' to='{}'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>", full("alice", "a"))}));
    let m = alice.expect("a chat state alone", T, |e| {
        is_stanza(e, "message") && e["from"] == full("bob", "b")
    });
    assert!(
        has_child(&m, "{http://jabber.org/protocol/chatstates}composing"),
        "{m}"
    );
    // Offline: the receipt request survives storage and redelivery.
    alice.quit();
    bob.send(json!({"cmd": "raw", "xml": format!("<message type='chat' id='r1' to='{}'><body>later</body><request xmlns='urn:xmpp:receipts'/><markable xmlns='urn:xmpp:chat-markers:0'/></message>", jid("alice"))}));
    let mut alice = traced(&c, 1, "alice", "a2");
    alice.available();
    let m = alice.expect("the offline message", T, |e| {
        is_stanza(e, "message") && e["id"] == "r1"
    });
    assert!(has_child(&m, "{urn:xmpp:receipts}request"), "{m}");
    assert!(has_child(&m, "{urn:xmpp:chat-markers:0}markable"), "{m}");
    assert!(has_child(&m, "{urn:xmpp:delay}delay"), "{m}");
}

/// Notices come from the applied log: an operator's `roster remove` gives both
/// clients, on different nodes, the roster pushes and presence a client's removal
/// would have (RFC 6121 §2.5.2).
#[test]
fn presencectl_roster_remove_notifies_both_clients() {
    let c = cluster(&["alice", "bob"]);
    c.ctl(0, &["roster", "add", "alice", "bob"]).ok();
    c.ctl(0, &["roster", "add", "bob", "alice"]).ok();
    let mut alice = traced(&c, 0, "alice", "a");
    let mut bob = traced(&c, 2, "bob", "b");
    for a in [&mut alice, &mut bob] {
        a.roster();
        a.available();
    }
    alice.expect_available(&full("bob", "b"), T);
    bob.expect_available(&full("alice", "a"), T);
    c.ctl(1, &["roster", "remove", "alice", "bob"]).ok();
    alice.expect("alice's roster push removing bob", T, |e| {
        e["ev"] == "roster_push" && e["items"][jid("bob")]["subscription"] == "remove"
    });
    alice.expect_unavailable(&full("bob", "b"), T);
    bob.expect("bob's roster push for alice", T, |e| {
        e["ev"] == "roster_push" && e["items"][jid("alice")].is_object()
    });
    for kind in ["unsubscribe", "unsubscribed"] {
        bob.expect(&format!("{kind} from alice"), T, |e| {
            is_stanza(e, "presence") && e["from"] == jid("alice") && e["type"] == kind
        });
    }
    bob.expect_unavailable(&full("alice", "a"), T);
}

/// Everything for another domain passes `route_remote` and `policy::egress`, which
/// refuses while federation does not exist: the sender gets `remote-server-not-found`
/// for what it can be told about, and presence for a remote watcher goes nowhere.
#[test]
fn everything_for_another_domain_is_refused_by_egress() {
    let c = cluster(&["alice"]);
    // A remote contact watching alice (an operator's add leaves the request pending).
    c.ctl(0, &["roster", "add", "alice", "friend@other.test"])
        .ok();
    let mut alice = traced(&c, 0, "alice", "a");
    let refused = |c: &Cluster| {
        presenced_e2e::metric(&c.metrics(0), "presenced_egress_total{verdict=\"refused\"}")
            .unwrap_or(0.0)
    };
    let before = refused(&c);
    alice.send(json!({"cmd": "message", "to": "friend@other.test", "body": "hi", "type": "chat"}));
    alice.expect("remote-server-not-found for a message", T, |e| {
        e["ev"] == "message" && e["type"] == "error" && e["error"] == "remote-server-not-found"
    });
    alice.send(json!({"cmd": "raw", "xml": "<iq type='get' id='r1' to='friend@other.test/x'><ping xmlns='urn:xmpp:ping'/></iq>"}));
    alice.expect("remote-server-not-found for an iq", T, |e| {
        is_stanza(e, "iq") && e["id"] == "r1" && e["error"] == "remote-server-not-found"
    });
    alice.send(json!({"cmd": "presence", "to": "friend@other.test", "status": "directed"}));
    alice.available();
    alice.expect("own presence", T, |e| {
        is_stanza(e, "presence") && e["from"] == full("alice", "a")
    });
    let deadline = std::time::Instant::now() + T;
    while refused(&c) < before + 3.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "egress asked for each event"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
