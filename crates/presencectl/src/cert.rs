//! `presencectl cert`: the cluster CA and the certificates it issues. These commands
//! only read and write files (the CA stays on the operator's machine, never on the
//! nodes); docs/tls.md has the steps for a new cluster, a new node and a rotation.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use presenced_tls::{Identity, pki};
use serde_json::json;

use crate::client::CliError;
use crate::output::Report;

#[derive(Subcommand, Debug)]
pub enum CertCmd {
    /// Create a new cluster CA (ca.pem, ca.key) in an empty directory
    InitCa {
        /// Where to put it (keep ca.key safe and off the nodes)
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// A name for the cluster, shown in the CA's subject
        #[arg(long, default_value = "presenced")]
        cluster: String,
        #[arg(long, default_value_t = pki::CA_DAYS)]
        days: u32,
    },
    /// Issue a node certificate (node.pem, node.key, ca.pem) or, with --operator, an
    /// operator certificate (operator.pem, operator.key, ca.pem)
    Issue(IssueArgs),
    /// Show whom a certificate names, who issued it and until when it is valid
    Show {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

#[derive(Args, Debug)]
pub struct IssueArgs {
    /// The node_id the certificate is for
    #[arg(
        id = "node_id",
        value_name = "ID",
        required_unless_present = "operator",
        conflicts_with = "operator"
    )]
    node: Option<u64>,
    /// Issue an operator certificate for NAME instead (a-z, 0-9, '-')
    #[arg(long, value_name = "NAME")]
    operator: Option<String>,
    /// The CA directory (from `cert init-ca`)
    #[arg(long, value_name = "DIR")]
    ca_dir: PathBuf,
    /// Where to write the files (created if missing)
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Addresses the node is reached at (IP or DNS name; repeat), added to the certificate
    #[arg(long = "addr", value_name = "HOST")]
    addrs: Vec<String>,
    /// The trust bundle to write as ca.pem [default: the CA's own ca.pem]; while a CA is
    /// rolled this is the old and the new CA concatenated
    #[arg(long, value_name = "FILE")]
    trust: Option<PathBuf>,
    #[arg(long, default_value_t = pki::CERT_DAYS)]
    days: u32,
}

pub fn run(cmd: CertCmd) -> Result<Report, CliError> {
    match cmd {
        CertCmd::InitCa { dir, cluster, days } => {
            let ca = pki::init_ca(&dir, &cluster, days).map_err(CliError::invalid)?;
            Ok(Report::ok(
                json!({"ca_cert": ca, "ca_key": dir.join(pki::CA_KEY), "days": days}),
                format!(
                    "created the cluster CA {} (key {}, mode 0600: keep it off the nodes)",
                    ca.display(),
                    dir.join(pki::CA_KEY).display()
                ),
            ))
        }
        CertCmd::Issue(a) => issue(a),
        CertCmd::Show { file } => show(&file),
    }
}

fn issue(a: IssueArgs) -> Result<Report, CliError> {
    let (who, stem) = match (&a.operator, a.node) {
        (Some(name), _) => {
            presenced_tls::check_operator_name(name).map_err(CliError::invalid)?;
            (Identity::Operator(name.clone()), "operator")
        }
        (None, Some(0)) => return Err(CliError::invalid("node ids start at 1")),
        (None, Some(id)) => (Identity::Node(id), "node"),
        (None, None) => return Err(CliError::invalid("give a node id or --operator NAME")),
    };
    let trust_file = a.trust.unwrap_or_else(|| a.ca_dir.join(pki::CA_CERT));
    let trust = std::fs::read_to_string(&trust_file).map_err(|e| {
        CliError::invalid(format!(
            "cannot read the trust bundle {}: {e}",
            trust_file.display()
        ))
    })?;
    let issued = pki::issue(&a.ca_dir, &who, &a.addrs, a.days).map_err(CliError::invalid)?;
    pki::write_issued(&a.out, stem, &issued, Some(&trust)).map_err(CliError::invalid)?;
    let cert = a.out.join(format!("{stem}.pem"));
    Ok(Report::ok(
        json!({
            "identity": who.to_string(),
            "cert": cert,
            "key": a.out.join(format!("{stem}.key")),
            "trust": a.out.join(pki::CA_CERT),
            "days": a.days,
        }),
        format!(
            "issued a certificate for {who}: {} (key {}.key, trust bundle ca.pem, valid {} days)",
            cert.display(),
            stem,
            a.days
        ),
    ))
}

fn show(file: &std::path::Path) -> Result<Report, CliError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file)
        .and_then(|i| i.collect::<Result<_, _>>())
        .map_err(|e| CliError::invalid(format!("{}: {e}", file.display())))?;
    let mut rows = Vec::new();
    let mut human = Vec::new();
    for c in &certs {
        let (_, x) = x509_parser::parse_x509_certificate(c)
            .map_err(|e| CliError::invalid(format!("{}: {e}", file.display())))?;
        let who = Identity::from_cert(c).map_or_else(
            |_| {
                if x.is_ca() {
                    "CA".to_string()
                } else {
                    "-".to_string()
                }
            },
            |i| i.to_string(),
        );
        let not_after = x.validity().not_after.to_datetime();
        let left = (not_after.unix_timestamp() - time_now()) / 86_400;
        rows.push(json!({
            "identity": who,
            "subject": x.subject().to_string(),
            "issuer": x.issuer().to_string(),
            "not_after": not_after.unix_timestamp(),
            "days_left": left,
        }));
        human.push(format!(
            "{who}: subject {}, issuer {}, expires in {left} days",
            x.subject(),
            x.issuer()
        ));
    }
    Ok(Report::ok(json!({"certificates": rows}), human.join("\n")))
}

fn time_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
