//! Driving real XMPP clients from the tests: each [`Agent`] is a slixmpp process
//! (tests/clients/xmpp_agent.py) or an xmpp.js one ([`Lib`]) commanded with JSON
//! lines; its events come back as JSON lines. Plus [`raw_stream`] for byte-level
//! bad-input checks.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{Cluster, DOMAIN};

/// The Python with slixmpp (Debian's python3-slixmpp is only importable by the system
/// interpreter); `PRESENCED_TEST_PYTHON` overrides.
fn python() -> String {
    std::env::var("PRESENCED_TEST_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into())
}

fn agent_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/xmpp_agent.py")
}

/// The client library behind an [`Agent`]: both speak the same JSON-lines protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lib {
    /// slixmpp (Python): tests/clients/xmpp_agent.py.
    Slixmpp,
    /// xmpp.js (Node.js): tests/clients/xmppjs/agent.mjs; `PRESENCED_TEST_NODE`
    /// overrides the `node` binary.
    XmppJs,
}

impl Lib {
    fn command(self) -> Command {
        match self {
            Lib::Slixmpp => {
                let mut c = Command::new(python());
                c.arg(agent_script());
                c
            }
            Lib::XmppJs => {
                let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/xmppjs");
                assert!(
                    dir.join("node_modules/@xmpp/client").exists(),
                    "{} has no node_modules: run scripts/setup-test-deps",
                    dir.display()
                );
                let mut c =
                    Command::new(std::env::var("PRESENCED_TEST_NODE").unwrap_or("node".into()));
                c.arg(dir.join("agent.mjs"));
                c
            }
        }
    }

    fn hint(self) -> &'static str {
        match self {
            Lib::Slixmpp => "is python3-slixmpp installed? scripts/setup-test-deps",
            Lib::XmppJs => "is node installed? scripts/setup-test-deps",
        }
    }
}

pub fn jid(user: &str) -> String {
    format!("{user}@{DOMAIN}")
}

pub struct Agent {
    pub name: String,
    child: Child,
    stdin: ChildStdin,
    rx: Receiver<Value>,
    /// Events received but not yet matched by an `expect`.
    pending: VecDeque<Value>,
    /// Everything received, for failure messages.
    seen: Vec<Value>,
    /// The bound full JID, once a session started.
    pub jid: String,
}

impl Agent {
    pub fn spawn(name: &str) -> Agent {
        Self::spawn_lib(Lib::Slixmpp, name)
    }

