//! In-process clusters for testing the protocol-neutral core without a wire protocol.
//!
//! [`TestCluster::start`] runs N real nodes in one test process: each a
//! [`ClusterNode`] (openraft over sled in a temporary directory, real gRPC on
//! loopback) with its [`Router`] and peer links. [`TestClient`] is the smallest
//! adapter: it opens a [`Session`] and records the [`Delivery`]s it gets, so
//! presence, routing, forking, offline delivery and visibility are tested in the
//! router's own vocabulary. The XMPP tests and the coming SIP tests build on the same
//! router; their adapters only translate.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use presenced_cluster::{ClusterConfig, ClusterNode, MembershipChange, NodeId, RaftTuning};
use presenced_model::{Command, Credentials, NewContact, Outcome};
use presenced_router::queue::Receiver;
use presenced_router::{
    Activity, Address, Availability, Delivery, Message, MessageKind, Presence, Router,
    RouterConfig, Session,
};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub const DOMAIN: &str = "example.test";
const SECRET: &str = "testkit-secret-0123456789";

/// How long an expectation waits by default.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestNode {
    pub id: NodeId,
    pub addr: String,
    pub node: Arc<ClusterNode>,
    pub router: Router,
    stop: watch::Sender<bool>,
}

pub struct TestCluster {
    pub nodes: Vec<TestNode>,
    _dir: tempfile::TempDir,
}

fn tuning() -> RaftTuning {
    RaftTuning {
        heartbeat_ms: 50,
        election_min_ms: 300,
        election_max_ms: 600,
        ..RaftTuning::default()
    }
}

