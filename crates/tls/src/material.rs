//! Key material loaded from files and swapped in place on reload, and the rustls
//! pieces that read it at every handshake: the certificate this process presents and
//! the trust bundle it verifies peers against. Connections already established keep
//! the material they were authenticated with; every new one uses the current files.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::RwLock;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::Identity;

/// Where the material is read from.
#[derive(Clone, Debug)]
pub struct Paths {
    /// The trust bundle: the CA certificate(s) peers must chain to.
    pub ca: PathBuf,
    /// This process's certificate chain and key (absent for an operator who
    /// authenticates with the secret).
    pub cert: Option<(PathBuf, PathBuf)>,
}

impl Paths {
    /// `ca.pem`, `<stem>.pem` and `<stem>.key` in one directory.
    pub fn in_dir(dir: &Path, stem: &str) -> Paths {
        Paths {
            ca: dir.join(crate::pki::CA_CERT),
            cert: Some((
                dir.join(format!("{stem}.pem")),
                dir.join(format!("{stem}.key")),
            )),
        }
    }

    fn files(&self) -> Vec<&Path> {
        let mut v = vec![self.ca.as_path()];
        if let Some((c, k)) = &self.cert {
            v.push(c);
            v.push(k);
        }
        v
    }
}

/// One consistent load of the files.
pub struct Loaded {
    server_verifier: Arc<WebPkiServerVerifier>,
    client_verifier: Arc<dyn ClientCertVerifier>,
    key: Option<Arc<CertifiedKey>>,
    /// Whom this process's own certificate names.
    pub identity: Option<Identity>,
    /// When this process's certificate expires (Unix seconds).
    pub not_after: Option<i64>,
    /// How many CA certificates the bundle holds.
    pub trusted_cas: usize,
    stamp: Vec<Option<(SystemTime, u64)>>,
}

/// Reloadable material shared by every listener and connector of a process.
pub struct Material {
    paths: Paths,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<Loaded>>,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material")
            .field("paths", &self.paths)
            .finish()
    }
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn stamp(paths: &Paths) -> Vec<Option<(SystemTime, u64)>> {
    paths
        .files()
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

fn load(paths: &Paths, provider: &Arc<CryptoProvider>, check_own: bool) -> Result<Loaded, String> {
    let stamp = stamp(paths);
    let ca = &paths.ca;
    let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
        .map_err(|e| format!("trust bundle {}: {e}", ca.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("trust bundle {}: {e}", ca.display()))?;
    let mut roots = RootCertStore::empty();
    for c in &cas {
        roots
            .add(c.clone())
            .map_err(|e| format!("trust bundle {}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "trust bundle {} holds no certificate",
            ca.display()
        ));
    }
    let roots = Arc::new(roots);
    let server_verifier =
        WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| format!("trust bundle {}: {e}", ca.display()))?;
    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| format!("trust bundle {}: {e}", ca.display()))?;
    let (key, identity, not_after) = match &paths.cert {
        None => (None, None, None),
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .map_err(|e| format!("certificate {}: {e}", cert.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("certificate {}: {e}", cert.display()))?;
            let leaf = chain
                .first()
                .ok_or_else(|| format!("certificate {} holds no certificate", cert.display()))?
                .clone();
            let pk = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("key {}: {e}", key.display()))?;
            let ck = CertifiedKey::from_der(chain.clone(), pk, provider).map_err(|e| {
                format!(
                    "certificate {} and key {} do not belong together: {e}",
                    cert.display(),
                    key.display()
                )
            })?;
            let id = Identity::from_cert(&leaf)
                .map_err(|e| format!("certificate {}: {e}", cert.display()))?;
            // Our own certificate must pass the check peers will make of it.
            let now = UnixTime::now();
            let checked = match &id {
                Identity::Node(_) => {
                    let name = ServerName::try_from(id.dns_name()).map_err(|e| e.to_string())?;
                    server_verifier
                        .verify_server_cert(&leaf, &chain[1..], &name, &[], now)
                        .map(|_| ())
                }
                Identity::Operator(_) => client_verifier
                    .verify_client_cert(&leaf, &chain[1..], now)
                    .map(|_| ()),
            };
            checked
                .or_else(|e| if check_own { Err(e) } else { Ok(()) })
                .map_err(|e| {
                    format!(
                        "certificate {} is not valid under the trust bundle {}: {e}",
                        cert.display(),
                        ca.display()
                    )
                })?;
            let exp = crate::pki::not_after(&leaf)?;
            (Some(Arc::new(ck)), Some(id), Some(exp))
        }
    };
    Ok(Loaded {
        server_verifier,
        client_verifier,
        key,
        identity,
        not_after,
        trusted_cas: cas.len(),
        stamp,
    })
}

