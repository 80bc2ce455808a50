//! Hostile and legitimate clients for the resource-exhaustion tests
//! (`tests/tests/exhaustion*.rs`): a one-node cluster with accounts, raw XMPP clients
//! from their own loopback addresses (127.0.x.y: Linux routes all of 127/8 to lo),
//! slixmpp agents, and the node's metrics, memory, descriptors and CPU.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::xmpp::{Agent, jid, stream_header};
use crate::{Cluster, DOMAIN, Opts, metric};

pub const PW: &str = "secret-pw-1";
pub const T: Duration = Duration::from_secs(10);

/// A one-node cluster with `extra` configuration and these accounts (password `PW`).
pub fn node(extra: &str, users: &[String]) -> Cluster {
    let c = Cluster::start_with(
        1,
        Opts {
            extra: extra.to_string(),
            ..Opts::default()
        },
    );
    let csv = c.dir.path().join("users.csv");
    let rows: Vec<String> = users.iter().map(|u| format!("{u},{PW}")).collect();
    std::fs::write(&csv, rows.join("\n") + "\n").unwrap();
    c.ctl(0, &["user", "import", csv.to_str().unwrap()]).ok();
    c
}

pub fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The value of a labelled counter (0 when it was never incremented).
pub fn counter(c: &Cluster, name: &str, label: &str, value: &str) -> f64 {
    metric(&c.metrics(0), &format!("{name}{{{label}=\"{value}\"}}")).unwrap_or(0.0)
}

pub fn refused(c: &Cluster, reason: &str) -> f64 {
    counter(c, "presenced_c2s_refused_total", "reason", reason)
}

pub fn closed(c: &Cluster, reason: &str) -> f64 {
    counter(c, "presenced_c2s_closed_total", "reason", reason)
}

/// The resident memory of the node process, in KiB (found by its config path).
pub fn node_rss_kib(c: &Cluster) -> u64 {
    let config = c.nodes[0].config.to_string_lossy().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains("presenced\0") && cmdline.contains(&config) {
            let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
            if let Some(l) = status.lines().find(|l| l.starts_with("VmRSS:")) {
                return l.split_whitespace().nth(1).unwrap().parse().unwrap();
            }
        }
    }
    panic!("node process not found");
}

/// Log `user/resource` in with slixmpp and make it available (its own presence has
/// come back, so messages to its bare JID reach it).
pub fn agent(c: &Cluster, user: &str, resource: &str) -> Agent {
    let mut a = Agent::login(c, 0, user, resource, PW);
    a.available();
    let me = a.jid.clone();
    a.expect_available(&me, T);
    a
}

/// Exchange one message between two logged-in agents; how long it took.
pub fn exchange(from: &mut Agent, to: &mut Agent, body: &str) -> Duration {
    let t = Instant::now();
    from.chat(&jid(to.name.split('/').next().unwrap()), body);
    to.expect_body(body, T);
    t.elapsed()
}

// ---------------------------------------------------------------- raw clients

/// A TCP connection from loopback address `src`.
pub async fn tcp_from(src: Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(src.into(), 0))?;
    let tcp = s.connect(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    // Small writes go at once (as the server's do): no Nagle wait on our side.
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// The client side of a raw XMPP stream.
pub struct Raw<S> {
    pub io: S,
    pub buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Raw<S> {
    pub fn new(io: S) -> Self {
        Raw {
            io,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, s: &str) -> Result<(), String> {
        self.io
            .write_all(s.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))
    }

    /// Read until one of `pats` arrives: the text up to and including it (consumed).
    pub async fn until(&mut self, pats: &[&str], within: Duration) -> Result<String, String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let text = String::from_utf8_lossy(&self.buf).to_string();
            if let Some((at, p)) = pats
                .iter()
                .filter_map(|p| text.find(p).map(|at| (at, *p)))
                .min_by_key(|(at, _)| *at)
            {
                let end = at + p.len();
                let out = text[..end].to_string();
                self.buf.drain(..out.len().min(self.buf.len()));
                return Ok(out);
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.io.read(&mut chunk)).await {
                Err(_) => return Err(format!("timeout waiting for {pats:?}; got {text}")),
                Ok(Ok(0)) => return Err(format!("closed waiting for {pats:?}; got {text}")),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => return Err(format!("read: {e}; got {text}")),
            }
        }
    }

    /// Read until the server closes: everything it sent.
    pub async fn until_closed(&mut self, within: Duration) -> Result<String, String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.io.read(&mut chunk)).await {
                Err(_) => return Err("still open".into()),
                Ok(Ok(0)) | Ok(Err(_)) => return Ok(String::from_utf8_lossy(&self.buf).into()),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

pub fn tls_connector(c: &Cluster) -> TlsConnector {
    tls_connector_for(c, 0)
}

/// A TLS client trusting node `i`'s XMPP certificate.
pub fn tls_connector_for(c: &Cluster, i: usize) -> TlsConnector {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(c.nodes[i].cert()).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(cfg))
}

pub type Tls = Raw<TlsStream<TcpStream>>;

/// Connect from `src`, STARTTLS, and read the features offered inside TLS.
pub async fn starttls(src: Ipv4Addr, port: u16, tls: &TlsConnector) -> Result<Tls, String> {
    let tcp = tcp_from(src, port)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut r = Raw::new(tcp);
    r.send(&stream_header()).await?;
    r.until(&["</stream:features>"], T).await?;
    r.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        .await?;
    r.until(&["<proceed"], T).await?;
    r.until(&["/>"], T).await?;
    let name = rustls_pki_types::ServerName::try_from(DOMAIN).unwrap();
    let io = tls
        .connect(name, r.io)
        .await
        .map_err(|e| format!("tls: {e}"))?;
    let mut r = Raw::new(io);
    r.send(&stream_header()).await?;
    r.until(&["</stream:features>"], T).await?;
    Ok(r)
}

