//! XMPP clients (slixmpp) on different nodes of a 3-node cluster: subscriptions,
//! presence, messaging, forking, offline delivery, broadcast and the settings that
//! govern them.

use std::time::Duration;

use presenced_e2e::xmpp::{Agent, jid};
use presenced_e2e::{Cluster, metric};
use serde_json::json;

const PW: &str = "secret-pw-1";
const T: Duration = Duration::from_secs(10);

fn cluster(users: &[&str]) -> Cluster {
    Cluster::with_users(users, PW, "")
}

/// Provision `user` seeing `contact` (and `contact` letting `user` watch).
fn provision(c: &Cluster, user: &str, contact: &str) {
    c.ctl(0, &["roster", "add", user, contact]).ok();
}

fn set(c: &Cluster, key: &str, value: &str) {
    c.ctl(1, &["settings", "set", key, value]).ok();
}

#[test]
fn subscribe_approve_presence_and_chat_across_nodes() {
    let c = cluster(&["alice", "bob"]);
    let mut alice = Agent::login(&c, 0, "alice", "laptop", PW);
    let mut bob = Agent::login(&c, 1, "bob", "phone", PW);
    let r = alice.roster();
    assert_eq!(r["items"], json!({}), "{r}");
    alice.available();
    bob.presence(json!({"status": "on the bus"}));

    // alice asks; bob (on another node) is asked and approves.
    alice.presence(json!({"type": "subscribe", "to": jid("bob")}));
    bob.expect("subscription request", T, |e| {
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
    assert_eq!(p["status"], "on the bus");

    // Availability changes reach the watcher.
    bob.presence(json!({"show": "dnd", "status": "meeting", "priority": 5}));
    alice.expect("bob's dnd", T, |e| {
        e["ev"] == "presence" && e["from"] == "bob@example.test/phone" && e["show"] == "dnd"
    });

    // Messages both ways; `from` is stamped by the server.
    alice.chat(&jid("bob"), "hello bob");
    let m = bob.expect_body("hello bob", T);
    assert_eq!(m["from"], "alice@example.test/laptop");
    bob.chat(m["from"].as_str().unwrap(), "hi alice");
    alice.expect_body("hi alice", T);

    // The per-message metrics count on a real node (their handles are registered once,
    // after the recorder: one registered too early would stay at nothing). alice's node
    // routed her message to bob's bare JID; both nodes read and wrote client stanzas.
    let m0 = c.metrics(0);
    let routed = metric(&m0, "presenced_messages_routed_total").unwrap_or(0.0);
    assert!(routed >= 1.0, "{m0}");
    for node in [0, 1] {
        let m = c.metrics(node);
        for name in [
            "presenced_xmpp_stanzas_in_total",
            "presenced_xmpp_stanzas_out_total",
        ] {
            assert!(
                metric(&m, name).unwrap_or(0.0) >= 1.0,
                "node {node}, {name}: {m}"
            );
        }
    }

    // Rosters on both sides (versioning: see pending_requests_wait_for_login...).
    let ra = alice.roster();
    assert_eq!(ra["items"][jid("bob")]["subscription"], "to", "{ra}");
    let rb = bob.roster();
    assert_eq!(rb["items"][jid("alice")]["subscription"], "from", "{rb}");

    // bob logs out: alice sees him unavailable.
    bob.quit();
    alice.expect_unavailable("bob@example.test/phone", T);
}

#[test]
fn view_without_approval_and_roster_edits_push_to_every_node() {
    let c = cluster(&["alice", "bob"]);
    set(&c, "view_without_approval", "on");
    let mut bob = Agent::login(&c, 2, "bob", "desk", PW);
    bob.available();
    let mut alice1 = Agent::login(&c, 0, "alice", "one", PW);
    let mut alice2 = Agent::login(&c, 1, "alice", "two", PW);
    alice1.roster();
    alice2.roster();
    alice1.available();
    alice2.available();
    // alice's own resources see each other.
    alice1.expect_available("alice@example.test/two", T);

    alice1.presence(json!({"type": "subscribe", "to": jid("bob")}));
    alice1.expect("auto-approval", T, |e| {
        e["ev"] == "presence" && e["type"] == "subscribed" && e["from"] == jid("bob")
    });
    // Both of alice's resources (on two nodes) get bob's presence and the push.
    alice1.expect_available("bob@example.test/desk", T);
    alice2.expect_available("bob@example.test/desk", T);
    alice2.expect("roster push on the other node", T, |e| {
        e["ev"] == "roster_push" && e["items"][jid("bob")]["subscription"] == "to"
    });
    bob.barrier_from(&mut alice1);
    bob.assert_none_yet("a subscription request", |e| e["type"] == "subscribe");

    // Rename, then remove: pushes everywhere, and bob stops being visible.
    alice2.send(json!({"cmd": "roster_set", "jid": jid("bob"), "name": "Bobby"}));
    alice1.expect("rename push", T, |e| {
        e["ev"] == "roster_push" && e["items"][jid("bob")]["name"] == "Bobby"
    });
    alice1.send(json!({"cmd": "roster_remove", "jid": jid("bob")}));
    alice2.expect("removal push", T, |e| {
        e["ev"] == "roster_push" && e["items"][jid("bob")]["subscription"] == "remove"
    });
    alice2.expect_unavailable("bob@example.test/desk", T);
}

#[test]
fn forking_to_every_resource_then_sticky_after_a_reply() {
    let c = Cluster::with_users(&["alice", "bob"], PW, "[router]\nsticky_quiet_secs = 3\n");
    provision(&c, "alice", "bob");
    provision(&c, "bob", "alice");
    let mut alice = Agent::login(&c, 0, "alice", "a", PW);
    let mut bob1 = Agent::login(&c, 1, "bob", "b1", PW);
    let mut bob2 = Agent::login(&c, 2, "bob", "b2", PW);
    for a in [&mut alice, &mut bob1, &mut bob2] {
        a.available();
    }
    alice.expect_available("bob@example.test/b1", T);
    alice.expect_available("bob@example.test/b2", T);

    // To the bare JID: both resources get it.
    alice.chat(&jid("bob"), "fork 1");
    bob1.expect_body("fork 1", T);
    bob2.expect_body("fork 1", T);

    // b2 replies: alice's next messages go to b2 only.
    bob2.chat(&jid("alice"), "b2 here");
    alice.expect_body("b2 here", T);
    alice.chat(&jid("bob"), "sticky 1");
    bob2.expect_body("sticky 1", T);
    alice.chat(&jid("bob"), "sticky 2");
    bob2.expect_body("sticky 2", T);
    bob1.barrier_from(&mut alice);
    bob1.assert_none_yet("a sticky message on b1", |e| {
        e["ev"] == "message" && e["body"].as_str().is_some_and(|b| b.starts_with("sticky"))
    });

    // The quiet period passes: forking starts again.
    std::thread::sleep(Duration::from_secs(4));
    alice.chat(&jid("bob"), "fork 2");
    bob1.expect_body("fork 2", T);
    bob2.expect_body("fork 2", T);

    // b1 replies, then goes offline: forking resumes at once (to b2).
    bob1.chat(&jid("alice"), "b1 here");
    alice.expect_body("b1 here", T);
    bob1.quit();
    alice.expect_unavailable("bob@example.test/b1", T);
    alice.chat(&jid("bob"), "after b1 left");
    bob2.expect_body("after b1 left", T);
}

#[test]
fn broadcast_reaches_users_on_every_node_and_is_capped() {
    let users = ["alice", "carol", "dave", "erin", "frank"];
    let c = cluster(&users);
    let mut alice = Agent::login(&c, 0, "alice", "a", PW);
    let mut carol = Agent::login(&c, 0, "carol", "c", PW);
    let mut dave = Agent::login(&c, 1, "dave", "d", PW);
    let mut erin = Agent::login(&c, 2, "erin", "e", PW);
    for a in [&mut alice, &mut carol, &mut dave, &mut erin] {
        a.available();
    }
    let to: Vec<String> = ["carol", "dave", "erin", "frank"]
        .iter()
        .map(|u| jid(u))
        .collect();
    // carol and dave as "to", erin as "cc", frank as "bcc".
    alice.send(
        json!({"cmd": "broadcast", "to": [jid("carol"), jid("dave")],
        "cc": [jid("erin")], "bcc": [jid("frank")], "body": "all hands at 3"}),
    );
    for a in [&mut carol, &mut dave, &mut erin] {
        let m = a.expect_body("all hands at 3", T);
        assert_eq!(m["from"], "alice@example.test/a");
        // XEP-0033 §4.6: the bcc recipient is not shown, every shown one is delivered.
        let shown = m["address_details"].as_array().expect("addresses").clone();
        let jids: Vec<&str> = shown.iter().map(|a| a["jid"].as_str().unwrap()).collect();
        assert_eq!(jids, [jid("carol"), jid("dave"), jid("erin")], "{m}");
        assert!(
            shown
                .iter()
                .all(|a| a["type"] != "bcc" && a["delivered"] == "true"),
            "{m}"
        );
    }
    // frank (bcc) was offline: he gets it at login, without the bcc list either.
    let mut frank = Agent::login(&c, 2, "frank", "f", PW);
    frank.available();
    let m = frank.expect_body("all hands at 3", T);
    let shown = m["address_details"].as_array().expect("addresses").clone();
    assert!(
        shown.iter().all(|a| a["jid"] != jid("frank").as_str()),
        "{m}"
    );

    set(&c, "broadcast_max_recipients", "3");
    alice.send(json!({"cmd": "broadcast", "to": to, "body": "too many", "id": "b2"}));
    let e = alice.expect("too-many-recipients error", T, |e| {
        e["ev"] == "message" && e["type"] == "error"
    });
    assert_eq!(e["error"], "not-acceptable", "{e}");
    assert_eq!(e["error_app"], "too_many_recipients", "{e}");
    carol.barrier_from(&mut alice);
    carol.assert_none_yet("the capped broadcast", |e| e["body"] == "too many");
}

#[test]
fn availability_sharing_flips_for_connected_watchers() {
    let c = cluster(&["alice", "bob"]);
    provision(&c, "alice", "bob");
    let mut alice = Agent::login(&c, 0, "alice", "a", PW);
    let mut bob = Agent::login(&c, 1, "bob", "b1", PW);
    alice.available();
    bob.presence(json!({"show": "away", "status": "back soon"}));
    alice.expect_available("bob@example.test/b1", T);

    // Off cluster-wide: alice sees bob unavailable at once, without reconnecting.
    set(&c, "availability_sharing", "off");
    alice.expect_unavailable("bob@example.test/b1", T);
    // bob's own other resource still sees his status.
    let mut bob2 = Agent::login(&c, 2, "bob", "b2", PW);
    bob2.available();
    let own = bob2.expect_available("bob@example.test/b1", T);
    assert_eq!(own["show"], "away");
    // ... while alice gets nothing real for either resource.
    bob.presence(json!({"show": "chat", "status": "free now"}));
    alice.barrier_from(&mut bob);
    alice.assert_none_yet("bob's real availability", |e| {
        e["ev"] == "presence"
            && e["from"].as_str().is_some_and(|f| f.starts_with("bob@"))
            && e["type"] != "unavailable"
    });
    // Nor does bob2's login tell alice that a new resource came online.
    alice.assert_none_yet("any presence of bob's new resource", |e| {
        e["ev"] == "presence" && e["from"] == "bob@example.test/b2"
    });
    // A newly logged-in watcher sees nothing of bob either.
    let mut alice2 = Agent::login(&c, 2, "alice", "a2", PW);
    alice2.available();
    alice2.barrier_from(&mut bob);
    alice2.assert_none_yet("bob's availability", |e| {
        e["ev"] == "presence"
            && e["from"].as_str().is_some_and(|f| f.starts_with("bob@"))
            && e["type"] != "unavailable"
    });

    // On again: the watcher gets the current state.
    set(&c, "availability_sharing", "on");
    let p = alice.expect("bob's current availability", T, |e| {
        e["ev"] == "presence" && e["from"] == "bob@example.test/b1" && e["show"] == "chat"
    });
    assert_eq!(p["status"], "free now");

    // Per user: bob's override off hides only bob.
    c.ctl(0, &["user", "policy", "bob", "availability_sharing", "off"])
        .ok();
    alice.expect_unavailable("bob@example.test/b1", T);
    c.ctl(
        0,
        &["user", "policy", "bob", "availability_sharing", "inherit"],
    )
    .ok();
    alice.expect_available("bob@example.test/b1", T);
}

#[test]
fn messaging_settings_im_enabled_offline_suppression_history() {
    let c = cluster(&["alice", "bob", "carol"]);
    provision(&c, "alice", "bob");
    let mut alice = Agent::login(&c, 0, "alice", "a", PW);
    let mut bob = Agent::login(&c, 1, "bob", "b", PW);
    alice.available();
    bob.available();
    alice.expect_available("bob@example.test/b", T);

    // IM off: refused with a stanza error; presence goes on.
    set(&c, "im_enabled", "off");
    alice.send(json!({"cmd": "message", "to": jid("bob"), "body": "blocked?", "id": "m1"}));
    let e = alice.expect("im disabled error", T, |e| {
        e["ev"] == "message" && e["type"] == "error"
    });
    assert_eq!(e["error"], "not-allowed", "{e}");
    assert_eq!(e["error_app"], "im_disabled", "{e}");
    // (The refusal is decided on alice's node before anything is routed; no barrier
    // message can pass while IM is off.)
    bob.expect_none("a message", Duration::from_millis(500), |e| {
        e["body"] == "blocked?"
    });
    bob.presence(json!({"show": "xa"}));
    alice.expect("presence while IM is off", T, |e| {
        e["ev"] == "presence" && e["show"] == "xa"
    });
    set(&c, "im_enabled", "on");

    // Offline IM suppressed: an error instead of a silent drop.
    set(&c, "suppress_offline_im", "on");
    alice.send(json!({"cmd": "message", "to": jid("carol"), "body": "are you there", "id": "m2"}));
    let e = alice.expect("offline suppressed error", T, |e| {
        e["ev"] == "message" && e["type"] == "error"
    });
    assert_eq!(e["error"], "service-unavailable", "{e}");
    assert_eq!(e["error_app"], "offline_suppressed", "{e}");
    set(&c, "suppress_offline_im", "off");

    // A full offline queue: the same.
    set(&c, "offline_queue_max_per_user", "1");
    alice.chat(&jid("carol"), "first");
    alice.send(json!({"cmd": "message", "to": jid("carol"), "body": "second", "id": "m3"}));
    let e = alice.expect("queue full error", T, |e| {
        e["ev"] == "message" && e["type"] == "error"
    });
    assert_eq!(e["error"], "resource-constraint", "{e}");
    assert_eq!(e["error_app"], "offline_queue_full", "{e}");

    // History logging off: delivered messages carry the no-store hint, and disco says so.
    alice.chat(&jid("bob"), "logged");
    let m = bob.expect_body("logged", T);
    assert_eq!(m["no_store"], false);
    set(&c, "allow_history_logging", "off");
    alice.chat(&jid("bob"), "not logged");
    let m = bob.expect_body("not logged", T);
    assert_eq!(m["no_store"], true, "{m}");
    bob.send(json!({"cmd": "disco_info"}));
    let d = bob.expect("disco#info", T, |e| {
        e["ev"] == "iq_result" && e["tag"] == "disco"
    });
    let xml = d["xml"].as_str().unwrap();
    assert!(xml.contains("urn:presenced:im-policy"), "{xml}");
    assert!(
        xml.contains(r#"<field var="allow_history_logging"><value>0</value>"#),
        "{xml}"
    );
    assert!(xml.contains("http://jabber.org/protocol/address"), "{xml}");
}

#[test]
fn limits_refuse_subscriptions_with_the_reason() {
    let c = cluster(&["alice", "bob", "carol"]);
    set(&c, "max_contact_list_size", "1");
    provision(&c, "alice", "bob");
    let mut alice = Agent::login(&c, 1, "alice", "a", PW);
    alice.available();
    alice.presence(json!({"type": "subscribe", "to": jid("carol")}));
    let e = alice.expect("limit error", T, |e| {
        e["ev"] == "presence" && e["type"] == "error"
    });
    assert_eq!(e["error"], "policy-violation", "{e}");
    assert_eq!(e["error_app"], "contact_list_full", "{e}");
    assert!(
        e["error_text"]
            .as_str()
            .is_some_and(|t| t.contains("maximum contact-list size")),
        "{e}"
    );
    let r = alice.roster();
    assert!(r["items"].get(jid("carol")).is_none(), "{r}");
}

#[test]
fn a_second_login_with_the_same_resource_replaces_the_first_across_nodes() {
    let c = cluster(&["alice", "bob"]);
    provision(&c, "bob", "alice");
    let mut bob = Agent::login(&c, 2, "bob", "b", PW);
    bob.available();
    let mut first = Agent::login(&c, 0, "alice", "same", PW);
    first.available();
    bob.expect_available("alice@example.test/same", T);
    let mut second = Agent::login(&c, 1, "alice", "same", PW);
    let e = first.expect("conflict", T, |e| e["ev"] == "stream_error");
    assert_eq!(e["condition"], "conflict", "{e}");
    second.presence(json!({"status": "second"}));
    let p = bob.expect("the new session's presence", T, |e| {
        e["ev"] == "presence" && e["from"] == "alice@example.test/same" && e["status"] == "second"
    });
    assert_eq!(p["type"], "available");
    // Messages to the full JID reach the new session.
    bob.chat("alice@example.test/same", "which one?");
    second.expect_body("which one?", T);
}

#[test]
fn every_mechanism_direct_tls_and_a_server_chosen_resource() {
    let c = cluster(&["alice", "bob"]);
    for mech in ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"] {
        let mut a = Agent::spawn(mech);
        a.connect(&c, 0, "alice", mech, PW, json!({"mech": mech}));
        let s = a.expect("session start", T, |e| e["ev"] == "session_start");
        assert_eq!(s["mech"], mech, "{s}");
        a.quit();
    }
    // TLS from the first byte on the xmpps port, and no resource: the server picks one.
    let mut a = Agent::spawn("direct-tls");
    a.connect(&c, 1, "bob", "", PW, json!({"direct_tls": true}));
    let s = a.expect("session start", T, |e| e["ev"] == "session_start");
    let j = s["jid"].as_str().unwrap();
    assert!(
        j.len() > "bob@example.test/".len() && j.starts_with("bob@example.test/"),
        "{s}"
    );
}

/// RFC 6120 §6.4.2: an `<auth/>` without an initial response is answered with an
/// empty challenge, and the client's first message follows as a response (loadgen's
/// own SCRAM client; slixmpp always sends the initial response).
#[test]
fn scram_without_an_initial_response_gets_an_empty_challenge() {
    let c = cluster(&["nir0"]);
    for mech in ["SCRAM-SHA-256", "SCRAM-SHA-1"] {
        let json = c.loadgen_logins(0, "nir", 1, PW, mech, &["--no-initial-response"]);
        assert!(json["ok"] == 1 && json["errors"] == 0, "{mech}: {json}");
    }
}

#[test]
fn pending_requests_wait_for_login_directed_presence_and_dropped_connections() {
    let c = cluster(&["carol", "dave", "erin"]);
    let mut carol = Agent::login(&c, 0, "carol", "c", PW);
    carol.roster(); // an interested resource (RFC 6121 §2.1.6) gets roster pushes
    carol.available();
    carol.presence(json!({"type": "subscribe", "to": jid("dave")}));
    carol.expect("pending push", T, |e| {
        e["ev"] == "roster_push" && e["items"][jid("dave")]["ask"] == "subscribe"
    });
    // dave was offline: the request waits in Raft and reaches him at login elsewhere.
    let mut dave = Agent::login(&c, 2, "dave", "d", PW);
    dave.available();
    dave.expect("the stored request", T, |e| {
        e["ev"] == "presence" && e["type"] == "subscribe" && e["from"] == jid("carol")
    });
    // Roster versioning: asking with the current version gets an empty result.
    let r = dave.roster();
    let ver = r["ver"].as_str().unwrap().to_string();
    dave.send(json!({"cmd": "roster_get", "ver": ver}));
    let r2 = dave.expect("versioned roster", T, |e| e["ev"] == "roster");
    assert_eq!(r2["empty"], true, "{r2}");
    dave.send(json!({"cmd": "roster_get", "ver": "12345"}));
    let r3 = dave.expect("full roster", T, |e| e["ev"] == "roster");
    assert_eq!(r3["empty"], false, "{r3}");

    // Directed presence reaches someone with no subscription ...
    let mut erin = Agent::login(&c, 1, "erin", "e", PW);
    erin.presence(json!({"to": jid("dave"), "status": "knock knock"}));
    let p = dave.expect_available("erin@example.test/e", T);
    assert_eq!(p["status"], "knock knock");
    carol.barrier_from(&mut erin);
    carol.assert_none_yet("erin's presence", |e| {
        e["ev"] == "presence" && e["from"].as_str().is_some_and(|f| f.starts_with("erin@"))
    });
    // ... and when erin's client dies without closing its stream, dave is told.
    drop(erin);
    dave.expect_unavailable("erin@example.test/e", T);
}