impl Material {
    /// Read the files; every problem is an error that names the file.
    pub fn load(paths: Paths) -> Result<Arc<Material>, String> {
        Self::load_with(paths, true)
    }

    /// As [`Material::load`] but without checking this process's own certificate
    /// against the bundle: for tools and tests that must present a certificate a peer
    /// ought to refuse (an expired one, say).
    pub fn load_unchecked(paths: Paths) -> Result<Arc<Material>, String> {
        Self::load_with(paths, false)
    }

    fn load_with(paths: Paths, check_own: bool) -> Result<Arc<Material>, String> {
        let provider = provider();
        let loaded = load(&paths, &provider, check_own)?;
        Ok(Arc::new(Material {
            paths,
            provider,
            current: RwLock::new(Arc::new(loaded)),
        }))
    }

    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    pub fn current(&self) -> Arc<Loaded> {
        self.current.read().clone()
    }

    /// Whom this process's certificate names.
    pub fn identity(&self) -> Option<Identity> {
        self.current().identity.clone()
    }

    /// Whether the files changed since the last load (modification time or size).
    pub fn changed_on_disk(&self) -> bool {
        stamp(&self.paths) != self.current().stamp
    }

    /// Read the files again. On any problem the material in use stays and the error
    /// is returned; a new certificate must name the same identity as the old one.
    pub fn reload(&self) -> Result<(), String> {
        let new = load(&self.paths, &self.provider, true)?;
        let old = self.current();
        if old.identity.is_some() && new.identity != old.identity {
            return Err(format!(
                "the new certificate names {} but this process is {}",
                new.identity
                    .as_ref()
                    .map_or("nobody".into(), |i| i.to_string()),
                old.identity
                    .as_ref()
                    .map_or("nobody".into(), |i| i.to_string()),
            ));
        }
        *self.current.write() = Arc::new(new);
        Ok(())
    }

    pub(crate) fn provider(&self) -> &Arc<CryptoProvider> {
        &self.provider
    }
}

/// The certificate this process presents as a server.
#[derive(Debug)]
pub(crate) struct OwnCert(pub Arc<Material>);

impl ResolvesServerCert for OwnCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.current().key.clone()
    }
}

impl ResolvesClientCert for OwnCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.current().key.clone()
    }

    fn has_certs(&self) -> bool {
        self.0.current().key.is_some()
    }
}

fn other(msg: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
        Arc::new(std::io::Error::other(msg)),
    )))
}

/// The handshake-signature half of a verifier is the provider's, for both kinds.
macro_rules! provider_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            let algs = &self.material.provider().signature_verification_algorithms;
            rustls::crypto::verify_tls12_signature(m, c, d, algs)
        }

        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            let algs = &self.material.provider().signature_verification_algorithms;
            rustls::crypto::verify_tls13_signature(m, c, d, algs)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.material
                .provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}

/// Verifies a client's certificate against the current bundle and that it names a
/// node or an operator; `mandatory` refuses a client without one.
#[derive(Debug)]
pub(crate) struct PeerClientVerifier {
    pub material: Arc<Material>,
    pub mandatory: bool,
}

impl ClientCertVerifier for PeerClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let cur = self.material.current();
        cur.client_verifier
            .verify_client_cert(end_entity, intermediates, now)?;
        Identity::from_cert(end_entity).map_err(other)?;
        Ok(ClientCertVerified::assertion())
    }

    provider_signatures!();
}

/// Verifies that the server is a node of this cluster: its certificate chains to the
/// current bundle and names node `expect` (any node when `None`, as for an operator
/// who dials an address).
#[derive(Debug)]
pub(crate) struct NodeServerVerifier {
    pub material: Arc<Material>,
    pub expect: Option<u64>,
}

impl ServerCertVerifier for NodeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let id = Identity::from_cert(end_entity).map_err(other)?;
        match (&id, self.expect) {
            (Identity::Node(n), Some(e)) if *n != e => {
                return Err(other(format!(
                    "the server's certificate is for node {n}, expected node {e}"
                )));
            }
            (Identity::Node(_), _) => {}
            (Identity::Operator(_), _) => {
                return Err(other("the server presented an operator certificate".into()));
            }
        }
        let name = ServerName::try_from(id.dns_name()).map_err(|e| other(e.to_string()))?;
        self.material.current().server_verifier.verify_server_cert(
            end_entity,
            intermediates,
            &name,
            ocsp,
            now,
        )
    }

    provider_signatures!();
}
