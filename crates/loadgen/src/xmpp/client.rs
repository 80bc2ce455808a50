//! A small XMPP c2s client (RFC 6120): TCP, optional STARTTLS (certificate not
//! verified), SASL SCRAM-SHA-1 / SCRAM-SHA-256 / PLAIN, resource binding, and
//! in-band registration (XEP-0077). Only what the load generator needs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use presenced_xmpp::xml::{Element, Frame, Limits, Node, StreamReader};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;

/// Any byte stream: plain TCP or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
pub type BoxIo = Box<dyn Io>;

/// Microseconds since the process started (one clock for every session in it).
pub fn now_us() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// A parsed element: local name, attributes (prefixes kept), children, text.
#[derive(Debug, Default, Clone)]
pub struct El {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<El>,
    pub text: String,
}

impl El {
    pub fn attr(&self, k: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
    pub fn child(&self, name: &str) -> Option<&El> {
        self.children.iter().find(|c| c.name == name)
    }
    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }
}

impl El {
    /// The element tree of presenced's own stream reader, in this tool's simpler form
    /// (namespaces dropped, text concatenated).
    fn from_element(e: Element) -> El {
        let text = e.text();
        let mut children = Vec::new();
        for c in e.children {
            if let Node::El(c) = c {
                children.push(El::from_element(c));
            }
        }
        El {
            name: e.name,
            attrs: e.attrs,
            children,
            text,
        }
    }
}

/// Reads top-level stanzas from an XMPP stream, with presenced's stream reader (the
/// same restricted-XML parser the server uses; generous limits for a client).
pub struct XmlIn(Option<StreamReader<ReadHalf<BoxIo>>>);

const CLIENT_LIMITS: Limits = Limits {
    max_stanza_bytes: 16 << 20,
    max_depth: 64,
};

impl XmlIn {
    fn new(r: ReadHalf<BoxIo>) -> Self {
        XmlIn(Some(StreamReader::new(r, CLIENT_LIMITS)))
    }

    fn into_inner(mut self) -> ReadHalf<BoxIo> {
        self.take().into_inner()
    }

    fn take(&mut self) -> StreamReader<ReadHalf<BoxIo>> {
        self.0
            .take()
            .expect("the reader is only taken to be replaced")
    }

    /// A new stream starts on the same connection (after SASL): a fresh parser.
    fn restart(&mut self) {
        let r = self.take().into_inner();
        *self = XmlIn::new(r);
    }

    /// The next stanza, or None when the server closed the stream.
    pub async fn next(&mut self) -> anyhow::Result<Option<El>> {
        let r = self.0.as_mut().expect("reader present");
        loop {
            match r.next().await.map_err(|e| anyhow!("{e}"))? {
                Frame::Header(_) | Frame::Keepalive => continue,
                Frame::Stanza(e) => return Ok(Some(El::from_element(e))),
                Frame::End => return Ok(None),
            }
        }
    }
}

pub fn esc(s: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(s)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mech {
    Plain,
    ScramSha1,
    ScramSha256,
}

impl Mech {
    pub fn parse(s: &str) -> anyhow::Result<Mech> {
        Ok(match s.to_ascii_uppercase().as_str() {
            "PLAIN" => Mech::Plain,
            "SCRAM-SHA-1" => Mech::ScramSha1,
            "SCRAM-SHA-256" => Mech::ScramSha256,
            o => bail!("unsupported SASL mechanism {o}"),
        })
    }
    fn name(self) -> &'static str {
        match self {
            Mech::Plain => "PLAIN",
            Mech::ScramSha1 => "SCRAM-SHA-1",
            Mech::ScramSha256 => "SCRAM-SHA-256",
        }
    }
}

/// How to reach and log in to a server.
pub struct ClientCfg {
    pub domain: String,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub mech: Mech,
    /// Send SCRAM's client-first message in the `<auth/>` element (RFC 6120 §6.4.2);
    /// if not, after the server's empty challenge.
    pub initial_response: bool,
    pub resource: String,
}

