//! Stanza handling past the reader: the bytes a bound client sends, through a real c2s
//! session of `presenced-xmpp` (its reader task, dispatch, message/presence/iq/roster
//! handlers) into a real router over a one-node cluster (`presenced-testkit`, started
//! once per process), and what the router hands the other local sessions.
//!
//! Each input is one client connection on loopback, served by
//! `presenced_xmpp::fuzzing::serve_connection` (what `Xmpp::serve` runs per accepted
//! connection) with `require_tls = false`: the harness negotiates as a real client
//! would (stream header, SASL SCRAM-SHA-256 as `alice`, restart, bind `fuzz`), then
//! sends the input as the rest of its stream and closes its side. Meanwhile `bob` is
//! online (router session `bob/phone`, available, mutual subscription with alice, its
//! messages taken as a client adapter takes them) and `zz/barrier` is connected but
//! unavailable; `carol` is offline with a pending request to alice.
//!
//! Input: the client's bytes after the bind request (stanzas, whitespace, a stream end).
//!
//! Properties, beyond "no panic":
//! - every router delivery to another session that names a sender names alice: her
//!   full JID (message, presence, query), her bare JID (subscription); never what the
//!   client wrote in `from` (RFC 6120 §8.1.2.1: the server stamps it); and a message
//!   is one the client sent, with its id, body, subject and thread unchanged;
//! - the server's stream reads back well formed (header, stanzas, `</stream:stream>`),
//!   each stanza addressed to alice or to no one, a stream error only as its last
//!   stanza;
//! - the iq requests the client sent (as the harness reads them, with the same
//!   reader and limits) are answered in order, one result or error each, unless routed
//!   to an endpoint (then that endpoint got the query); only a stream error leaves the
//!   rest unanswered, and nothing that was not asked is answered;
//! - the connection ends within a few seconds, and what it left running (a message
//!   routed again) soon after: bounded work per input.
//!
//! State: everything alice can change durably (rosters, subscriptions, pending
//! requests, offline messages) is reset after an input that wrote to Raft, by one
//! batch that deletes and re-creates the accounts; a roster push to `zz/barrier` at
//! the end of that batch says the router has handled every event before it, so no
//! input sees what an earlier one did.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use presenced_fuzz::bounded;
use presenced_model::{Command, Credentials, NewContact, Reply};
use presenced_router::queue::Receiver;
use presenced_router::{Address, Availability, Delivery, Presence, Session};
use presenced_testkit::{DOMAIN, TestCluster};
use presenced_xmpp::xml::{Element, Frame, Limits, NS_CLIENT, NS_STREAM, StreamReader};
use presenced_xmpp::{CertSource, Xmpp, XmppConfig};
use sha2::Digest;
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[path = "stanza_handling/client.rs"]
mod client;
#[path = "stanza_handling/seeds.rs"]
mod seeds;

use client::*;
use seeds::seeds;

const MAX_INPUT: usize = 8 * 1024;
/// One input's connection, from connect to the end of its checks.
const DEADLINE: Duration = Duration::from_secs(5);
const ALICE_FULL: &str = "alice@example.test/fuzz";
const ALICE_BARE: &str = "alice@example.test";
const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='example.test' version='1.0'>";
const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const BIND_ID: &str = "fuzz-bind";
const BIND: &str = "<iq type='set' id='fuzz-bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>fuzz</resource></bind></iq>";
/// A contact in another domain: never an account alice could touch.
const BARRIER_JID: &str = "barrier@elsewhere.test";

struct World {
    rt: tokio::runtime::Runtime,
    st: Mutex<Fixture>,
}

