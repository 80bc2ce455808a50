//! The real presencectl binary against an in-process fake of the admin service: exit
//! codes, stderr lines, JSON documents, secret sources, import chunking and order.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use presenced_proto::SECRET_HEADER;
use presenced_proto::admin::admin_server::{Admin, AdminServer};
use presenced_proto::admin::*;
use serde_json::Value;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

const SECRET: &str = "fake-secret-0123456789";

#[derive(Default)]
struct Recorded {
    roster_calls: Vec<Vec<ContactEntry>>,
    passwords: Vec<(String, String)>,
}

#[derive(Clone, Default)]
struct Fake {
    leaderless: bool,
    rec: Arc<Mutex<Recorded>>,
}

type Reply<T> = Result<Response<T>, Status>;

fn node(id: u64, addr: &str) -> NodeRequest {
    NodeRequest {
        id,
        addr: addr.into(),
    }
}

#[tonic::async_trait]
impl Admin for Fake {
    async fn cluster_init(&self, _r: Request<Empty>) -> Reply<InitReply> {
        Ok(Response::new(InitReply {
            leader_id: 1,
            domain: "example.test".into(),
        }))
    }

    async fn cluster_status(&self, _r: Request<Empty>) -> Reply<StatusReply> {
        let leader_id = if self.leaderless { 0 } else { 1 };
        Ok(Response::new(StatusReply {
            leader_id,
            term: 3,
            commit_index: 42,
            domain: "example.test".into(),
            answered_by: 1,
            nodes: vec![
                NodeInfo {
                    id: 1,
                    addr: "127.0.0.1:7101".into(),
                    membership: "voter".into(),
                    reachable: true,
                    state: "Leader".into(),
                    term: 3,
                    last_applied: 42,
                    lag: 0,
                    error: String::new(),
                },
                NodeInfo {
                    id: 2,
                    addr: "127.0.0.1:7102".into(),
                    membership: "voter".into(),
                    reachable: false,
                    state: "-".into(),
                    error: "connection refused".into(),
                    ..Default::default()
                },
            ],
        }))
    }

    async fn add_node(&self, r: Request<NodeRequest>) -> Reply<MembershipReply> {
        let n = r.into_inner();
        if n.id == 99 {
            return Err(Status::failed_precondition(
                "a membership change is in progress",
            ));
        }
        Ok(Response::new(MembershipReply {
            voters: vec![node(1, "127.0.0.1:7101"), n],
            learners: vec![],
        }))
    }

    async fn remove_node(&self, r: Request<NodeRequest>) -> Reply<MembershipReply> {
        if r.into_inner().id == 7 {
            return Err(Status::not_found("unknown node 7"));
        }
        Ok(Response::new(MembershipReply {
            voters: vec![node(1, "127.0.0.1:7101")],
            learners: vec![],
        }))
    }

    async fn settings_show(&self, _r: Request<Empty>) -> Reply<SettingsReply> {
        let s = |key: &str, value: &str, default: &str| Setting {
            key: key.into(),
            value: value.into(),
            default_value: default.into(),
            is_default: value == default,
            kind: "u32".into(),
            help: format!("help for {key}"),
        };
        Ok(Response::new(SettingsReply {
            settings: vec![
                s("max_contacts", "200", "1000"),
                s("max_watchers", "1000", "1000"),
            ],
        }))
    }

    async fn settings_set(&self, r: Request<SetSettingRequest>) -> Reply<Setting> {
        let r = r.into_inner();
        if r.key == "slow" {
            tokio::time::sleep(Duration::from_millis(2500)).await;
        }
        if r.key != "max_contacts" {
            return Err(Status::invalid_argument(format!(
                "unknown setting {}",
                r.key
            )));
        }
        Ok(Response::new(Setting {
            key: r.key,
            value: r.value,
            default_value: "1000".into(),
            ..Default::default()
        }))
    }

    async fn settings_reset(&self, r: Request<KeyRequest>) -> Reply<Setting> {
        let key = r.into_inner().key;
        Ok(Response::new(Setting {
            key,
            value: "1000".into(),
            default_value: "1000".into(),
            is_default: true,
            ..Default::default()
        }))
    }

    async fn user_add(&self, r: Request<UserAddRequest>) -> Reply<UserAddReply> {
        let r = r.into_inner();
        if r.name == "taken" {
            return Err(Status::already_exists("user taken already exists"));
        }
        let generated_password = if r.password.is_empty() {
            "gen-pass-1".into()
        } else {
            String::new()
        };
        Ok(Response::new(UserAddReply {
            name: r.name,
            generated_password,
        }))
    }