pub fn tls_config() -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// Accepts any certificate (self-signed benchmark servers); still checks the
/// handshake signatures.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A stream during negotiation: reader and writer halves of one connection.
struct Neg {
    rd: XmlIn,
    wr: WriteHalf<BoxIo>,
}

impl Neg {
    fn new(io: BoxIo) -> Self {
        let (r, w) = tokio::io::split(io);
        Neg {
            rd: XmlIn::new(r),
            wr: w,
        }
    }
    async fn send(&mut self, s: &str) -> anyhow::Result<()> {
        self.wr.write_all(s.as_bytes()).await?;
        self.wr.flush().await?;
        Ok(())
    }
    async fn next(&mut self) -> anyhow::Result<El> {
        self.rd
            .next()
            .await?
            .ok_or_else(|| anyhow!("server closed the stream"))
    }
    async fn open(&mut self, domain: &str) -> anyhow::Result<El> {
        self.rd.restart();
        self.send(&format!(
            "<?xml version='1.0'?><stream:stream to='{}' xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>",
            esc(domain)
        ))
        .await?;
        let f = self.next().await?;
        if f.name == "error" {
            bail!("stream error: {}", describe(&f));
        }
        anyhow::ensure!(
            f.name == "features",
            "expected stream features, got <{}>",
            f.name
        );
        Ok(f)
    }
    /// The next iq answering `id` (other stanzas are skipped).
    async fn iq(&mut self, id: &str) -> anyhow::Result<El> {
        loop {
            let s = self.next().await?;
            if s.name == "iq" && s.attr("id") == Some(id) {
                return Ok(s);
            }
            if s.name == "error" {
                bail!("stream error: {}", describe(&s));
            }
        }
    }
}

/// Short text for an error element: its children's names and any text.
pub fn describe(e: &El) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in &e.children {
        if c.name == "error" {
            parts.push(describe(c));
        } else if c.name == "text" {
            parts.push(format!("\"{}\"", c.text));
        } else {
            parts.push(c.name.clone());
        }
    }
    if parts.is_empty() {
        e.name.clone()
    } else {
        parts.join(" ")
    }
}

/// A logged-in session, split so one task can read while others write.
pub struct Session {
    pub rd: XmlIn,
    pub wr: Writer,
    pub jid: String,
}

#[derive(Clone)]
pub struct Writer(Arc<tokio::sync::Mutex<WriteHalf<BoxIo>>>);

impl Writer {
    pub async fn send(&self, s: &str) -> anyhow::Result<()> {
        let mut w = self.0.lock().await;
        w.write_all(s.as_bytes()).await?;
        w.flush().await?;
        Ok(())
    }
    pub async fn close(&self) {
        let mut w = self.0.lock().await;
        let _ = w.write_all(b"</stream:stream>").await;
        let _ = w.flush().await;
        let _ = w.shutdown().await;
    }
}

async fn connect(cfg: &ClientCfg, server: &str) -> anyhow::Result<(Neg, El)> {
    let tcp = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(server))
        .await
        .map_err(|_| anyhow!("connect to {server} timed out"))?
        .with_context(|| format!("connect to {server}"))?;
    tcp.set_nodelay(true)?;
    let mut n = Neg::new(Box::new(tcp));
    let mut f = n.open(&cfg.domain).await?;
    if let Some(tls) = &cfg.tls {
        anyhow::ensure!(f.child("starttls").is_some(), "server offers no STARTTLS");
        n.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            .await?;
        let p = n.next().await?;
        anyhow::ensure!(p.name == "proceed", "STARTTLS refused: <{}>", p.name);
        let io = n.rd.into_inner().unsplit(n.wr);
        let name = ServerName::try_from(cfg.domain.clone())?;
        let t = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, io)
            .await
            .context("TLS handshake")?;
        n = Neg::new(Box::new(t));
        f = n.open(&cfg.domain).await?;
    }
    Ok((n, f))
}