/// What a SASL attempt got.
#[derive(Debug, PartialEq, Eq)]
pub enum Sasl {
    Success,
    /// The `<failure/>` condition.
    Failure(String),
}

/// One SASL PLAIN attempt on a stream inside TLS.
pub async fn plain(r: &mut Tls, user: &str, password: &str) -> Result<Sasl, String> {
    let creds = B64.encode(format!("\0{user}\0{password}"));
    r.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>"
    ))
    .await?;
    let got = r
        .until(&["<success", "</failure>", "</stream:error>"], T)
        .await?;
    if got.contains("<success") {
        r.until(&["/>"], T).await?;
        return Ok(Sasl::Success);
    }
    if got.contains("</stream:error>") {
        return Err(format!("stream error: {got}"));
    }
    let at = got.rfind("<failure").unwrap();
    let rest = &got[at..];
    let cond = rest
        .split('<')
        .nth(2)
        .and_then(|s| s.split([' ', '/', '>']).next())
        .unwrap_or_default();
    Ok(Sasl::Failure(cond.to_string()))
}

/// After SASL success: restart the stream, bind `resource`, send initial presence.
pub async fn bind(r: &mut Tls, resource: &str) -> Result<(), String> {
    r.send(&stream_header()).await?;
    r.until(&["</stream:features>"], T).await?;
    r.send(&format!(
        "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
         <resource>{resource}</resource></bind></iq>"
    ))
    .await?;
    r.until(&["</iq>"], T).await?;
    r.send("<presence/>").await?;
    Ok(())
}

/// A full raw login (STARTTLS, PLAIN, bind, presence) from `src`.
pub async fn login(
    src: Ipv4Addr,
    port: u16,
    tls: &TlsConnector,
    user: &str,
    resource: &str,
) -> Result<Tls, String> {
    let mut r = starttls(src, port, tls).await?;
    match plain(&mut r, user, PW).await? {
        Sasl::Success => {}
        other => return Err(format!("{user}: {other:?}")),
    }
    bind(&mut r, resource).await?;
    Ok(r)
}

/// Every answer of the burst is a verified failure (`not-authorized`), a refusal
/// (`temporary-auth-failure`) or a closed stream: the number of verified failures.
pub fn refused_total_check(
    answers: &std::collections::BTreeMap<String, usize>,
    attempts: usize,
) -> f64 {
    let known: usize = ["not-authorized", "temporary-auth-failure", "stream closed"]
        .iter()
        .map(|k| answers.get(*k).copied().unwrap_or(0))
        .sum();
    assert_eq!(
        known,
        answers.values().sum::<usize>(),
        "unexpected answers: {answers:?}"
    );
    assert!(known <= attempts);
    answers.get("not-authorized").copied().unwrap_or(0) as f64
}

/// The node's process id (found by its config path).
pub fn node_pid(c: &Cluster) -> u32 {
    let config = c.nodes[0].config.to_string_lossy().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains("presenced\0") && cmdline.contains(&config) {
            return entry.file_name().to_string_lossy().parse().unwrap();
        }
    }
    panic!("node process not found");
}

/// Open descriptors and CPU seconds (user + system) of a process.
pub fn fds_and_cpu(pid: u32) -> (usize, f64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    (fds, ticks / 100.0)
}

/// Open `n` silent connections from addresses 127.0.x.y; the ones still open after
/// 300 ms, and how long the refused ones took to be closed.
pub async fn open_silent(port: u16, n: usize, net: u8) -> (Vec<TcpStream>, Vec<Duration>, usize) {
    let mut tasks = Vec::new();
    let mut failed_connects = 0;
    for i in 0..n {
        let src = Ipv4Addr::new(
            127,
            net + (i / 60_000) as u8,
            ((i / 250) % 240) as u8 + 1,
            (i % 250) as u8 + 1,
        );
        let t = Instant::now();
        match tokio::time::timeout(Duration::from_millis(500), tcp_from(src, port)).await {
            Ok(Ok(tcp)) => tasks.push(tokio::spawn(async move {
                let mut r = Raw::new(tcp);
                let got = r.until_closed(Duration::from_millis(300)).await;
                (r.io, got.map(|_| t.elapsed()))
            })),
            // The backlog is full (accepting stopped): the connection is not made.
            _ => failed_connects += 1,
        }
        if failed_connects > 20 {
            break;
        }
    }
    let (mut held, mut refused_after) = (Vec::new(), Vec::new());
    for t in tasks {
        match t.await.unwrap() {
            (_, Ok(after)) => refused_after.push(after),
            (io, Err(_)) => held.push(io),
        }
    }
    (held, refused_after, failed_connects)
}

/// Write `bytes` one at a time, 200 ms apart, on `io` while reading whatever comes
/// back: `true` if the server closed the connection within `within`.
pub async fn trickle_until_closed<S>(io: S, bytes: Vec<u8>, within: Duration) -> bool
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let writer = tokio::spawn(async move {
        for b in bytes {
            if wr.write_all(&[b]).await.is_err() || wr.flush().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut buf = [0u8; 1024];
    let closed = loop {
        match tokio::time::timeout(within, rd.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(_)) => continue,
            Err(_) => break false,
        }
    };
    writer.abort();
    closed
}
