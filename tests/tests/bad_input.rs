//! Bad input from an operator or a peer: clear errors, distinct exit codes, no damage.

use std::process::Command;
use std::time::Duration;

use presenced_e2e::{Cluster, Opts, SECRET, bin_dir, free_ports};

#[test]
fn cli_errors_have_messages_and_exit_codes() {
    let mut c = Cluster::start_with(
        3,
        Opts {
            timeout_ms: 2_000,
            ..Opts::default()
        },
    );
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["settings", "set", "no_such_setting", "1"],
            2,
            "unknown setting",
        ),
        (
            &["settings", "set", "max_watchers", "lots"],
            2,
            "not a number",
        ),
        (&["settings", "set", "im_enabled", "maybe"], 2, "on/off"),
        (&["settings", "reset", "nope"], 2, "unknown setting"),
        (&["user", "remove", "ghost"], 3, "unknown user ghost"),
        (&["roster", "show", "ghost"], 3, "unknown user ghost"),
        (&["roster", "add", "ghost", "bob"], 3, "unknown user ghost"),
        (&["user", "add", "bad name"], 2, "user name"),
        (
            &["user", "policy", "ghost", "availability_sharing", "on"],
            3,
            "unknown user",
        ),
        (&["cluster", "init"], 4, "already initialised"),
        (&["cluster", "remove-node", "42"], 3, "not a member"),
    ];
    for (args, code, msg) in cases {
        let o = c.ctl(1, args);
        assert_eq!(
            o.code, *code,
            "{args:?}: stdout={} stderr={}",
            o.stdout, o.stderr
        );
        assert!(
            o.stderr.contains(msg),
            "{args:?}: {:?} lacks {msg:?}",
            o.stderr
        );
        assert_eq!(
            o.stderr.trim().lines().count(),
            1,
            "{args:?}: not one line: {:?}",
            o.stderr
        );
    }
    c.ctl(0, &["user", "add", "eve", "--password", "pw-eve-1"])
        .ok();
    let o = c.ctl(2, &["user", "add", "Eve", "--password", "x"]);
    assert_eq!(o.code, 4, "{}", o.stderr);
    assert!(o.stderr.contains("already exists"), "{}", o.stderr);
    let o = c.ctl(
        0,
        &["user", "policy", "eve", "availability_sharing", "sometimes"],
    );
    assert_eq!(o.code, 2, "{}", o.stderr);
    let o = c.ctl(0, &["user", "policy", "eve", "colour", "on"]);
    assert_eq!(o.code, 2, "{}", o.stderr);

    // with --json the error is also a JSON document
    let o = c.ctl(0, &["--json", "user", "remove", "ghost"]);
    assert_eq!(o.code, 3);
    assert_eq!(o.json()["exit"], 3);

    // wrong secret
    let o = c.ctl_at(
        &c.nodes[0].admin_addr(),
        "not-the-secret-at-all",
        &["settings", "show"],
    );
    assert_eq!(o.code, 6, "{}", o.stderr);
    assert!(o.stderr.contains("secret"), "{}", o.stderr);

    // nothing listening
    let dead = format!("127.0.0.1:{}", free_ports(1)[0]);
    let o = c.ctl_at(&dead, SECRET, &["settings", "show"]);
    assert_eq!(o.code, 5, "{}", o.stderr);
    assert!(o.stderr.contains("cannot reach"), "{}", o.stderr);

    // no quorum: two of three nodes down, a write through the survivor times out
    let leader = c.wait_leader(Duration::from_secs(5));
    let survivor = (leader + 1) % 3;
    for i in 0..3 {
        if i != survivor {
            c.kill(i);
        }
    }
    // the survivor stops calling itself ready once it knows no leader
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match presenced_e2e::http_get(c.nodes[survivor].http, "/health") {
            Some((503, body)) => {
                assert!(body.contains("no leader"), "{body}");
                break;
            }
            other => assert!(
                std::time::Instant::now() < deadline,
                "/health still {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = c.ctl(
        survivor,
        &["--timeout", "20", "settings", "set", "im_enabled", "off"],
    );
    assert_eq!(o.code, 5, "stdout={} stderr={}", o.stdout, o.stderr);
    assert!(o.stderr.contains("quorum"), "{}", o.stderr);
    let o = c.ctl(survivor, &["--timeout", "20", "settings", "show"]);
    assert_eq!(o.code, 5, "linearizable read without quorum: {}", o.stderr);
    // and troubleshoot reports the dead nodes
    let t = c
        .ctl(survivor, &["--json", "--timeout", "20", "troubleshoot"])
        .json();
    let downs = t["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["problem"] == "node_down")
        .count();
    assert_eq!(downs, 2, "{t}");
}

#[test]
fn calls_without_the_cluster_secret_are_refused() {
    // The secret is a second factor: a valid node certificate without it gets nowhere.
    let c = Cluster::start(1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use presenced_proto::raft::NodeStatusRequest;
        use presenced_proto::raft::cluster_client::ClusterClient;
        let ch = c.cluster_channel(0).await;
        // inter-node port, a node certificate, no secret at all
        let mut cl = ClusterClient::new(ch.clone());
        let e = cl.node_status(NodeStatusRequest {}).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        // a wrong secret
        let mut cl = ClusterClient::with_interceptor(ch, |mut r: tonic::Request<()>| {
            r.metadata_mut().insert(
                presenced_proto::SECRET_HEADER,
                "wrong-secret-value".parse().unwrap(),
            );
            Ok(r)
        });
        let e = cl.node_status(NodeStatusRequest {}).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
    });
    let m = c.metrics(0);
    assert!(
        presenced_e2e::metric(&m, "presenced_rpc_unauthenticated_total").unwrap_or(0.0) >= 2.0,
        "{m}"
    );
}