struct Fixture {
    cluster: TestCluster,
    xmpp: Xmpp,
    listener: TcpListener,
    addr: SocketAddr,
    /// What the deletions in a reset are followed by: the accounts and their rosters.
    baseline: Vec<Command>,
    /// `zz/barrier`: gets the roster push that ends each reset; what else it got
    /// meanwhile, for the input's checks.
    barrier: (Session, Receiver<Delivery>),
    barrier_got: Vec<Delivery>,
    /// Resets so far, and the applied index and the state after the last one.
    resets: u64,
    clean_index: u64,
    clean: presenced_model::State,
    /// Tasks alive between inputs (the cluster's, the router's).
    tasks: usize,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let st = rt.block_on(async {
            let cluster = TestCluster::start(1).await;
            let creds = |u: &str| Credentials::derive(u, DOMAIN, "pw", 1);
            let mut baseline: Vec<Command> = ["alice", "bob", "carol"]
                .into_iter()
                .map(|u| Command::CreateAccount {
                    user: u.into(),
                    credentials: creds(u),
                })
                .collect();
            let contact = |user: &str, c: &str| NewContact {
                user: user.into(),
                contact: format!("{c}@{DOMAIN}"),
                name: None,
                groups: vec![],
            };
            baseline.push(Command::AddContacts {
                entries: vec![contact("alice", "bob"), contact("bob", "alice")],
            });
            baseline.push(Command::Subscribe {
                user: "carol".into(),
                contact: ALICE_BARE.into(),
            });
            for c in baseline.iter().cloned().chain([Command::CreateAccount {
                user: "zz".into(),
                credentials: creds("zz"),
            }]) {
                cluster
                    .write_everywhere(c)
                    .await
                    .expect("baseline command applies");
            }
            let router = cluster.nodes[0].router.clone();
            let barrier = router
                .open_session("zz", Some("barrier"))
                .expect("barrier session");
            barrier.0.roster_requested();
            let cfg = XmppConfig {
                require_tls: false,
                ..XmppConfig::default()
            };
            let certs = std::env::temp_dir().join("presenced-fuzz-stanza-certs");
            let xmpp = Xmpp::new(router, cfg, &CertSource::SelfSigned { dir: certs })
                .expect("xmpp service");
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("address");
            let clean_index = cluster.nodes[0].node.applied_index();
            let clean = cluster.nodes[0].node.read(|s| s.clone());
            Fixture {
                cluster,
                xmpp,
                listener,
                addr,
                baseline,
                barrier,
                barrier_got: Vec::new(),
                resets: 0,
                clean_index,
                clean,
                tasks: tokio::runtime::Handle::current()
                    .metrics()
                    .num_alive_tasks(),
            }
        });
        World {
            rt,
            st: Mutex::new(st),
        }
    })
}

/// Delete and re-create everything alice can change, then wait for the barrier's push.
async fn reset(w: &mut Fixture) {
    w.resets += 1;
    let mark = w.resets.to_string();
    let mut commands: Vec<Command> = ["alice", "bob", "carol"]
        .into_iter()
        .map(|u| Command::DeleteAccount { user: u.into() })
        .collect();
    commands.extend(w.baseline.iter().cloned());
    commands.push(Command::OfflineAck {
        user: "zz".into(),
        upto: u64::MAX,
    });
    commands.push(Command::UpdateItem {
        user: "zz".into(),
        contact: BARRIER_JID.into(),
        name: Some(mark.clone()),
        groups: vec![],
    });
    let out = w.cluster.write(Command::Batch { commands }).await;
    let Ok(Reply::Batch { outcomes }) = out else {
        panic!("reset refused: {out:?}")
    };
    assert!(
        outcomes.iter().all(|o| o.is_ok()),
        "a reset command was refused: {outcomes:?}"
    );
    let rx = &mut w.barrier.1;
    loop {
        let mut d = tokio::time::timeout(DEADLINE, rx.recv())
            .await
            .expect("the barrier's roster push within the deadline")
            .expect("the barrier session stays open");
        take(&mut d);
        if let Delivery::RosterPush {
            jid, item: Some(i), ..
        } = &d
            && jid == BARRIER_JID
            && i.name.as_deref() == Some(mark.as_str())
        {
            break;
        }
        w.barrier_got.push(d);
    }
    w.clean_index = w.cluster.nodes[0].node.applied_index();
    w.clean = w.cluster.nodes[0].node.read(|s| s.clone());
}