    async fn user_remove(&self, r: Request<UserRequest>) -> Reply<Empty> {
        let name = r.into_inner().name;
        if name == "ghost" {
            return Err(Status::not_found("unknown user ghost"));
        }
        Ok(Response::new(Empty {}))
    }

    async fn user_list(&self, _r: Request<Empty>) -> Reply<UserListReply> {
        // Slow on purpose: the timeout test asks with --timeout 1.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        Ok(Response::new(UserListReply { users: vec![] }))
    }

    async fn user_passwd(&self, r: Request<PasswdRequest>) -> Reply<Empty> {
        let r = r.into_inner();
        self.rec
            .lock()
            .unwrap()
            .passwords
            .push((r.name, r.password));
        Ok(Response::new(Empty {}))
    }

    async fn user_policy(&self, r: Request<PolicyRequest>) -> Reply<UserInfo> {
        let r = r.into_inner();
        if r.value != "on" && r.value != "off" && r.value != "inherit" {
            return Err(Status::invalid_argument(format!("bad value: {}", r.value)));
        }
        Ok(Response::new(UserInfo {
            name: r.name.clone(),
            jid: format!("{}@example.test", r.name),
            availability_sharing: r.value,
            view_without_approval: "inherit".into(),
            ..Default::default()
        }))
    }

    async fn roster_show(&self, r: Request<UserRequest>) -> Reply<RosterReply> {
        let user = r.into_inner().name;
        Ok(Response::new(RosterReply {
            user: user.clone(),
            version: 7,
            items: vec![RosterItem {
                jid: "bob@example.test".into(),
                name: "Bob".into(),
                groups: vec!["Friends".into(), "Work".into()],
                subscription: "both".into(),
                ask: false,
            }],
            pending_in: vec!["carol@example.test".into()],
        }))
    }

    async fn roster_add(&self, r: Request<RosterAddRequest>) -> Reply<RosterAddReply> {
        let entries = r.into_inner().entries;
        self.rec.lock().unwrap().roster_calls.push(entries.clone());
        let (refused, added): (Vec<_>, Vec<_>) = entries
            .into_iter()
            .partition(|e| e.contact.starts_with("full"));
        let refused = refused
            .into_iter()
            .map(|e| Refused {
                reason: format!(
                    "{}@example.test is at the maximum contact-list size (200)",
                    e.user
                ),
                user: e.user,
                contact: e.contact,
                code: "contact_list_full".into(),
            })
            .collect();
        Ok(Response::new(RosterAddReply { added, refused }))
    }

    async fn roster_remove(&self, _r: Request<RosterRemoveRequest>) -> Reply<Empty> {
        Err(Status::not_found(
            "bob@example.test is not in alice's contact list",
        ))
    }

    async fn troubleshoot(&self, _r: Request<Empty>) -> Reply<TroubleshootReply> {
        Ok(Response::new(TroubleshootReply {
            findings: vec![Finding {
                severity: "warning".into(),
                subject: "node-2".into(),
                problem: "node_down".into(),
                detail: "connection refused".into(),
            }],
        }))
    }
}

/// A fake node on a loopback port, running until dropped.
struct Server {
    addr: SocketAddr,
    rec: Arc<Mutex<Recorded>>,
    _rt: tokio::runtime::Runtime,
}

fn serve(fake: Fake) -> Server {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let rec = fake.rec.clone();
    let incoming = rt
        .block_on(async { TcpIncoming::bind("127.0.0.1:0".parse().unwrap()) })
        .expect("bind");
    let addr = incoming.local_addr().expect("local addr");
    let check = |req: Request<()>| -> Result<Request<()>, Status> {
        match req.metadata().get(SECRET_HEADER) {
            Some(v) if v.as_bytes() == SECRET.as_bytes() => Ok(req),
            _ => Err(Status::unauthenticated("wrong or missing cluster secret")),
        }
    };
    rt.spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(AdminServer::with_interceptor(fake, check))
            .serve_with_incoming(incoming)
            .await;
    });
    Server { addr, rec, _rt: rt }
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.stdout))
    }
}

fn ctl() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_presencectl"));
    c.env_remove("PRESENCECTL_NODE")
        .env_remove("PRESENCED_SECRET")
        .stdin(Stdio::null());
    c
}

