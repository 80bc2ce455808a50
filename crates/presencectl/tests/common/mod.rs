//! Shared by the presencectl integration tests: an in-process fake of the admin
//! service on a loopback port, and helpers to run the real binary against it.

// Each test crate uses only part of this module.
#![allow(dead_code)]

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
use tonic::{Request, Response, Status};

pub const SECRET: &str = "fake-secret-0123456789";

/// The fake speaks TLS as a real node does, with a certificate of node 1 of a CA made
/// once per test process; every presencectl run trusts that CA (`PRESENCECTL_CA`).
fn pki() -> &'static PathBuf {
    static PKI: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PKI.get_or_init(|| {
        use presenced_tls::{Identity, pki};
        let dir = std::env::temp_dir().join(format!("presencectl-it-pki-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        pki::init_ca(&dir.join("ca"), "fake", 2).expect("CA");
        let trust = std::fs::read_to_string(dir.join("ca").join(pki::CA_CERT)).expect("CA");
        let i = pki::issue(&dir.join("ca"), &Identity::Node(1), &[], 2).expect("issue");
        pki::write_issued(&dir.join("node"), "node", &i, Some(&trust)).expect("write");
        dir
    })
}

pub fn ca_file() -> PathBuf {
    pki().join("ca").join(presenced_tls::pki::CA_CERT)
}

#[derive(Default)]
pub struct Recorded {
    pub roster_calls: Vec<Vec<ContactEntry>>,
    pub passwords: Vec<(String, String)>,
    /// Every UserImport call, with its retry flag.
    pub user_import_calls: Vec<(Vec<UserImportEntry>, bool)>,
    /// Accounts created through user_import, with their passwords.
    pub users: std::collections::BTreeMap<String, String>,
    /// RosterAdd calls failed on purpose (see `roster_add`).
    pub flaky_failures: usize,
}

#[derive(Clone, Default)]
pub struct Fake {
    pub leaderless: bool,
    pub rec: Arc<Mutex<Recorded>>,
}

pub type Reply<T> = Result<Response<T>, Status>;

pub fn node(id: u64, addr: &str) -> NodeRequest {
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

    async fn user_import(&self, r: Request<UserImportRequest>) -> Reply<UserImportReply> {
        let UserImportRequest { entries, retry } = r.into_inner();
        let mut rec = self.rec.lock().unwrap();
        rec.user_import_calls.push((entries.clone(), retry));
        let mut reply = UserImportReply::default();
        for (i, e) in entries.iter().enumerate() {
            let same = rec.users.get(&e.name) == Some(&e.password);
            if e.name.starts_with("taken") || (rec.users.contains_key(&e.name) && !(retry && same))
            {
                reply.refused.push(Refused {
                    reason: format!("user {} already exists", e.name),
                    user: e.name.clone(),
                    contact: String::new(),
                    code: "user_exists".into(),
                });
            } else {
                rec.users.insert(e.name.clone(), e.password.clone());
                reply.added.push(ImportedUser {
                    index: i as u32,
                    name: e.name.clone(),
                });
            }
        }
        // A "flaky" row: the first call carrying it is applied, but its answer is lost.
        if entries.iter().any(|e| e.name.starts_with("flaky")) && !retry {
            return Err(Status::unavailable(
                "no quorum: write not committed within 5s; it may still be applied",
            ));
        }
        Ok(Response::new(reply))
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
        {
            let mut rec = self.rec.lock().unwrap();
            rec.roster_calls.push(entries.clone());
            // A "flaky" contact: the first two calls carrying it find no quorum.
            if entries.iter().any(|e| e.contact.starts_with("flaky")) && rec.flaky_failures < 2 {
                rec.flaky_failures += 1;
                return Err(Status::unavailable("no leader; retry later"));
            }
        }
        let (unchanged, entries): (Vec<_>, Vec<_>) = entries
            .into_iter()
            .partition(|e| e.contact.starts_with("same"));
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
        Ok(Response::new(RosterAddReply {
            added,
            refused,
            unchanged,
        }))
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
pub struct Server {
    pub addr: SocketAddr,
    pub rec: Arc<Mutex<Recorded>>,
    _rt: tokio::runtime::Runtime,
}

pub fn serve(fake: Fake) -> Server {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let rec = fake.rec.clone();
    let material =
        presenced_tls::Material::load(presenced_tls::Paths::in_dir(&pki().join("node"), "node"))
            .expect("TLS material");
    let transport = presenced_tls::Transport::Mutual(material);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let incoming = {
        let _g = rt.enter();
        transport.incoming(listener, presenced_tls::ClientAuth::Optional, "fake")
    };
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

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.stdout))
    }
}

pub fn ctl() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_presencectl"));
    c.env_remove("PRESENCECTL_NODE")
        .env_remove("PRESENCED_SECRET")
        .env_remove("PRESENCECTL_CERT")
        .env_remove("PRESENCECTL_KEY")
        .env_remove("PRESENCECTL_PLAINTEXT")
        .env("PRESENCECTL_CA", ca_file())
        .stdin(Stdio::null());
    c
}

pub fn output(mut c: Command, stdin: Option<&str>) -> Out {
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

pub fn run(s: &Server, args: &[&str]) -> Out {
    run_in(s, args, None)
}

pub fn run_in(s: &Server, args: &[&str], stdin: Option<&str>) -> Out {
    let mut c = ctl();
    c.arg("--node")
        .arg(s.addr.to_string())
        .arg("--secret")
        .arg(SECRET)
        .args(args);
    output(c, stdin)
}

pub fn temp_file(name: &str, content: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("presencectl-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let p = dir.join(name);
    std::fs::write(&p, content).expect("write temp file");
    p
}

pub fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}
