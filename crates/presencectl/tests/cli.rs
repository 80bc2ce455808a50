//! The real presencectl binary against an in-process fake of the admin service: exit
//! codes, stderr lines, JSON documents, secret sources, import chunking and order.
mod common;

use common::*;

#[test]
fn unreachable_node_exits_5() {
    let addr = free_addr();
    let mut c = ctl();
    c.args(["--node", &addr, "--secret", SECRET, "cluster", "status"]);
    let o = output(c, None);
    assert_eq!(o.code, 5, "{}", o.stderr);
    assert!(
        o.stderr
            .starts_with(&format!("error: cannot reach node {addr}: ")),
        "{}",
        o.stderr
    );
    assert_eq!(o.stderr.lines().count(), 1);

    let mut c = ctl();
    c.args([
        "--json",
        "--node",
        &addr,
        "--secret",
        SECRET,
        "troubleshoot",
    ]);
    let o = output(c, None);
    assert_eq!(o.code, 5);
    let v = o.json();
    assert_eq!(v["code"], "UNAVAILABLE");
    assert_eq!(v["exit"], 5);
}

#[test]
fn secret_sources() {
    let s = serve(Fake::default());
    let node = s.addr.to_string();

    // Wrong secret.
    let mut c = ctl();
    c.args([
        "--node",
        &node,
        "--secret",
        "not-the-secret",
        "cluster",
        "init",
    ]);
    let o = output(c, None);
    assert_eq!(o.code, 6);
    assert_eq!(
        o.stderr.trim_end(),
        format!("error: wrong cluster secret (node {node} refused it)")
    );

    // From the environment, node too.
    let mut c = ctl();
    c.env("PRESENCED_SECRET", SECRET)
        .env("PRESENCECTL_NODE", &node)
        .args(["cluster", "init"]);
    let o = output(c, None);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(
        o.stdout.trim_end(),
        "cluster initialised: domain example.test, leader node 1"
    );

    // The flag beats the environment.
    let mut c = ctl();
    c.env("PRESENCED_SECRET", "wrong")
        .args(["--node", &node, "--secret", SECRET, "cluster", "init"]);
    assert_eq!(output(c, None).code, 0);

    // The environment beats the config file.
    let cfg = temp_file(
        "env-vs-config.toml",
        &format!("secret = \"wrong\"\n[listen]\nadmin = \"{node}\"\n"),
    );
    let mut c = ctl();
    c.env("PRESENCED_SECRET", SECRET)
        .arg("--config")
        .arg(&cfg)
        .args(["cluster", "init"]);
    assert_eq!(output(c, None).code, 0);

    // Secret file and admin address from the config file alone.
    temp_file("secret.txt", &format!("{SECRET}\n"));
    let cfg = temp_file(
        "node.toml",
        &format!("secret_file = \"secret.txt\"\n[listen]\nadmin = \"{node}\"\n"),
    );
    let mut c = ctl();
    c.arg("--config")
        .arg(&cfg)
        .args(["--json", "cluster", "init"]);
    let o = output(c, None);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(o.json()["domain"], "example.test");

    // Nothing at all.
    let mut c = ctl();
    c.args(["--node", &node, "cluster", "init"]);
    let o = output(c, None);
    assert_eq!(o.code, 2);
    assert_eq!(
        o.stderr.trim_end(),
        "error: no cluster secret: pass --secret, set PRESENCED_SECRET or --config FILE"
    );
}

