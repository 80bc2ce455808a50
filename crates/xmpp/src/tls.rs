//! Server TLS: the configured certificate, or a self-signed one for the domain that is
//! generated at first start and kept in the data directory (so clients can pin it).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::lean_tls::Acceptor;
use anyhow::Context as _;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Where the certificate comes from.
#[derive(Debug, Clone)]
pub enum CertSource {
    Files {
        cert: PathBuf,
        key: PathBuf,
    },
    /// Generate (once) into this directory: `xmpp.crt` and `xmpp.key`.
    SelfSigned {
        dir: PathBuf,
    },
}

/// Build the acceptor; returns it with the path of the certificate in use.
pub fn acceptor(src: &CertSource, domain: &str) -> anyhow::Result<(Acceptor, PathBuf)> {
    let (cert, key) = match src {
        CertSource::Files { cert, key } => (cert.clone(), key.clone()),
        CertSource::SelfSigned { dir } => {
            let cert = dir.join("xmpp.crt");
            let key = dir.join("xmpp.key");
            if !cert.exists() || !key.exists() {
                generate(domain, &cert, &key)?;
                tracing::info!(cert = %cert.display(), "generated a self-signed certificate for {domain}");
            }
            (cert, key)
        }
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .with_context(|| format!("tls certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("tls certificate {}", cert.display()))?;
    let pk =
        PrivateKeyDer::from_pem_file(&key).with_context(|| format!("tls key {}", key.display()))?;
    // ChaCha20-Poly1305 first, chosen by the server: its key schedule is a few dozen
    // bytes against about 1 KiB for AES-GCM's, per connection and direction, which is
    // most of what separates an idle TLS session from a plaintext one. AES-GCM stays
    // available for clients that do not offer ChaCha20.
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|cs| !format!("{:?}", cs.suite()).contains("CHACHA20"));
    let provider = Arc::new(provider);
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("tls protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, pk)
        .context("tls certificate and key do not match")?;
    // Idle sessions should cost little memory: no session tickets or cache.
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    cfg.send_tls13_tickets = 0;
    cfg.ignore_client_order = true;
    Ok((Acceptor::new(Arc::new(cfg)), cert))
}

fn generate(domain: &str, cert: &Path, key: &Path) -> anyhow::Result<()> {
    let names = vec![domain.to_string(), "localhost".to_string()];
    let ck = rcgen::generate_simple_self_signed(names).context("generating a certificate")?;
    if let Some(dir) = cert.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = key.with_extension("key.tmp");
    write_private(&tmp, ck.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(cert, ck.cert.pem()).with_context(|| format!("writing {}", cert.display()))?;
    std::fs::rename(&tmp, key).with_context(|| format!("writing {}", key.display()))?;
    Ok(())
}

fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    Ok(())
}