    /// Start an agent process of client library `lib`.
    pub fn spawn_lib(lib: Lib, name: &str) -> Agent {
        let mut child = lib
            .command()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn the {lib:?} agent: {e} ({})", lib.hint()));
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && tx.send(v).is_err()
                {
                    break;
                }
            }
        });
        let mut a = Agent {
            name: name.to_string(),
            child,
            stdin,
            rx,
            pending: VecDeque::new(),
            seen: Vec::new(),
            jid: String::new(),
        };
        a.expect("agent ready", Duration::from_secs(20), |e| {
            e["ev"] == "ready"
        });
        a
    }

    /// Connect `user/resource` to node `node` of the cluster and wait for the session.
    pub fn login(c: &Cluster, node: usize, user: &str, resource: &str, password: &str) -> Agent {
        Self::login_lib(Lib::Slixmpp, c, node, user, resource, password)
    }

    /// [`Agent::login`] with a client of library `lib`.
    pub fn login_lib(
        lib: Lib,
        c: &Cluster,
        node: usize,
        user: &str,
        resource: &str,
        password: &str,
    ) -> Agent {
        let mut a = Agent::spawn_lib(lib, &format!("{user}/{resource}@node{}", node + 1));
        a.connect(c, node, user, resource, password, json!({}));
        a.expect_session();
        a
    }

    /// Wait for the session to start and remember its JID.
    pub fn expect_session(&mut self) -> Value {
        let e = self.expect("session start", Duration::from_secs(15), |e| {
            e["ev"] == "session_start"
        });
        self.jid = e["jid"].as_str().unwrap_or_default().to_string();
        e
    }

    /// Wait until everything `sender` sent before now has reached this client:
    /// `sender` sends this session a message, and the server keeps one sender's
    /// stanzas in order on their way (one session queue, one peer link), so when
    /// it arrives, anything sent earlier that was going to arrive has.
    pub fn barrier_from(&mut self, sender: &mut Agent) {
        let token = format!("barrier-{}-{}", sender.name, self.seen.len());
        sender.send(json!({"cmd": "message", "to": self.jid, "body": token, "type": "chat"}));
        self.expect_body(&token, Duration::from_secs(10));
    }

    /// Assert that nothing matching `pred` has arrived (call after a barrier).
    pub fn assert_none_yet(&mut self, what: &str, pred: impl Fn(&Value) -> bool) {
        while let Ok(v) = self.rx.try_recv() {
            self.seen.push(v.clone());
            self.pending.push_back(v);
        }
        if let Some(v) = self.pending.iter().find(|v| pred(v)) {
            panic!("{}: unexpected {what}: {v}", self.name);
        }
    }

    /// `extra`: more connect options (`mech`, `direct_tls`). An empty resource lets the
    /// server choose one.
    pub fn connect(
        &mut self,
        c: &Cluster,
        node: usize,
        user: &str,
        resource: &str,
        password: &str,
        extra: Value,
    ) {
        let n = &c.nodes[node];
        let full = if resource.is_empty() {
            jid(user)
        } else {
            format!("{}/{resource}", jid(user))
        };
        let direct = extra["direct_tls"].as_bool().unwrap_or(false);
        let mut cmd = json!({
            "cmd": "connect",
            "jid": full,
            "password": password,
            "host": "127.0.0.1",
            "port": if direct { n.xmpps } else { n.xmpp },
            "cafile": n.cert(),
        });
        if let (Some(o), Some(x)) = (cmd.as_object_mut(), extra.as_object()) {
            for (k, v) in x {
                o.insert(k.clone(), v.clone());
            }
        }
        self.send(cmd);
    }

    pub fn send(&mut self, v: Value) {
        writeln!(self.stdin, "{v}").expect("agent stdin");
        self.stdin.flush().expect("agent stdin");
    }

    fn next_event(&mut self, deadline: Instant) -> Option<Value> {
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        match self.rx.recv_timeout(deadline - now) {
            Ok(v) => {
                self.seen.push(v.clone());
                Some(v)
            }
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                std::thread::sleep(
                    deadline
                        .saturating_duration_since(Instant::now())
                        .min(Duration::from_millis(50)),
                );
                None
            }
        }
    }

    /// Wait for the first event matching `pred` (earlier unmatched events stay queued).
    pub fn expect(&mut self, what: &str, within: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.pending.iter().position(&pred) {
            return self.pending.remove(i).unwrap();
        }
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            match self.next_event(deadline) {
                Some(v) if pred(&v) => return v,
                Some(v) => self.pending.push_back(v),
                None => {}
            }
        }
        panic!(
            "{}: no {what} within {within:?}; events seen:\n{}",
            self.name,
            self.seen
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    /// The first event matching `pred` within `within`, if one comes.
    pub fn try_expect(&mut self, within: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        if let Some(i) = self.pending.iter().position(&pred) {
            return self.pending.remove(i);
        }
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            match self.next_event(deadline) {
                Some(v) if pred(&v) => return Some(v),
                Some(v) => self.pending.push_back(v),
                None => {}
            }
        }
        None
    }

    /// Assert that no event matching `pred` arrives within `within` (and none is queued).
    pub fn expect_none(&mut self, what: &str, within: Duration, pred: impl Fn(&Value) -> bool) {
        if let Some(v) = self.pending.iter().find(|v| pred(v)) {
            panic!("{}: unexpected {what}: {v}", self.name);
        }
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(v) = self.next_event(deadline) {
                assert!(!pred(&v), "{}: unexpected {what}: {v}", self.name);
                self.pending.push_back(v);
            }
        }
    }

    /// Forget queued events.
    pub fn clear(&mut self) {
        while let Ok(v) = self.rx.try_recv() {
            self.seen.push(v);
        }
        self.pending.clear();
    }

    // ---- shorthands

    pub fn presence(&mut self, v: Value) {
        let mut cmd = json!({"cmd": "presence"});
        if let (Some(o), Some(extra)) = (cmd.as_object_mut(), v.as_object()) {
            for (k, x) in extra {
                o.insert(k.clone(), x.clone());
            }
        }
        self.send(cmd);
    }

    pub fn available(&mut self) {
        self.send(json!({"cmd": "presence"}));
    }

    pub fn chat(&mut self, to: &str, body: &str) {
        self.send(json!({"cmd": "message", "to": to, "body": body, "type": "chat"}));
    }

    /// Wait for a chat message with this body; returns it.
    pub fn expect_body(&mut self, body: &str, within: Duration) -> Value {
        let b = body.to_string();
        self.expect(&format!("message {body:?}"), within, move |e| {
            e["ev"] == "message" && e["body"] == b.as_str() && e["type"] != "error"
        })
    }

    /// Wait for the available presence of `from`: a full JID exactly, or any resource
    /// of a bare JID.
    pub fn expect_available(&mut self, from: &str, within: Duration) -> Value {
        let f = from.to_string();
        self.expect(&format!("available presence of {from}"), within, move |e| {
            e["ev"] == "presence"
                && e["from"].as_str().is_some_and(|x| from_matches(x, &f))
                && e["type"] != "unavailable"
                && e["type"] != "error"
                && !matches!(
                    e["type"].as_str(),
                    Some("subscribe" | "subscribed" | "unsubscribe" | "unsubscribed")
                )
        })
    }

    pub fn expect_unavailable(&mut self, from: &str, within: Duration) -> Value {
        let f = from.to_string();
        self.expect(
            &format!("unavailable presence of {from}"),
            within,
            move |e| {
                e["ev"] == "presence"
                    && e["from"].as_str().is_some_and(|x| from_matches(x, &f))
                    && e["type"] == "unavailable"
            },
        )
    }

    pub fn roster(&mut self) -> Value {
        self.send(json!({"cmd": "roster_get"}));
        self.expect("roster", Duration::from_secs(10), |e| e["ev"] == "roster")
    }

    /// Close the stream cleanly and end the agent.
    pub fn quit(mut self) {
        self.send(json!({"cmd": "exit"}));
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Does a stanza's `from` match `want`: the same full JID, or (for a bare `want`)
/// the bare JID itself or any of its resources? `b@x/r` never matches `b@x/r1`.
pub fn from_matches(from: &str, want: &str) -> bool {
    if want.contains('/') {
        from == want
    } else {
        from == want
            || from
                .strip_prefix(want)
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Open a plaintext stream to `port`, send `payload` after the stream header, and
/// return everything the server sent until it closed the stream (or 10 s passed).
pub fn raw_stream(port: u16, payload: &str) -> String {
    raw_exchange(port, &format!("{}{payload}", stream_header()))
}

pub fn stream_header() -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams' to='{DOMAIN}' version='1.0'>"
    )
}

/// Send `bytes` as they are and collect the answer until the server closes.
pub fn raw_exchange(port: u16, bytes: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The server may close before reading everything: a failed write is fine.
    let _ = s.write_all(bytes.as_bytes());
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if String::from_utf8_lossy(&out).contains("</stream:stream>") {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
