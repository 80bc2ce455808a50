//! The test cluster's PKI: a CA made for each cluster, a certificate per node (issued
//! when first asked for), and the presencectl arguments that trust it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use presenced_tls::{Identity, Material, Paths, Transport, pki};

use crate::Out;

#[derive(Clone, Debug)]
pub struct Pki {
    pub root: PathBuf,
}

impl Pki {
    pub fn create(root: &Path) -> Pki {
        pki::init_ca(&root.join("ca"), crate::DOMAIN, 30).expect("test CA");
        Pki {
            root: root.to_path_buf(),
        }
    }

    pub fn ca_dir(&self) -> PathBuf {
        self.root.join("ca")
    }

    /// The trust bundle every node and presencectl use.
    pub fn ca_file(&self) -> PathBuf {
        self.ca_dir().join(pki::CA_CERT)
    }

    /// `node.pem`, `node.key` and `ca.pem` of node `id` (issued on first use).
    pub fn node_dir(&self, id: u64) -> PathBuf {
        let d = self.root.join(format!("node{id}"));
        if !d.join(pki::NODE_CERT).exists() {
            self.issue(&Identity::Node(id), &d, "node");
        }
        d
    }

    /// An operator certificate (`operator.pem`, `operator.key`, `ca.pem`).
    pub fn operator_dir(&self, name: &str) -> PathBuf {
        let d = self.root.join(format!("operator-{name}"));
        if !d.join(pki::OPERATOR_CERT).exists() {
            self.issue(&Identity::Operator(name.into()), &d, "operator");
        }
        d
    }

    fn issue(&self, who: &Identity, dir: &Path, stem: &str) {
        let i = pki::issue(&self.ca_dir(), who, &["127.0.0.1".into()], 30).expect("issue");
        let trust = std::fs::read_to_string(self.ca_file()).expect("CA file");
        pki::write_issued(dir, stem, &i, Some(&trust)).expect("write certificate");
    }

    /// Act as node `id` of this cluster (a test that speaks the inter-node protocols).
    pub fn transport(&self, id: u64) -> Transport {
        let m = Material::load(Paths::in_dir(&self.node_dir(id), "node")).expect("material");
        Transport::Mutual(m)
    }
}

/// Runs the real presencectl against a test cluster; cheap to clone into threads.
#[derive(Clone, Debug)]
pub struct Ctl {
    pub bins: PathBuf,
    /// `--ca FILE`, or `--plaintext` for a plain-text cluster.
    pub tls_args: Vec<String>,
}

impl Ctl {
    pub fn run(&self, addr: &str, secret: &str, args: &[&str]) -> Out {
        let o = Command::new(self.bins.join("presencectl"))
            .arg("--node")
            .arg(addr)
            .arg("--secret")
            .arg(secret)
            .args(&self.tls_args)
            .args(args)
            .env_remove("PRESENCECTL_NODE")
            .env_remove("PRESENCED_SECRET")
            .env_remove("PRESENCECTL_CA")
            .env_remove("PRESENCECTL_CERT")
            .env_remove("PRESENCECTL_KEY")
            .env_remove("PRESENCECTL_PLAINTEXT")
            .stdin(Stdio::null())
            .output()
            .expect("run presencectl");
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// A current-thread runtime for a test's async calls.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// One NodeStatus call to node `i`'s cluster port as `t`, expecting node `expect`
/// there (with the secret): `Err` with the reason when the connection or the call is
/// refused.
pub async fn node_status(
    c: &crate::Cluster,
    i: usize,
    t: &Transport,
    expect: u64,
) -> Result<(), String> {
    use presenced_proto::raft::NodeStatusRequest;
    use presenced_proto::raft::cluster_client::ClusterClient;
    let ep = presenced_tls::endpoint(&c.nodes[i].cluster_addr()).expect("endpoint");
    let ch = t
        .connect(&ep, presenced_tls::Expect::Node(expect))
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let mut cl = ClusterClient::with_interceptor(ch, crate::with_secret);
    cl.node_status(NodeStatusRequest {})
        .await
        .map(|_| ())
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

/// The sum of the Prometheus samples of `name` that carry all of `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