/// In-band registration (XEP-0077). Ok(true) created, Ok(false) already existed.
pub async fn register(
    cfg: &ClientCfg,
    server: &str,
    user: &str,
    pass: &str,
) -> anyhow::Result<bool> {
    let (mut n, _f) = connect(cfg, server).await?;
    n.send(&format!(
        "<iq type='set' id='reg1'><query xmlns='jabber:iq:register'><username>{}</username>\
         <password>{}</password></query></iq>",
        esc(user),
        esc(pass)
    ))
    .await?;
    let r = n.iq("reg1").await?;
    let _ = n.send("</stream:stream>").await;
    match r.attr("type") {
        Some("result") => Ok(true),
        _ if describe(&r).contains("conflict") => Ok(false),
        _ => bail!("registration of {user} refused: {}", describe(&r)),
    }
}

/// Connect, authenticate and bind. Returns the session.
pub async fn login(
    cfg: &ClientCfg,
    server: &str,
    user: &str,
    pass: &str,
) -> anyhow::Result<Session> {
    let (mut n, f) = connect(cfg, server).await?;
    let mechs: Vec<&str> = f
        .child("mechanisms")
        .map(|m| m.children.iter().map(|c| c.text.as_str()).collect())
        .unwrap_or_default();
    anyhow::ensure!(
        mechs.contains(&cfg.mech.name()),
        "server does not offer {} (offers {mechs:?})",
        cfg.mech.name()
    );
    sasl(&mut n, cfg, user, pass).await?;
    let f = n.open(&cfg.domain).await?;
    n.send(&format!(
        "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
         <resource>{}</resource></bind></iq>",
        esc(&cfg.resource)
    ))
    .await?;
    let r = n.iq("bind1").await?;
    anyhow::ensure!(
        r.attr("type") == Some("result"),
        "bind failed: {}",
        describe(&r)
    );
    let jid = r
        .child("bind")
        .and_then(|b| b.child_text("jid"))
        .map(str::to_string)
        .ok_or_else(|| anyhow!("bind result without jid"))?;
    if let Some(s) = f.child("session")
        && s.child("optional").is_none()
    {
        n.send(
            "<iq type='set' id='sess1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>",
        )
        .await?;
        n.iq("sess1").await?;
    }
    Ok(Session {
        rd: n.rd,
        wr: Writer(Arc::new(tokio::sync::Mutex::new(n.wr))),
        jid,
    })
}

// ---- SASL ----

type Cache = Mutex<HashMap<(Mech, String, Vec<u8>, u32), Vec<u8>>>;

/// SaltedPassword cache: a real client stores it too, and it keeps the PBKDF2 cost
/// off repeated logins of the same user in one run.
fn salted(mech: Mech, pass: &str, salt: &[u8], iters: u32) -> Vec<u8> {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = (mech, pass.to_string(), salt.to_vec(), iters);
    if let Some(v) = cache.lock().expect("cache lock").get(&key) {
        return v.clone();
    }
    let v = match mech {
        Mech::ScramSha256 => {
            let mut out = [0u8; 32];
            pbkdf2::pbkdf2_hmac::<Sha256>(pass.as_bytes(), salt, iters, &mut out);
            out.to_vec()
        }
        _ => {
            let mut out = [0u8; 20];
            pbkdf2::pbkdf2_hmac::<Sha1>(pass.as_bytes(), salt, iters, &mut out);
            out.to_vec()
        }
    };
    cache.lock().expect("cache lock").insert(key, v.clone());
    v
}

