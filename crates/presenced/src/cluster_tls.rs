//! `[cluster_tls]`: how the node secures its links to the other nodes and the admin
//! API. Mutual TLS with certificates of the cluster CA unless the operator explicitly
//! chose plain text, which is warned about at every start.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use presenced_tls::{Identity, Material, Paths, Transport, pki};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// TLS 1.3 both ways with certificates of the cluster CA.
    #[default]
    Mutual,
    /// No TLS: availability, messages and the secret cross the network in clear.
    Plaintext,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterTls {
    pub mode: Mode,
    /// Holds `ca.pem` (the trust bundle), `node.pem` and `node.key`. Relative paths
    /// are relative to the config file; the default is `cluster-tls` beside it.
    pub dir: PathBuf,
    /// Override one file of `dir`.
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// For a single-node or development setup only: when `dir` holds no material at
    /// first start, create a CA in `<dir>/ca/`, this node's certificate and an
    /// operator certificate `admin`. A real cluster keeps its CA off the nodes.
    pub generate: bool,
    /// Check the files for changes this often (SIGHUP reloads at once).
    pub reload_secs: u64,
}

impl Default for ClusterTls {
    fn default() -> Self {
        ClusterTls {
            mode: Mode::Mutual,
            dir: PathBuf::from("cluster-tls"),
            ca_file: None,
            cert_file: None,
            key_file: None,
            generate: false,
            reload_secs: 10,
        }
    }
}

impl ClusterTls {
    /// Make relative paths relative to the config file's directory.
    pub fn rebase(&mut self, base: &Path) {
        for p in [Some(&mut self.dir)]
            .into_iter()
            .chain([&mut self.ca_file, &mut self.cert_file, &mut self.key_file].map(Option::as_mut))
            .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.reload_secs == 0 {
            return Err("cluster_tls.reload_secs: must be 1 or more".into());
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(
                "cluster_tls.cert_file and cluster_tls.key_file: set both or neither".into(),
            );
        }
        Ok(())
    }

    pub fn paths(&self) -> Paths {
        let dir = Paths::in_dir(&self.dir, "node");
        let (cert, key) = dir.cert.expect("in_dir sets a certificate");
        Paths {
            ca: self.ca_file.clone().unwrap_or(dir.ca),
            cert: Some((
                self.cert_file.clone().unwrap_or(cert),
                self.key_file.clone().unwrap_or(key),
            )),
        }
    }

    /// Load the material (generating it first where allowed) and start watching it.
    pub fn transport(
        &self,
        node_id: u64,
        domain: &str,
        advertise: &str,
    ) -> anyhow::Result<Transport> {
        if self.mode == Mode::Plaintext {
            tracing::warn!(
                "cluster_tls.mode = \"plaintext\": Raft, peer links and the admin API run WITHOUT TLS; \
                 availability, messages and the cluster secret cross the network in clear"
            );
            return Ok(Transport::Plaintext);
        }
        let paths = self.paths();
        if self.generate && !paths.ca.exists() {
            self.generate_material(node_id, domain, advertise)?;
        }
        let material = Material::load(paths.clone()).map_err(|e| {
            anyhow::anyhow!(
                "cluster TLS: {e}\n  create the material with `presencectl cert init-ca` and \
                 `presencectl cert issue {node_id}` (docs/tls.md), or set cluster_tls.generate = true \
                 for a single-node setup"
            )
        })?;
        match material.identity() {
            Some(Identity::Node(n)) if n == node_id => {}
            other => anyhow::bail!(
                "cluster TLS: {} names {} but this is node {node_id}",
                paths
                    .cert
                    .as_ref()
                    .map_or(PathBuf::new(), |c| c.0.clone())
                    .display(),
                other.map_or("nobody".into(), |i| i.to_string())
            ),
        }
        let cur = material.current();
        tracing::info!(
            ca = %paths.ca.display(),
            cas = cur.trusted_cas,
            not_after = cur.not_after,
            "cluster TLS: mutual, as node {node_id}"
        );
        presenced_tls::spawn_reloader(material.clone(), Duration::from_secs(self.reload_secs));
        Ok(Transport::Mutual(material))
    }

    fn generate_material(&self, node_id: u64, domain: &str, advertise: &str) -> anyhow::Result<()> {
        let ca_dir = self.dir.join("ca");
        let fail = |e: String| anyhow::anyhow!("cluster_tls.generate: {e}");
        if !ca_dir.join(pki::CA_KEY).exists() {
            pki::init_ca(&ca_dir, domain, pki::CA_DAYS).map_err(fail)?;
        }
        let trust = std::fs::read_to_string(ca_dir.join(pki::CA_CERT))
            .with_context(|| format!("reading {}", ca_dir.display()))?;
        let host = advertise.rsplit_once(':').map_or(advertise, |(h, _)| h);
        let names = [host.trim_matches(['[', ']']).to_string()];
        let node =
            pki::issue(&ca_dir, &Identity::Node(node_id), &names, pki::CERT_DAYS).map_err(fail)?;
        pki::write_issued(&self.dir, "node", &node, Some(&trust)).map_err(fail)?;
        let op = pki::issue(
            &ca_dir,
            &Identity::Operator("admin".into()),
            &[],
            pki::CERT_DAYS,
        )
        .map_err(fail)?;
        pki::write_issued(&self.dir, "operator", &op, None).map_err(fail)?;
        tracing::warn!(
            dir = %self.dir.display(),
            "cluster_tls.generate: created a cluster CA, this node's certificate and an operator \
             certificate; fine for one node, but a real cluster keeps its CA off the nodes"
        );
        Ok(())
    }
}
