//! How presencectl secures its connection: TLS by default, verifying that the server
//! holds a node certificate of the cluster CA; an operator certificate (`presencectl
//! cert issue --operator NAME`) authenticates without the secret. `--plaintext` is
//! only for a cluster whose nodes run `cluster_tls.mode = "plaintext"`.

use std::path::{Path, PathBuf};

use presenced_tls::{Material, Paths, Transport};

use super::CliError;

/// The TLS flags (clap has folded `PRESENCECTL_CA`, `PRESENCECTL_CERT` and
/// `PRESENCECTL_KEY` into them).
#[derive(Debug, Default, Clone)]
pub struct TlsFlags {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub plaintext: bool,
}

impl TlsFlags {
    /// Whether an operator certificate will authenticate us (the secret is then optional).
    pub fn has_cert(&self) -> bool {
        self.cert.is_some()
    }
}

fn empty_is_none(p: &Option<PathBuf>) -> Option<&Path> {
    p.as_deref().filter(|p| !p.as_os_str().is_empty())
}

/// The trust bundle named by a node config's `[cluster_tls]`, or `None` when that
/// node runs in plain text.
fn config_ca(config: &Path) -> Result<Option<PathBuf>, CliError> {
    let text = std::fs::read_to_string(config)
        .map_err(|e| CliError::invalid(format!("cannot read config {}: {e}", config.display())))?;
    let t: toml::Table = toml::from_str(&text)
        .map_err(|e| CliError::invalid(format!("config {}: {}", config.display(), e.message())))?;
    let tls = t.get("cluster_tls").and_then(toml::Value::as_table);
    let get = |k: &str| tls.and_then(|t| t.get(k)).and_then(toml::Value::as_str);
    if get("mode") == Some("plaintext") {
        return Ok(None);
    }
    let base = config.parent().unwrap_or(Path::new("."));
    let ca = match (get("ca_file"), get("dir")) {
        (Some(f), _) => PathBuf::from(f),
        (None, d) => PathBuf::from(d.unwrap_or("cluster-tls")).join(presenced_tls::pki::CA_CERT),
    };
    Ok(Some(if ca.is_relative() { base.join(ca) } else { ca }))
}

pub fn resolve_tls(flags: &TlsFlags, config: Option<&Path>) -> Result<Transport, CliError> {
    if flags.plaintext {
        return Ok(Transport::Plaintext);
    }
    let ca = match (empty_is_none(&flags.ca), config) {
        (Some(ca), _) => ca.to_path_buf(),
        (None, Some(cfg)) => match config_ca(cfg)? {
            Some(ca) => ca,
            None => return Ok(Transport::Plaintext),
        },
        (None, None) => {
            return Err(CliError::invalid(
                "no CA certificate to verify the node with: pass --ca FILE (PRESENCECTL_CA) or \
                 --config NODE.toml (--plaintext only for a cluster running cluster_tls.mode = \"plaintext\")",
            ));
        }
    };
    let cert = match (empty_is_none(&flags.cert), empty_is_none(&flags.key)) {
        (Some(c), Some(k)) => Some((c.to_path_buf(), k.to_path_buf())),
        (None, None) => None,
        _ => {
            return Err(CliError::invalid(
                "--cert and --key (PRESENCECTL_CERT, PRESENCECTL_KEY): give both or neither",
            ));
        }
    };
    Material::load(Paths { ca, cert })
        .map(Transport::Mutual)
        .map_err(|e| CliError::invalid(format!("TLS: {e}")))
}