/// Let what the connection left behind finish (a message queued for the session
/// when it closed is routed again from a task, into the offline queue): until no more
/// tasks are alive than between inputs.
async fn settle(w: &Fixture) {
    let rt = tokio::runtime::Handle::current();
    for i in 0..3_000 {
        if rt.metrics().num_alive_tasks() <= w.tasks {
            return;
        }
        if i < 100 {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    panic!(
        "tasks still running 3 s after the connection ended: {} (between inputs: {})",
        rt.metrics().num_alive_tasks(),
        w.tasks
    );
}

/// Did anything change the durable state since the last reset? (Refused writes, and
/// writes that changed nothing, need no reset.)
fn dirty(w: &mut Fixture) -> bool {
    let node = &w.cluster.nodes[0].node;
    let index = node.applied_index();
    if index == w.clean_index {
        return false;
    }
    if node.read(|s| *s == w.clean) {
        w.clean_index = index;
        return false;
    }
    true
}

/// What the c2s session takes from a `<message/>`: its id, and its first body,
/// subject (each without `xml:lang`) and thread.
fn message_fields(el: &Element) -> [Option<String>; 4] {
    let child = |name: &str, lang_free: bool| {
        el.elements()
            .find(|c| {
                c.name == name && c.ns == NS_CLIENT && !(lang_free && c.attr("xml:lang").is_some())
            })
            .map(Element::text)
    };
    [
        el.attr("id").map(str::to_string),
        child("body", true),
        child("subject", true),
        child("thread", false),
    ]
}

/// A delivery to another session names alice as its sender, stamped by the server,
/// and a message is one the client sent, its text unchanged.
fn check_delivery(to: &str, d: &Delivery, sent: &[Element]) {
    let full = Address::endpoint("alice", "fuzz");
    let bare = Address::user("alice");
    match d {
        Delivery::Message(m) => {
            assert_eq!(m.from, full, "{to} got a message not from alice: {m:?}");
            let fields = [
                m.id.clone(),
                m.body.clone(),
                m.subject.clone(),
                m.thread.clone(),
            ];
            assert!(
                sent.iter()
                    .any(|el| el.name == "message" && message_fields(el) == fields),
                "{to} got a message the client did not send: {m:?}"
            );
        }
        Delivery::Query(q) => assert_eq!(q.from, full, "{to} got a query not from alice: {q:?}"),
        Delivery::Presence { from, .. } => {
            assert_eq!(from, &full, "{to} got presence not from alice: {d:?}")
        }
        Delivery::Subscription { from, .. } => {
            assert_eq!(from, &bare, "{to} got a subscription not from alice: {d:?}")
        }
        Delivery::RosterPush { .. } | Delivery::Replaced | Delivery::Close { .. } => {}
    }
}

/// Does `to` name alice, any resource or none (as the server parses JIDs)?
fn is_alice(to: &str) -> bool {
    jid::Jid::new(to).ok().is_some_and(|j| {
        j.node().map(|n| n.as_str()) == Some("alice") && j.domain().as_str() == DOMAIN
    })
}

/// Does `to` name this very session (as the server parses JIDs)?
fn to_this_session(to: Option<&str>) -> bool {
    to.and_then(|t| jid::Jid::new(t).ok()).is_some_and(|j| {
        j.node().map(|n| n.as_str()) == Some("alice")
            && j.domain().as_str() == DOMAIN
            && j.resource().map(|r| r.as_str()) == Some("fuzz")
    })
}

/// What an adapter does with a message it wrote to its client: the receipt is done
/// (else the router routes the message again when the session goes away).
fn take(d: &mut Delivery) {
    if let Delivery::Message(m) = d
        && let Some(r) = m.take_receipt()
    {
        r.done();
    }
}

/// The id of a request routed to a session (it is that endpoint's to answer).
fn routed_ids(d: &Delivery) -> Option<String> {
    match d {
        Delivery::Query(q) if q.kind.is_request() => Some(q.id.clone()),
        _ => None,
    }
}

async fn one(w: &mut Fixture, input: &[u8]) {
    // What the barrier got after the previous input's checks belongs to that input.
    if dirty(w) {
        reset(w).await;
    }
    w.barrier_got.clear();
    while let Some(mut d) = w.barrier.1.try_recv() {
        take(&mut d);
    }
    let router = w.cluster.nodes[0].router.clone();
    let (bob, mut bob_rx) = router
        .open_session("bob", Some("phone"))
        .expect("bob's session");
    bob.roster_requested();
    bob.set_presence(Presence::Available(Availability::default()));
    while let Some(mut d) = bob_rx.try_recv() {
        take(&mut d);
    }
    // bob's adapter: takes what bob is handed while the connection runs, as a client
    // connection would (so alice's XEP-0198 acknowledgements can follow).
    let (stop_bob, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let bob_adapter = tokio::spawn(async move {
        let mut got = Vec::new();
        loop {
            tokio::select! {
                d = bob_rx.recv() => match d {
                    Some(mut d) => {
                        take(&mut d);
                        got.push(d);
                    }
                    None => break,
                },
                _ = &mut stopped => break,
            }
        }
        (bob_rx, got)
    });

    let (tcp, accepted) = tokio::join!(TcpStream::connect(w.addr), w.listener.accept());
    let (server_tcp, _) = accepted.expect("accept");
    let xmpp = w.xmpp.clone();
    let server = tokio::spawn(async move {
        assert!(
            presenced_xmpp::fuzzing::serve_connection(&xmpp, server_tcp).await,
            "the connection was refused by the caps"
        );
    });
    let out = tokio::time::timeout(DEADLINE, client(tcp.expect("connect"), input))
        .await
        .expect("the server closed the stream within the deadline");
    tokio::time::timeout(DEADLINE, server)
        .await
        .expect("the connection ended within the deadline")
        .expect("the connection's task did not panic");
    let _ = stop_bob.send(());
    let (mut bob_rx, bob_got) = bob_adapter.await.expect("bob's adapter");
    settle(w).await;
    if dirty(w) {
        reset(w).await;
    }
    let debug = std::env::var_os("PRESENCED_FUZZ_DEBUG").is_some();
    let limits = presenced_xmpp::fuzzing::limits(&w.xmpp);
    let sent = client_stanzas(limits, input);
    let mut routed: Vec<String> = Vec::new();
    let mut got: Vec<(&str, Delivery)> = bob_got.into_iter().map(|d| ("bob/phone", d)).collect();
    got.extend(
        std::mem::take(&mut w.barrier_got)
            .into_iter()
            .map(|d| ("zz/barrier", d)),
    );
    for (to, rx) in [("bob/phone", &mut bob_rx), ("zz/barrier", &mut w.barrier.1)] {
        while let Some(mut d) = rx.try_recv() {
            take(&mut d);
            got.push((to, d));
        }
    }
    for (to, d) in &got {
        if debug {
            eprintln!("{to} got {d:?}");
        }
        check_delivery(to, d, &sent);
        routed.extend(routed_ids(d));
    }
    drop(bob);
    if debug {
        for el in &out.stanzas {
            eprintln!("server: {}", el.to_stanza());
        }
        eprintln!(
            "server ended: {} ({:?}); routed {routed:?}; resets {}",
            out.ended, out.error, w.resets
        );
    }

    // The server's stream: well formed, closed, stanzas only for alice.
    assert!(
        out.ended,
        "the server's stream did not end with </stream:stream>: {:?}",
        out.error
    );
    let stream_error = out
        .stanzas
        .iter()
        .position(|el| el.name == "error" && el.ns == NS_STREAM);
    if let Some(i) = stream_error {
        assert_eq!(
            i + 1,
            out.stanzas.len(),
            "stanzas after a stream error: {:?}",
            out.stanzas
        );
    }
    let mut responses: Vec<Option<String>> = Vec::new();
    for el in &out.stanzas {
        if let Some(to) = el.attr("to") {
            // Her full or bare JID, or (a message to one of her resources that is not
            // there, delivered as to her bare JID, RFC 6121 §8.5.3.2.1, `to` kept as
            // written) another resource of hers.
            assert!(is_alice(to), "alice was sent a stanza for {to}: {el:?}");
        }
        if el.name != "iq" || el.ns != NS_CLIENT {
            continue;
        }
        // The server's answers carry no `to`; what was routed to the session (and its
        // pushes and pings) is addressed to it.
        let ty = el.attr("type").unwrap_or_default();
        if el.attr("to").is_some() {
            if matches!(ty, "get" | "set") && el.attr("from") == Some(ALICE_FULL) {
                routed.extend(el.attr("id").map(str::to_string));
            }
        } else if matches!(ty, "result" | "error") {
            responses.push(el.attr("id").map(str::to_string));
        }
    }

    // Every request answered in order (or routed), until a stream error at most.
    let mut next = 0;
    let mut unanswered = None;
    for el in &sent {
        if el.name != "iq" || el.ns != NS_CLIENT {
            continue;
        }
        let id = el.attr("id").map(str::to_string);
        let ty = el.attr("type");
        let asks = id.is_none() || !matches!(ty, Some("result" | "error"));
        // A request to the session's own full JID is routed back to it, and may be
        // dropped unwritten when the stream closes right after: not an answer.
        let to_self =
            id.is_some() && matches!(ty, Some("get" | "set")) && to_this_session(el.attr("to"));
        if !asks || to_self {
            continue;
        }
        if next < responses.len() && responses[next] == id {
            next += 1;
        } else if let Some(i) = id
            .as_ref()
            .and_then(|id| routed.iter().position(|r| r == id))
        {
            routed.swap_remove(i);
        } else {
            unanswered = Some(el);
            break;
        }
    }
    if let Some(el) = unanswered {
        assert!(
            stream_error.is_some(),
            "an iq was neither answered nor routed, and the stream did not fail: {el:?}\nserver sent {:?}",
            out.stanzas
        );
    }
    assert_eq!(
        next,
        responses.len(),
        "the server answered what was not asked (or out of order): answers {responses:?}, \
         {next} matched; server sent {:?}",
        out.stanzas
    );
}

libfuzzer_sys::fuzz_target!(
    init: {
        presenced_fuzz::write_seeds_and_exit_if_asked(seeds);
    },
    |data: &[u8]| {
        let Some(data) = bounded(data, MAX_INPUT) else { return };
        let w = world();
        let mut st = w.st.lock().unwrap_or_else(|p| p.into_inner());
        w.rt.block_on(one(&mut st, data));
    }
);