#[test]
fn malformed_messages_from_a_peer_are_refused_and_harm_nothing() {
    let c = Cluster::start(1);
    c.ctl(0, &["user", "add", "ivy", "--password", "pw-ivy-1"])
        .ok();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use presenced_proto::raft::cluster_client::ClusterClient;
        use presenced_proto::raft::raft_client::RaftClient;
        use presenced_proto::raft::{ProposeRequest, RaftBytes};
        let ch = c.cluster_channel(0).await;
        let secret = presenced_e2e::with_secret;
        let mut raft = RaftClient::with_interceptor(ch.clone(), secret);
        for garbage in [&b"not json"[..], b"{\"vote\": 1}", b"\xff\x00\x13", b""] {
            let e = raft
                .append_entries(RaftBytes {
                    format: 0,
                    data: garbage.to_vec(),
                })
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
            let e = raft
                .vote(RaftBytes {
                    format: 0,
                    data: garbage.to_vec(),
                })
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
            let e = raft
                .install_snapshot(RaftBytes {
                    format: 0,
                    data: garbage.to_vec(),
                })
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        }
        // A format from a future release is refused, not misread.
        let e = raft
            .vote(RaftBytes {
                format: 99,
                data: b"{}".to_vec(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("newer"), "{e:?}");
        // Router peer links: garbage frames, a frame claiming this node's own id, a link
        // not starting with a hello, and a link without the secret.
        {
            use presenced_proto::router::Frame;
            use presenced_proto::router::peer_client::PeerClient;
            let frame = |from_node: u64, events: &[u8]| Frame {
                format: 0,
                from_node,
                epoch: 7,
                events: events.to_vec(),
            };
            let cases: Vec<Vec<Frame>> = vec![
                vec![frame(9, b"not json")],
                vec![frame(9, b"[{\"e\": \"no_such_event\"}]")],
                vec![frame(1, b"[{\"e\": \"hello\", \"sessions\": []}]")],
                vec![frame(9, b"[{\"e\": \"heartbeat\"}]")],
                vec![
                    frame(9, b"[{\"e\": \"hello\", \"sessions\": []}]"),
                    frame(8, b"[{\"e\": \"heartbeat\"}]"),
                ],
            ];
            for frames in cases {
                let mut peer = PeerClient::with_interceptor(ch.clone(), secret);
                let e = peer
                    .link(tokio_stream::iter(frames.clone()))
                    .await
                    .unwrap_err();
                assert_eq!(e.code(), tonic::Code::InvalidArgument, "{frames:?}: {e:?}");
            }
            let mut anon = PeerClient::new(ch.clone());
            let e = anon
                .link(tokio_stream::iter(vec![frame(9, b"[]")]))
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
        }
        let mut cluster = ClusterClient::with_interceptor(ch, secret);
        let bad = |id, format, command: &[u8]| ProposeRequest {
            format,
            command: command.to_vec(),
            id,
        };
        let e = cluster
            .propose(bad(0, 0, b"{\"op\": \"no_such_op\"}"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        // On the proposal stream each bad request is answered with its error, by its
        // id, and the stream goes on to the next.
        let reqs = vec![
            bad(1, 0, b"{\"op\": \"no_such_op\"}"),
            bad(2, 99, b"{}"),
            bad(3, 2, b"not json"),
        ];
        let mut replies = cluster
            .propose_stream(tokio_stream::iter(reqs))
            .await
            .unwrap()
            .into_inner();
        let mut got = Vec::new();
        while let Some(r) = replies.message().await.unwrap() {
            got.push((r.id, tonic::Code::from_i32(r.error_code)));
        }
        got.sort_by_key(|(id, _)| *id);
        let invalid = tonic::Code::InvalidArgument;
        assert_eq!(got, vec![(1, invalid), (2, invalid), (3, invalid)]);
    });
    // still healthy, state intact, still writable
    c.wait_healthy(0, Duration::from_secs(5));
    let users = c.ctl_json(0, &["user", "list"]);
    assert_eq!(users["users"][0]["name"], "ivy");
    c.ctl(0, &["user", "add", "jay", "--password", "pw-jay-1"])
        .ok();
}

#[test]
fn a_bad_config_does_not_start_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let good = format!(
        "node_id = 1\ndomain = \"example.test\"\ndata_dir = \"d\"\nsecret = \"{SECRET}\"\n[listen]\ncluster = \"127.0.0.1:1\"\nadmin = \"127.0.0.1:2\"\nhttp = \"127.0.0.1:3\"\n"
    );
    let cases = [
        (
            good.replace("node_id = 1", "node_id = 1\ncolour = \"blue\""),
            "colour",
        ),
        (good.replace("\"127.0.0.1:3\"", "\"somewhere\""), "http"),
        (good.replace(SECRET, "short"), "secret"),
        (good.replace("node_id = 1\n", ""), "node_id"),
    ];
    for (text, key) in cases {
        let p = dir.path().join("bad.toml");
        std::fs::write(&p, &text).unwrap();
        let o = Command::new(bin_dir().join("presenced"))
            .arg("--config")
            .arg(&p)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{text}: {err}");
        assert!(err.contains(key), "error {err:?} does not name {key}");
        assert!(
            !dir.path().join("d").exists(),
            "a bad config touched the data dir"
        );
    }
    let o = Command::new(bin_dir().join("presenced"))
        .arg("--config")
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}
