//! Mutual TLS between the nodes, with real node processes: what a capture of the wire
//! between them holds, and who is refused (no certificate, another cluster's, an
//! expired one, an operator's, a valid one speaking for another node). Rotation is in
//! `tls_rotation.rs`.

use std::process::Command;
use std::time::{Duration, Instant};

use presenced_e2e::tap::{Tap, contains};
use presenced_e2e::tls::{metric_sum, node_status, runtime};
use presenced_e2e::xmpp::{Agent, jid};
use presenced_e2e::{Cluster, Opts, SECRET, free_ports};
use presenced_tls::{Expect, Identity, Material, Paths, Transport, pki};
use serde_json::json;

const PW: &str = "tls-pw-1";
const T: Duration = Duration::from_secs(10);
const STATUS: &str = "status-canary-7781";
const BODY: &str = "stanza-canary-5521";
const REPLY: &str = "reply-canary-9034";
const ADMIN_PW: &str = "admin-canary-pw-4471";

/// alice on node 1 and bob on node 2 exchange presence with a status and two
/// messages; an account is created through a tap on node 1's admin port. Returns what
/// crossed the taps between the nodes and the admin tap.
fn chat_over_taps(extra: &str) -> (Vec<u8>, Vec<u8>) {
    let c = Cluster::start_with(
        3,
        Opts {
            tap: true,
            extra: extra.into(),
            ..Opts::default()
        },
    );
    let admin_tap = Tap::start(free_ports(1)[0], c.nodes[0].admin);
    let admin = format!("127.0.0.1:{}", admin_tap.port);
    let ctl = c.ctl_runner();
    for (u, pw) in [("alice", PW), ("bob", PW), ("carol", ADMIN_PW)] {
        ctl.run(&admin, SECRET, &["user", "add", u, "--password", pw])
            .ok();
    }
    c.ctl(0, &["roster", "add", "alice", "bob"]).ok();
    c.ctl(0, &["roster", "add", "bob", "alice"]).ok();
    let mut alice = Agent::login(&c, 0, "alice", "a", PW);
    let mut bob = Agent::login(&c, 1, "bob", "b", PW);
    bob.available();
    alice.presence(json!({"status": STATUS}));
    bob.expect("alice's status", T, |e| {
        e["ev"] == "presence" && e["status"] == STATUS
    });
    alice.chat(&jid("bob"), BODY);
    bob.expect_body(BODY, T);
    bob.chat(&jid("alice"), REPLY);
    alice.expect_body(REPLY, T);
    let wire = c
        .nodes
        .iter()
        .flat_map(|n| n.tap.as_ref().expect("tapped").captured())
        .collect();
    (wire, admin_tap.captured())
}

/// How the secret travels in a plain-text HTTP/2 header: HPACK Huffman-coded (the
/// last byte, which may hold padding, left out).
fn hpack_huffman(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    httlib_huffman::encode(s.as_bytes(), &mut out).unwrap();
    out.pop();
    out
}

#[test]
fn a_capture_between_nodes_holds_no_stanza_status_or_secret() {
    let secret_h2 = hpack_huffman(SECRET);
    let secrets: [&[u8]; 7] = [
        STATUS.as_bytes(),
        BODY.as_bytes(),
        REPLY.as_bytes(),
        SECRET.as_bytes(),
        &secret_h2,
        ADMIN_PW.as_bytes(),
        b"alice@example.test",
    ];
    let (wire, admin) = chat_over_taps("");
    assert!(
        wire.len() > 20_000,
        "the taps saw the traffic: {} bytes",
        wire.len()
    );
    assert!(
        admin.len() > 1_000,
        "the admin tap saw the calls: {} bytes",
        admin.len()
    );
    for s in secrets {
        let s_txt = String::from_utf8_lossy(s);
        assert!(
            !contains(&wire, s),
            "{s_txt} crossed the wire between nodes in clear"
        );
        assert!(
            !contains(&admin, s),
            "{s_txt} crossed the admin link in clear"
        );
    }
    // The control: the same run in the explicit plain-text mode shows all of it, so
    // the taps do see what a capture would.
    let (wire, admin) = chat_over_taps("[cluster_tls]\nmode = \"plaintext\"\n");
    for s in [
        STATUS.as_bytes(),
        BODY.as_bytes(),
        REPLY.as_bytes(),
        &secret_h2,
    ] {
        let s_txt = String::from_utf8_lossy(s);
        assert!(
            contains(&wire, s),
            "plain text: {s_txt} not seen on the tap"
        );
    }
    assert!(contains(&admin, ADMIN_PW.as_bytes()));
    assert!(contains(&admin, &secret_h2));
}