impl TestCluster {
    /// Start `n` nodes, initialise the cluster on the first and add the others.
    pub async fn start(n: usize) -> TestCluster {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut listeners = Vec::new();
        for _ in 0..n {
            listeners.push(TcpListener::bind("127.0.0.1:0").await.expect("bind"));
        }
        // The nodes talk mutual TLS, as real ones do, with a CA made for this cluster.
        let ca = dir.path().join("ca");
        presenced_tls::pki::init_ca(&ca, DOMAIN, 1).expect("test CA");
        let trust = std::fs::read_to_string(ca.join(presenced_tls::pki::CA_CERT)).expect("CA");
        let mut nodes = Vec::new();
        for (i, l) in listeners.into_iter().enumerate() {
            let id = i as NodeId + 1;
            let addr = l.local_addr().expect("address").to_string();
            let tls = dir.path().join(format!("tls{id}"));
            let issued = presenced_tls::pki::issue(&ca, &presenced_tls::Identity::Node(id), &[], 1)
                .expect("node certificate");
            presenced_tls::pki::write_issued(&tls, "node", &issued, Some(&trust)).expect("write");
            let material =
                presenced_tls::Material::load(presenced_tls::Paths::in_dir(&tls, "node"))
                    .expect("load TLS material");
            let transport = presenced_tls::Transport::Mutual(material);
            let node = ClusterNode::start(ClusterConfig {
                node_id: id,
                advertise: addr.clone(),
                data_dir: dir.path().join(format!("node{id}")),
                secret: SECRET.into(),
                transport: transport.clone(),
                domain: DOMAIN.into(),
                raft: tuning(),
                cache_bytes: 8 << 20,
                timeout: Duration::from_secs(5),
            })
            .await
            .expect("cluster node starts");
            let mut rcfg = RouterConfig::new(id, SECRET.into());
            rcfg.peer_heartbeat = Duration::from_millis(200);
            rcfg.peer_dead_after = Duration::from_secs(1);
            let router = Router::start(node.clone(), rcfg);
            let (stop, mut stopped) = watch::channel(false);
            let grpc = node.grpc().add_service(router.peer_service());
            tokio::spawn(async move {
                let incoming = transport.incoming(l, presenced_tls::ClientAuth::Required, "test");
                let _ = grpc
                    .serve_with_incoming_shutdown(incoming, async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    })
                    .await;
            });
            nodes.push(TestNode {
                id,
                addr,
                node,
                router,
                stop,
            });
        }
        nodes[0].node.init().await.expect("cluster init");
        for n in &nodes[1..] {
            nodes[0]
                .node
                .change_membership(MembershipChange::Add(n.id, n.addr.clone()))
                .await
                .expect("add node");
        }
        let c = TestCluster { nodes, _dir: dir };
        c.wait_healthy().await;
        c
    }

    async fn wait_healthy(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        for n in &self.nodes {
            while n.node.health().is_err() {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "node {} unhealthy",
                    n.id
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// Propose a command through node 1; panics if replication fails.
    pub async fn write(&self, cmd: Command) -> Outcome {
        self.nodes[0].node.write(cmd).await.expect("replicated")
    }

    /// Propose a command and wait until every node applied it.
    pub async fn write_everywhere(&self, cmd: Command) -> Outcome {
        let out = self.write(cmd).await;
        let target = self.nodes[0].node.committed_index();
        let deadline = tokio::time::Instant::now() + WAIT;
        for n in &self.nodes {
            while n.node.applied_index() < target {
                assert!(tokio::time::Instant::now() < deadline, "node {} lags", n.id);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        out
    }

    pub async fn user(&self, name: &str) {
        let out = self
            .write_everywhere(Command::CreateAccount {
                user: name.into(),
                credentials: Credentials::derive(name, DOMAIN, "pw", 1),
            })
            .await;
        out.expect("account created");
    }

    /// `user` sees `contact` and `contact` lets them (an operator's roster add).
    pub async fn contact(&self, user: &str, contact: &str) {
        let out = self
            .write_everywhere(Command::AddContacts {
                entries: vec![NewContact {
                    user: user.into(),
                    contact: format!("{contact}@{DOMAIN}"),
                    name: None,
                    groups: vec![],
                }],
            })
            .await;
        out.expect("contact added");
    }

    pub async fn setting(&self, key: &str, value: &str) {
        self.write_everywhere(Command::SetSetting {
            key: key.into(),
            value: value.into(),
        })
        .await
        .expect("setting accepted");
    }

    /// Open a session of `user` on `node` (0-based) on `endpoint`, and wait until
    /// every running node's directory has it.
    pub async fn connect(&self, node: usize, user: &str, endpoint: &str) -> TestClient {
        let (session, rx) = self.nodes[node]
            .router
            .open_session(user, Some(endpoint))
            .expect("session opens");
        self.converge(user, endpoint, false).await;
        TestClient {
            name: format!("{user}/{endpoint}@node{}", node + 1),
            session: Some(session),
            rx,
            pending: VecDeque::new(),
            seen: Vec::new(),
        }
    }

    /// Wait until every running node knows `user/endpoint` (and, with `available`,
    /// knows it available).
    pub async fn converge(&self, user: &str, endpoint: &str, available: bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        for n in self.nodes.iter().filter(|n| !*n.stop.borrow()) {
            loop {
                match n.router.locate(user, endpoint) {
                    Some(l) if l.available || !available => break,
                    _ => {}
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "node {} never learnt of {user}/{endpoint}",
                    n.id
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }

    /// `client` announces availability and the cluster converges on it.
    pub async fn available(&self, client: &TestClient, activity: Activity, preference: i8) {
        client.available(activity, None, preference);
        let s = client.session();
        self.converge(&s.user, &s.resource, true).await;
    }

    /// Node `i` dies, as far as the others can tell: its peer links close, its
    /// servers and Raft stop.
    pub async fn stop(&mut self, i: usize) {
        self.nodes[i].router.halt();
        let _ = self.nodes[i].stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.nodes[i].node.shutdown()).await;
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for n in &self.nodes {
            let _ = n.stop.send(true);
        }
    }
}

/// A chat message to `to`.
pub fn chat(to: Address, body: &str) -> Message {
    let mut m = Message::new(to);
    m.kind = MessageKind::Chat;
    m.body = Some(body.into());
    m
}

/// The body of a delivered message.
pub fn body_of(d: &Delivery) -> Option<&str> {
    match d {
        Delivery::Message(m) => m.body.as_deref(),
        _ => None,
    }
}

/// What an adapter does with a delivered message once its client has it: the
/// message's receipt is done (else the router routes it again).
fn taken(mut d: Delivery) -> Delivery {
    if let Delivery::Message(m) = &mut d
        && let Some(r) = m.take_receipt()
    {
        r.done();
    }
    d
}

/// A neutral test adapter: one session and what it was handed.
pub struct TestClient {
    pub name: String,
    session: Option<Session>,
    rx: Receiver<Delivery>,
    pending: VecDeque<Delivery>,
    seen: Vec<Delivery>,
}

impl TestClient {
    pub fn session(&self) -> &Session {
        self.session.as_ref().expect("session open")
    }

    /// Broadcast available presence with an activity.
    pub fn available(&self, activity: Activity, note: Option<&str>, preference: i8) {
        self.session()
            .set_presence(Presence::Available(Availability {
                activity,
                note: note.map(str::to_string),
                preference,
                extensions: Vec::new(),
            }));
    }

    /// The client goes away (drops its session).
    pub fn disconnect(&mut self) {
        self.session = None;
    }

    /// Wait for a delivery matching `pred`; earlier unmatched ones stay queued.
    pub async fn expect(&mut self, what: &str, pred: impl Fn(&Delivery) -> bool) -> Delivery {
        if let Some(i) = self.pending.iter().position(&pred) {
            return self.pending.remove(i).expect("present");
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(d)) => {
                    let d = taken(d);
                    self.seen.push(d.clone());
                    if pred(&d) {
                        return d;
                    }
                    self.pending.push_back(d);
                }
                Ok(None) | Err(_) => panic!(
                    "{}: no {what} within {WAIT:?}; got:\n{:#?}",
                    self.name, self.seen
                ),
            }
        }
    }

    /// Wait for the message with this body.
    pub async fn expect_body(&mut self, body: &str) -> Message {
        let b = body.to_string();
        match self
            .expect(&format!("message {body:?}"), |d| body_of(d) == Some(&b))
            .await
        {
            Delivery::Message(m) => *m,
            _ => unreachable!("matched a message"),
        }
    }

    /// Wait until everything `sender` sent this session before now has arrived: it
    /// sends a message here, and one sender's messages keep their order.
    pub async fn barrier_from(&mut self, sender: &TestClient) {
        sender
            .session()
            .send_message(chat(self.session().address(), "barrier"))
            .await
            .expect("barrier sent");
        self.expect_body("barrier").await;
    }

    /// Assert nothing matching `pred` has arrived so far (after a barrier).
    pub fn assert_none_yet(&mut self, what: &str, pred: impl Fn(&Delivery) -> bool) {
        while let Some(d) = self.rx.try_recv() {
            let d = taken(d);
            self.seen.push(d.clone());
            self.pending.push_back(d);
        }
        if let Some(d) = self.pending.iter().find(|d| pred(d)) {
            panic!("{}: unexpected {what}: {d:?}", self.name);
        }
    }
}