#[test]
fn cluster_commands() {
    let s = serve(Fake::default());
    let o = run(&s, &["cluster", "status"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout
            .starts_with("domain example.test  leader 1  term 3  commit 42\n"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("no: connection refused"), "{}", o.stdout);
    let v = run(&s, &["--json", "cluster", "status"]).json();
    assert_eq!(v["leader_id"], 1);
    assert_eq!(v["nodes"][1]["reachable"], false);
    assert_eq!(v["nodes"][0]["last_applied"], 42);

    let o = run(&s, &["cluster", "add-node", "2", "127.0.0.1:7102"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(
        o.stdout,
        "voters: 1 (127.0.0.1:7101), 2 (127.0.0.1:7102)\nlearners: none\n"
    );
    let o = run(&s, &["cluster", "add-node", "99", "127.0.0.1:7199"]);
    assert_eq!(
        (o.code, o.stderr.as_str()),
        (4, "error: a membership change is in progress\n")
    );
    let o = run(&s, &["--json", "cluster", "remove-node", "7"]);
    assert_eq!(o.code, 3);
    assert_eq!(o.json()["code"], "NOT_FOUND");
    assert_eq!(o.json()["error"], "unknown node 7");
}

#[test]
fn leaderless_status_prints_then_exits_5() {
    let s = serve(Fake {
        leaderless: true,
        ..Fake::default()
    });
    let o = run(&s, &["cluster", "status"]);
    assert_eq!(o.code, 5);
    assert!(o.stdout.contains("leader none"), "{}", o.stdout);
    assert!(o.stdout.contains("127.0.0.1:7102"), "{}", o.stdout);
    assert!(o.stderr.starts_with("error: no leader"), "{}", o.stderr);
    let o = run(&s, &["--json", "cluster", "status"]);
    assert_eq!(o.code, 5);
    let v = o.json();
    assert_eq!(v["leader_id"], 0);
    assert_eq!(v["exit"], 5);
    assert_eq!(v["code"], "UNAVAILABLE");
}

#[test]
fn settings_and_users() {
    let s = serve(Fake::default());
    let o = run(&s, &["settings", "show"]);
    assert_eq!(o.code, 0);
    let line = o
        .stdout
        .lines()
        .find(|l| l.starts_with("max_contacts"))
        .unwrap();
    assert!(line.contains('*'), "{line}");
    let o = run(&s, &["settings", "set", "max_contacts", "200"]);
    assert_eq!(o.stdout, "max_contacts = 200\n");
    let o = run(&s, &["settings", "set", "bogus", "1"]);
    assert_eq!(
        (o.code, o.stderr.as_str()),
        (2, "error: unknown setting bogus\n")
    );
    assert_eq!(
        run(&s, &["--json", "settings", "reset", "max_contacts"]).json()["is_default"],
        true
    );

    let o = run(&s, &["user", "add", "alice"]);
    assert_eq!(o.stdout, "user alice added; password: gen-pass-1\n");
    let o = run(&s, &["user", "add", "bob", "--password", "pw"]);
    assert_eq!(o.stdout, "user bob added\n");
    let o = run(&s, &["--json", "user", "add", "carol"]);
    assert_eq!(o.json()["generated_password"], "gen-pass-1");
    let o = run(&s, &["user", "add", "taken"]);
    assert_eq!(o.code, 4);
    let o = run(&s, &["user", "remove", "ghost"]);
    assert_eq!(
        (o.code, o.stderr.as_str()),
        (3, "error: unknown user ghost\n")
    );

    let o = run_in(&s, &["user", "passwd", "alice"], Some("new secret\n"));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let o = run_in(&s, &["user", "passwd", "alice"], Some("\n"));
    assert_eq!((o.code, o.stderr.as_str()), (2, "error: empty password\n"));
    assert_eq!(
        s.rec.lock().unwrap().passwords,
        [("alice".to_string(), "new secret".to_string())]
    );

    let o = run(
        &s,
        &[
            "--json",
            "user",
            "policy",
            "alice",
            "availability_sharing",
            "off",
        ],
    );
    assert_eq!(o.json()["availability_sharing"], "off");
    let o = run(
        &s,
        &["user", "policy", "alice", "availability_sharing", "maybe"],
    );
    assert_eq!(o.code, 2);

    let o = run(&s, &["--timeout", "1", "user", "list"]);
    assert_eq!(o.code, 5);
    assert_eq!(
        o.stderr,
        format!("error: node {} did not answer within 1s\n", s.addr)
    );
    let o = run(&s, &["--timeout", "1", "settings", "set", "slow", "1"]);
    assert_eq!(o.code, 5);
    let expected = format!(
        "error: node {} did not answer within 1s; the change may or may not have been applied\n",
        s.addr
    );
    assert_eq!(o.stderr, expected);
}

#[test]
fn troubleshoot_reports_findings_with_exit_0() {
    let s = serve(Fake::default());
    let o = run(&s, &["troubleshoot"]);
    assert_eq!(o.code, 0);
    assert!(o.stdout.contains("node_down"), "{}", o.stdout);
    assert_eq!(
        run(&s, &["--json", "troubleshoot"]).json()["findings"][0]["subject"],
        "node-2"
    );
}

#[test]
fn usage_errors_keep_clap_exit_code() {
    let mut c = ctl();
    c.args(["roster", "add", "alice"]);
    assert_eq!(output(c, None).code, 2);
}
