//! The cluster's certificate authority and the certificates it issues, as PEM files.
//!
//! The CA lives in a directory of its own (`ca.pem`, `ca.key`), kept by the operator
//! off the nodes; `presencectl cert issue` signs a node's or an operator's certificate
//! with it. A node directory holds `node.pem`, `node.key` and `ca.pem` (the trust
//! bundle: one CA, or the old and the new one while a CA is rolled).

use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::Identity;

pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key";
pub const NODE_CERT: &str = "node.pem";
pub const NODE_KEY: &str = "node.key";
pub const OPERATOR_CERT: &str = "operator.pem";
pub const OPERATOR_KEY: &str = "operator.key";

/// Validity defaults, in days.
pub const CA_DAYS: u32 = 3650;
pub const CERT_DAYS: u32 = 365;

/// A freshly issued certificate (the leaf only) and its private key, both PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

fn serial() -> SerialNumber {
    let mut b: [u8; 16] = rand::random();
    b[0] &= 0x7f; // positive, as RFC 5280 requires
    SerialNumber::from_slice(&b)
}

fn validity(p: &mut CertificateParams, days: u32) {
    let now = OffsetDateTime::now_utc();
    // A little slack for clocks that disagree by a few minutes.
    p.not_before = now - Duration::hours(1);
    p.not_after = now + Duration::days(i64::from(days.max(1)));
}

/// Create a new CA in `dir` (created if missing). Refuses to overwrite an existing
/// CA key: losing it means re-issuing every certificate of the cluster.
pub fn init_ca(dir: &Path, cluster: &str, days: u32) -> Result<PathBuf, String> {
    let key_path = dir.join(CA_KEY);
    if key_path.exists() {
        return Err(format!(
            "{} already exists: a CA is never overwritten (pick another directory to roll the CA)",
            key_path.display()
        ));
    }
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "presenced");
    dn.push(
        DnType::CommonName,
        format!("presenced cluster CA {cluster}"),
    );
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.serial_number = Some(serial());
    validity(&mut p, days);
    let key = KeyPair::generate().map_err(|e| format!("generating the CA key: {e}"))?;
    let cert = p
        .self_signed(&key)
        .map_err(|e| format!("signing the CA certificate: {e}"))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    write_file(&key_path, key.serialize_pem().as_bytes(), true)?;
    write_file(&dir.join(CA_CERT), cert.pem().as_bytes(), false)?;
    Ok(dir.join(CA_CERT))
}

/// Sign a certificate for `who` with the CA in `ca_dir`. `extra_names` are addresses
/// (IP or DNS) the holder is reached at; they identify nothing but let generic tools
/// verify the node by address.
pub fn issue(
    ca_dir: &Path,
    who: &Identity,
    extra_names: &[String],
    days: u32,
) -> Result<Issued, String> {
    let now = OffsetDateTime::now_utc();
    let until = now + Duration::days(i64::from(days.max(1)));
    issue_between(
        ca_dir,
        who,
        extra_names,
        (now - Duration::hours(1)).unix_timestamp(),
        until.unix_timestamp(),
    )
}

/// As [`issue`], valid between two Unix times (tests use it for expired and
/// not-yet-valid certificates).
pub fn issue_between(
    ca_dir: &Path,
    who: &Identity,
    extra_names: &[String],
    not_before: i64,
    not_after: i64,
) -> Result<Issued, String> {
    let read = |name: &str| {
        let p = ca_dir.join(name);
        std::fs::read_to_string(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    let ca_pem = read(CA_CERT)?;
    let ca_key =
        KeyPair::from_pem(&read(CA_KEY)?).map_err(|e| format!("{CA_KEY}: bad key: {e}"))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)
        .map_err(|e| format!("{CA_CERT}: not a usable CA certificate: {e}"))?;

    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "presenced");
    dn.push(DnType::CommonName, who.to_string());
    p.distinguished_name = dn;
    let mut sans = vec![dns(&who.dns_name())?];
    for n in extra_names {
        let n = n.trim();
        if n.is_empty() {
            continue;
        }
        sans.push(match n.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => dns(n)?,
        });
    }
    p.subject_alt_names = sans;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = match who {
        Identity::Node(_) => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        // An operator certificate can never act as a node's server certificate.
        Identity::Operator(_) => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    p.use_authority_key_identifier_extension = true;
    p.serial_number = Some(serial());
    let at = |t: i64| OffsetDateTime::from_unix_timestamp(t).map_err(|e| format!("validity: {e}"));
    p.not_before = at(not_before)?;
    p.not_after = at(not_after)?;
    let key = KeyPair::generate().map_err(|e| format!("generating a key: {e}"))?;
    let cert = p
        .signed_by(&key, &issuer)
        .map_err(|e| format!("signing the certificate: {e}"))?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn dns(name: &str) -> Result<SanType, String> {
    name.to_string()
        .try_into()
        .map(SanType::DnsName)
        .map_err(|_| format!("{name:?} is not a valid DNS name or IP address"))
}

/// Write an issued pair as `<stem>.pem` and `<stem>.key` (mode 0600) into `out`, and
/// `ca.pem` beside them unless `trust` is `None`. Each file is replaced atomically,
/// the key before the certificate, so a running node that reloads in between sees a
/// mismatched pair, refuses it and keeps what it had until the next reload.
pub fn write_issued(
    out: &Path,
    stem: &str,
    issued: &Issued,
    trust: Option<&str>,
) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("creating {}: {e}", out.display()))?;
    write_file(
        &out.join(format!("{stem}.key")),
        issued.key_pem.as_bytes(),
        true,
    )?;
    write_file(
        &out.join(format!("{stem}.pem")),
        issued.cert_pem.as_bytes(),
        false,
    )?;
    if let Some(t) = trust {
        write_file(&out.join(CA_CERT), t.as_bytes(), false)?;
    }
    Ok(())
}

/// Write through a temporary file and rename, so readers never see half a file.
pub fn write_file(path: &Path, data: &[u8], private: bool) -> Result<(), String> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let res = (|| {
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            o.mode(if private { 0o600 } else { 0o644 });
        }
        let mut f = o.open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    res.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("writing {}: {e}", path.display())
    })
}

/// Seconds since the Unix epoch at which a certificate stops being valid.
pub fn not_after(der: &[u8]) -> Result<i64, String> {
    let (_, c) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("unreadable certificate: {e}"))?;
    Ok(c.validity().not_after.timestamp())
}