fn output(mut c: Command, stdin: Option<&str>) -> Out {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    if stdin.is_some() {
        c.stdin(Stdio::piped());
    }
    let mut child = c.spawn().expect("spawn presencectl");
    if let Some(input) = stdin {
        let mut w = child.stdin.take().expect("stdin");
        w.write_all(input.as_bytes()).expect("write stdin");
    }
    let o = child.wait_with_output().expect("wait presencectl");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn run(s: &Server, args: &[&str]) -> Out {
    run_in(s, args, None)
}

fn run_in(s: &Server, args: &[&str], stdin: Option<&str>) -> Out {
    let mut c = ctl();
    c.arg("--node")
        .arg(s.addr.to_string())
        .arg("--secret")
        .arg(SECRET)
        .args(args);
    output(c, stdin)
}

fn temp_file(name: &str, content: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("presencectl-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let p = dir.join(name);
    std::fs::write(&p, content).expect("write temp file");
    p
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

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
fn roster_commands() {
    let s = serve(Fake::default());
    let o = run(&s, &["roster", "show", "alice"]);
    assert_eq!(o.code, 0);
    assert!(
        o.stdout.starts_with("roster of alice (version 7)\n"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("Friends, Work"), "{}", o.stdout);
    assert!(
        o.stdout.ends_with("pending inbound: carol@example.test\n"),
        "{}",
        o.stdout
    );

    let o = run(
        &s,
        &[
            "roster", "add", "alice", "bob", "carol", "--group", "Friends",
        ],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(o.stdout, "added 2, refused 0\n");
    let call = s.rec.lock().unwrap().roster_calls.last().cloned().unwrap();
    assert_eq!(call.len(), 2);
    assert_eq!(call[1].group, "Friends");

    let o = run(&s, &["roster", "add", "alice", "full1"]);
    assert_eq!(o.code, 4);
    assert_eq!(
        o.stderr,
        "error: alice@example.test is at the maximum contact-list size (200)\n"
    );
    assert!(
        o.stdout
            .contains("  alice -> full1: alice@example.test is at"),
        "{}",
        o.stdout
    );

    let o = run(&s, &["--json", "roster", "add", "alice", "bob", "full2"]);
    assert_eq!(o.code, 4);
    let v = o.json();
    assert_eq!(v["added"][0]["contact"], "bob");
    assert_eq!(v["refused"][0]["code"], "contact_list_full");
    assert_eq!(v["exit"], 4);

    let o = run(&s, &["roster", "remove", "alice", "bob"]);
    assert_eq!(o.code, 3);
}

#[test]
fn roster_import_chunks_in_file_order() {
    let s = serve(Fake::default());
    let mut csv = String::from("user,contact,name,group\n# generated\n");
    for i in 0..1234 {
        let contact = if i % 300 == 299 {
            format!("full{i}")
        } else {
            format!("c{i}")
        };
        csv.push_str(&format!("u{},{contact},Name {i}\n", i % 5));
        if i == 10 {
            csv.push('\n');
        }
    }
    let file = temp_file("import.csv", &csv);
    let o = run(&s, &["roster", "import", file.to_str().unwrap()]);
    assert_eq!(o.code, 4, "{}", o.stderr);
    assert!(
        o.stdout.starts_with(
            "imported: 1230 added, 4 refused\n  contact_list_full: 4 (u4 -> full299: "
        ),
        "{}",
        o.stdout
    );
    let calls = s.rec.lock().unwrap().roster_calls.clone();
    assert_eq!(
        calls.iter().map(Vec::len).collect::<Vec<_>>(),
        [500, 500, 234]
    );
    let flat: Vec<ContactEntry> = calls.into_iter().flatten().collect();
    for (i, e) in flat.iter().enumerate() {
        assert!(
            e.contact.ends_with(&format!("{i}")) && e.name == format!("Name {i}"),
            "entry {i}: {e:?}"
        );
    }

    // From stdin, JSON.
    let o = run_in(
        &s,
        &["--json", "roster", "import", "-"],
        Some("alice,bob\nalice,full1\n"),
    );
    assert_eq!(o.code, 4);
    let v = o.json();
    assert_eq!(v["added"], 1);
    assert_eq!(v["refused"][0]["contact"], "full1");

    // All good: exit 0.
    let o = run_in(&s, &["roster", "import", "-"], Some("alice,bob\n"));
    assert_eq!(
        (o.code, o.stdout.as_str()),
        (0, "imported: 1 added, 0 refused\n")
    );
}

#[test]
fn roster_import_bad_row_sends_nothing() {
    let s = serve(Fake::default());
    let o = run_in(
        &s,
        &["roster", "import", "-"],
        Some("alice,bob\n# c\n\nalice\n"),
    );
    assert_eq!(o.code, 2);
    assert!(
        o.stderr.starts_with("error: stdin line 4: "),
        "{}",
        o.stderr
    );
    assert!(s.rec.lock().unwrap().roster_calls.is_empty());
    let o = run(&s, &["roster", "import", "/nonexistent/roster.csv"]);
    assert_eq!(o.code, 2);
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