fn hmac(mech: Mech, key: &[u8], data: &[u8]) -> Vec<u8> {
    match mech {
        Mech::ScramSha256 => {
            let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key size");
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        _ => {
            let mut m = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("any key size");
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
    }
}

fn hash(mech: Mech, data: &[u8]) -> Vec<u8> {
    match mech {
        Mech::ScramSha256 => Sha256::digest(data).to_vec(),
        _ => Sha1::digest(data).to_vec(),
    }
}

async fn sasl(n: &mut Neg, cfg: &ClientCfg, user: &str, pass: &str) -> anyhow::Result<()> {
    const NS: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
    let mech = cfg.mech;
    let fail = |e: &El| anyhow!("authentication of {user} failed: {}", describe(e));
    if mech == Mech::Plain {
        let msg = format!("\0{user}\0{pass}");
        n.send(&format!(
            "<auth xmlns='{NS}' mechanism='PLAIN'>{}</auth>",
            B64.encode(msg)
        ))
        .await?;
        let r = n.next().await?;
        anyhow::ensure!(r.name == "success", fail(&r));
        return Ok(());
    }
    let cnonce = {
        use rand::Rng;
        let mut r = rand::rng();
        format!("{:016x}{:016x}", r.random::<u64>(), r.random::<u64>())
    };
    let uname = user.replace('=', "=3D").replace(',', "=2C");
    let first_bare = format!("n={uname},r={cnonce}");
    let client_first = B64.encode(format!("n,,{first_bare}"));
    if cfg.initial_response {
        n.send(&format!(
            "<auth xmlns='{NS}' mechanism='{}'>{client_first}</auth>",
            mech.name()
        ))
        .await?;
    } else {
        n.send(&format!("<auth xmlns='{NS}' mechanism='{}'/>", mech.name()))
            .await?;
        let c = n.next().await?;
        anyhow::ensure!(
            c.name == "challenge" && matches!(c.text.trim(), "" | "="),
            "expected an empty challenge: {}",
            fail(&c)
        );
        n.send(&format!("<response xmlns='{NS}'>{client_first}</response>"))
            .await?;
    }
    let c = n.next().await?;
    anyhow::ensure!(c.name == "challenge", fail(&c));
    let server_first = String::from_utf8(B64.decode(c.text.trim())?)?;
    let mut nonce = "";
    let mut salt = Vec::new();
    let mut iters = 0u32;
    for part in server_first.split(',') {
        if let Some(v) = part.strip_prefix("r=") {
            nonce = v;
        } else if let Some(v) = part.strip_prefix("s=") {
            salt = B64.decode(v)?;
        } else if let Some(v) = part.strip_prefix("i=") {
            iters = v.parse()?;
        }
    }
    anyhow::ensure!(
        nonce.starts_with(&cnonce) && iters > 0,
        "bad SCRAM challenge {server_first:?}"
    );
    let sp = salted(mech, pass, &salt, iters);
    let client_key = hmac(mech, &sp, b"Client Key");
    let stored_key = hash(mech, &client_key);
    let without_proof = format!("c=biws,r={nonce}");
    let auth_msg = format!("{first_bare},{server_first},{without_proof}");
    let sig = hmac(mech, &stored_key, auth_msg.as_bytes());
    let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
    n.send(&format!(
        "<response xmlns='{NS}'>{}</response>",
        B64.encode(format!("{without_proof},p={}", B64.encode(proof)))
    ))
    .await?;
    let mut r = n.next().await?;
    if r.name == "challenge" {
        // some servers send the server-final message as a challenge
        let final_msg = r.text.clone();
        n.send(&format!("<response xmlns='{NS}'/>")).await?;
        r = n.next().await?;
        r.text = final_msg;
    }
    anyhow::ensure!(r.name == "success", fail(&r));
    let server_key = hmac(mech, &sp, b"Server Key");
    let expect = B64.encode(hmac(mech, &server_key, auth_msg.as_bytes()));
    let got = String::from_utf8(B64.decode(r.text.trim())?)?;
    anyhow::ensure!(
        got.strip_prefix("v=") == Some(expect.as_str()),
        "server signature mismatch for {user}"
    );
    Ok(())
}