fn material(dir: &std::path::Path, stem: &str) -> Transport {
    Transport::Mutual(Material::load(Paths::in_dir(dir, stem)).expect("material"))
}

fn refusals(c: &Cluster, i: usize, listener: &str, reason: &str) -> f64 {
    metric_sum(
        &c.metrics(i),
        "presenced_tls_refused_total",
        &[("listener", listener), ("reason", reason)],
    )
}

#[test]
fn peers_without_a_certificate_of_this_cluster_for_the_node_they_claim_are_refused() {
    let mut c = Cluster::start(3);
    let foreign = c.dir.path().join("foreign");
    pki::init_ca(&foreign.join("ca"), "other", 30).unwrap();
    let trust = std::fs::read_to_string(foreign.join("ca").join(pki::CA_CERT)).unwrap();
    let i = pki::issue(&foreign.join("ca"), &Identity::Node(2), &[], 30).unwrap();
    pki::write_issued(&foreign.join("n2"), "node", &i, Some(&trust)).unwrap();
    let ours = std::fs::read_to_string(c.pki.ca_file()).unwrap();
    let day = 86_400;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let expired = c.dir.path().join("expired");
    let i = pki::issue_between(
        &c.pki.ca_dir(),
        &Identity::Node(2),
        &[],
        now - 3 * day,
        now - day,
    )
    .unwrap();
    pki::write_issued(&expired, "node", &i, Some(&ours)).unwrap();
    // Material will not load an expired certificate as its own unless told to.
    let expired =
        Transport::Mutual(Material::load_unchecked(Paths::in_dir(&expired, "node")).unwrap());
    let no_cert = Transport::Mutual(
        Material::load(Paths {
            ca: c.pki.ca_file(),
            cert: None,
        })
        .unwrap(),
    );
    let operator = material(&c.pki.operator_dir("ops"), "operator");
    // Another cluster's node that trusts ours (so it is the server that refuses), and
    // one of another cluster altogether.
    let other_cluster = Transport::Mutual(
        Material::load_unchecked(Paths {
            ca: c.pki.ca_file(),
            cert: Some((foreign.join("n2/node.pem"), foreign.join("n2/node.key"))),
        })
        .unwrap(),
    );
    let other_altogether = material(&foreign.join("n2"), "node");
    let rt = runtime();
    for i in 0..3 {
        let id = c.nodes[i].id;
        rt.block_on(async {
            for (what, t) in [
                ("plain text", &Transport::Plaintext),
                ("no certificate", &no_cert),
                ("another cluster's certificate", &other_cluster),
                ("another cluster altogether", &other_altogether),
                ("an expired certificate", &expired),
            ] {
                let r = node_status(&c, i, t, id).await;
                assert!(r.is_err(), "node {id} let in a peer with {what}");
            }
            let e = node_status(&c, i, &operator, id).await.unwrap_err();
            assert!(
                e.contains("PermissionDenied"),
                "operator on the cluster port: {e}"
            );
            // A valid node certificate works (the control) ...
            node_status(&c, i, &c.peer_transport(9), id).await.unwrap();
            // ... but only with the node it was dialled for.
            let wrong = if id == 1 { 2 } else { 1 };
            let e = node_status(&c, i, &c.peer_transport(9), wrong)
                .await
                .unwrap_err();
            assert!(e.contains("expected node"), "{e}");
        });
        for reason in ["no_certificate", "unknown_ca", "expired"] {
            assert!(
                refusals(&c, i, "cluster", reason) >= 1.0,
                "node {id}: no {reason} counted"
            );
        }
        assert!(refusals(&c, i, "rpc", "not_a_node") >= 1.0);
    }

    // An operator certificate is enough for presencectl, with no secret at all; an
    // operator certificate of another cluster is refused.
    let op = c.pki.operator_dir("ops");
    let run = |cert_dir: &std::path::Path| {
        Command::new(c.bin("presencectl"))
            .args([
                "--node",
                &c.nodes[1].admin_addr(),
                "--json",
                "cluster",
                "status",
            ])
            .arg("--ca")
            .arg(c.pki.ca_file())
            .arg("--cert")
            .arg(cert_dir.join(pki::OPERATOR_CERT))
            .arg("--key")
            .arg(cert_dir.join(pki::OPERATOR_KEY))
            .env_remove("PRESENCED_SECRET")
            .output()
            .unwrap()
    };
    let o = run(&op);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let i = pki::issue(
        &foreign.join("ca"),
        &Identity::Operator("ops".into()),
        &[],
        30,
    )
    .unwrap();
    pki::write_issued(&foreign.join("op"), "operator", &i, Some(&ours)).unwrap();
    // presencectl itself will not present it ...
    let o = run(&foreign.join("op"));
    assert!(!o.status.success(), "another cluster's operator got in");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not valid under the trust bundle"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // ... and the node refuses it when presented anyway.
    let forged = Transport::Mutual(
        Material::load_unchecked(Paths::in_dir(&foreign.join("op"), "operator")).unwrap(),
    );
    rt.block_on(async {
        use presenced_proto::admin::Empty;
        use presenced_proto::admin::admin_client::AdminClient;
        let ep = presenced_tls::endpoint(&c.nodes[1].admin_addr()).unwrap();
        let r = match forged.connect(&ep, Expect::AnyNode).await {
            Err(_) => Err(()),
            Ok(ch) => AdminClient::new(ch)
                .settings_show(Empty {})
                .await
                .map(|_| ())
                .map_err(|_| ()),
        };
        assert!(r.is_err(), "a forged operator certificate was let in");
    });
    assert!(refusals(&c, 1, "admin", "unknown_ca") >= 1.0);

    // A valid certificate of node 9 cannot speak for node 2: a vote, an append and a
    // peer link that claim node 2 are refused.
    rt.block_on(async {
        use presenced_proto::raft::RaftBytes;
        use presenced_proto::raft::raft_client::RaftClient;
        use presenced_proto::router::Frame;
        use presenced_proto::router::peer_client::PeerClient;
        let ch = c.cluster_channel(0).await;
        let mut raft = RaftClient::with_interceptor(ch.clone(), presenced_e2e::with_secret);
        let vote = json!({"vote": {"leader_id": {"term": 99, "node_id": 2}, "committed": false},
                          "last_log_id": null});
        let e = raft
            .vote(RaftBytes {
                format: 0,
                data: vote.to_string().into_bytes(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        assert!(e.message().contains("claims node 2"), "{e:?}");
        let append = json!({"vote": {"leader_id": {"term": 99, "node_id": 2}, "committed": true},
                            "prev_log_id": null, "entries": [], "leader_commit": null});
        let e = raft
            .append_entries(RaftBytes {
                format: 0,
                data: append.to_string().into_bytes(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        let mut peer = PeerClient::with_interceptor(ch, presenced_e2e::with_secret);
        let hello = Frame {
            format: 0,
            from_node: 2,
            epoch: 1,
            events: br#"[{"e": "hello", "sessions": []}]"#.to_vec(),
        };
        let e = peer
            .link(tokio_stream::iter(vec![hello]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    });
    assert!(refusals(&c, 0, "rpc", "claim_mismatch") >= 3.0);
    // The cluster is unharmed: the term did not move to 99.
    let s = c.ctl_json(0, &["cluster", "status"]);
    assert!(s["term"].as_u64().unwrap() < 99, "{s}");

    // A real node process restarted with another cluster's certificate is cut off by
    // every peer, and rejoins once it has its own again (a reload, no restart).
    let d3 = c.pki.node_dir(3);
    let saved: Vec<(String, Vec<u8>)> = [pki::CA_CERT, pki::NODE_CERT, pki::NODE_KEY]
        .iter()
        .map(|f| (f.to_string(), std::fs::read(d3.join(f)).unwrap()))
        .collect();
    c.kill(2);
    let i = pki::issue(&foreign.join("ca"), &Identity::Node(3), &[], 30).unwrap();
    pki::write_issued(&d3, "node", &i, Some(&trust)).unwrap();
    c.start_node(2);
    c.wait_listening(2);
    c.ctl(0, &["settings", "set", "max_contact_list_size", "345"])
        .ok();
    // Node 3 refuses the leader's server certificate when it calls elections, and the
    // leader refuses node 3's when it sends appends: neither gets through.
    let deadline = Instant::now() + Duration::from_secs(15);
    while refusals(&c, 2, "outbound", "unknown_ca") < 1.0
        || refusals(&c, 0, "outbound", "unknown_ca") + refusals(&c, 1, "outbound", "unknown_ca")
            < 1.0
    {
        assert!(
            Instant::now() < deadline,
            "node 3 and its peers did not refuse each other"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let o = c.ctl(0, &["--json", "cluster", "status"]);
    assert!(o.code == 0, "{}", o.stderr);
    for (f, b) in &saved {
        pki::write_file(&d3.join(f), b, f.ends_with(".key")).unwrap();
    }
    c.signal(2, "HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let o = c.ctl(2, &["--json", "settings", "show"]);
        if o.code == 0 && o.stdout.contains("345") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 3 did not rejoin: {}",
            o.stderr
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_single_node_generates_its_material_and_plain_text_is_warned_about() {
    // `generate = true` (the single-node config): the node makes a CA, its own and an
    // operator certificate at first start; presencectl --config then just works.
    let c = Cluster::spawn(
        1,
        Opts {
            extra: "[cluster_tls]\ngenerate = true\ndir = \"gen-tls\"\n".into(),
            ..Opts::default()
        },
    );
    let dir = c.nodes[0].config.parent().unwrap().join("gen-tls");
    for f in [
        "ca/ca.pem",
        "ca/ca.key",
        "node.pem",
        "node.key",
        "ca.pem",
        "operator.pem",
    ] {
        assert!(dir.join(f).exists(), "{f} not generated");
    }
    let ctl = |args: &[&str]| {
        Command::new(c.bin("presencectl"))
            .arg("--config")
            .arg(&c.nodes[0].config)
            .args(args)
            .env_remove("PRESENCECTL_NODE")
            .env_remove("PRESENCED_SECRET")
            .env_remove("PRESENCECTL_CA")
            .output()
            .unwrap()
    };
    let o = ctl(&["cluster", "init"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    c.wait_healthy(0, Duration::from_secs(20));
    let log = std::fs::read_to_string(&c.nodes[0].log).unwrap();
    assert!(log.contains("created a cluster CA"), "{log}");
    assert!(!log.contains("WITHOUT TLS"));

    // The explicit plain-text mode starts, and says so.
    let p = Cluster::spawn(
        1,
        Opts {
            extra: "[cluster_tls]\nmode = \"plaintext\"\n".into(),
            ..Opts::default()
        },
    );
    p.ctl(0, &["cluster", "init"]).ok();
    let log = std::fs::read_to_string(&p.nodes[0].log).unwrap();
    assert!(log.contains("WITHOUT TLS"), "{log}");
}
