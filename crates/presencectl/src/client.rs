//! Where to connect and with which secret, the connection itself, and the mapping of
//! every failure onto one operator-facing line and an exit code.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use presenced_proto::SECRET_HEADER;
use presenced_proto::admin::admin_client::AdminClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

/// The admin address used when neither `--node` nor `--config` names one.
pub const DEFAULT_NODE: &str = "127.0.0.1:7201";
/// How long to wait for the TCP/HTTP2 connection to a node.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_INVALID: u8 = 2;
pub const EXIT_NOT_FOUND: u8 = 3;
pub const EXIT_REFUSED: u8 = 4;
pub const EXIT_UNAVAILABLE: u8 = 5;
pub const EXIT_UNAUTHENTICATED: u8 = 6;

/// A failure, ready to be shown: one line of text, the gRPC code name it corresponds
/// to, and the process exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    pub exit: u8,
    pub code: &'static str,
    pub message: String,
}

impl CliError {
    pub fn new(exit: u8, code: &'static str, message: impl Into<String>) -> Self {
        CliError {
            exit,
            code,
            message: one_line(&message.into()),
        }
    }

    /// Bad input detected locally (exit 2).
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(EXIT_INVALID, "INVALID_ARGUMENT", message)
    }

    /// Something was refused by a limit or a rule (exit 4).
    pub fn refused(message: impl Into<String>) -> Self {
        Self::new(EXIT_REFUSED, "FAILED_PRECONDITION", message)
    }

    /// One refused roster entry, with the exit code its refusal code deserves: an
    /// unknown user is "not found" (3), a malformed name "bad input" (2), a limit or
    /// rule "refused" (4).
    pub fn refused_entry(refusal_code: &str, message: impl Into<String>) -> Self {
        match refusal_code {
            "unknown_user" | "unknown_contact" | "not_in_roster" => {
                Self::new(EXIT_NOT_FOUND, "NOT_FOUND", message)
            }
            "bad_value" | "self_contact" | "unknown_setting" => {
                Self::new(EXIT_INVALID, "INVALID_ARGUMENT", message)
            }
            _ => Self::refused(message),
        }
    }

    /// The node cannot be reached at all (exit 5).
    pub fn unreachable(node: &str, detail: impl fmt::Display) -> Self {
        Self::new(
            EXIT_UNAVAILABLE,
            "UNAVAILABLE",
            format!("cannot reach node {node}: {detail}"),
        )
    }

    /// A gRPC status returned by (or on the way to) `node`.
    pub fn from_status(status: &Status, node: &str) -> Self {
        let code = status.code();
        if code == Code::Unauthenticated {
            return Self::new(
                EXIT_UNAUTHENTICATED,
                code_name(code),
                format!("wrong cluster secret (node {node} refused it)"),
            );
        }
        // Statuses made up on the client side from a transport failure carry the
        // underlying error as their source; statuses sent by the server never do.
        let transport = std::error::Error::source(status).is_some();
        if transport && matches!(code, Code::Unavailable | Code::Unknown | Code::Cancelled) {
            let mut detail = status.message().to_string();
            if let Some(src) = std::error::Error::source(status) {
                let chain = error_chain(src);
                if !detail.contains(&chain) {
                    detail = if detail.is_empty() {
                        chain
                    } else {
                        format!("{detail}: {chain}")
                    };
                }
            }
            return Self::unreachable(node, detail);
        }
        let message = if status.message().trim().is_empty() {
            format!("node {node} answered {}", code_name(code))
        } else {
            status.message().to_string()
        };
        Self::new(exit_code(code), code_name(code), message)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The exit code for a gRPC status code.
pub fn exit_code(code: Code) -> u8 {
    match code {
        Code::InvalidArgument => EXIT_INVALID,
        Code::NotFound => EXIT_NOT_FOUND,
        Code::FailedPrecondition | Code::AlreadyExists => EXIT_REFUSED,
        Code::Unavailable | Code::DeadlineExceeded => EXIT_UNAVAILABLE,
        Code::Unauthenticated => EXIT_UNAUTHENTICATED,
        _ => EXIT_FAILURE,
    }
}

/// The canonical (upper snake case) name of a gRPC status code.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Collapse a possibly multi-line message onto one line.
fn one_line(s: &str) -> String {
    let parts: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    parts.join("; ")
}

/// "outer: inner: innermost", skipping links that repeat the previous one.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let s = err.to_string();
        if !s.is_empty() && parts.last().is_none_or(|p| !p.contains(&s)) {
            parts.push(s);
        }
        cur = err.source();
    }
    parts.join(": ")
}

/// The node to talk to and the secret to present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub node: String,
    pub secret: String,
}

/// Work out the target from the flags (clap has already folded the environment
/// variables `PRESENCECTL_NODE` and `PRESENCED_SECRET` into them) and, where they are
/// silent, from a presenced node config file.
pub fn resolve(
    node: Option<&str>,
    secret: Option<&str>,
    config: Option<&Path>,
) -> Result<Target, CliError> {
    let table = config.map(load_config).transpose()?;

    let node = match node.map(str::trim).filter(|s| !s.is_empty()) {
        Some(n) => n.to_string(),
        None => match table.as_ref().and_then(config_admin) {
            Some(addr) => connectable(&addr),
            None => DEFAULT_NODE.to_string(),
        },
    };
    let node = check_node(&node)?;

    let secret = match secret.filter(|s| !s.is_empty()) {
        Some(s) => s.to_string(),
        None => {
            let from_config = match (&table, config) {
                (Some(t), Some(path)) => config_secret(t, path)?,
                _ => None,
            };
            from_config.ok_or_else(|| {
                CliError::invalid(
                    "no cluster secret: pass --secret, set PRESENCED_SECRET or --config FILE",
                )
            })?
        }
    };
    if !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(CliError::invalid(
            "the cluster secret must be printable ASCII without spaces",
        ));
    }
    Ok(Target { node, secret })
}

fn load_config(path: &Path) -> Result<toml::Table, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::invalid(format!("cannot read config {}: {e}", path.display())))?;
    toml::from_str::<toml::Table>(&text).map_err(|e| {
        let line = e.span().map(|r| {
            text.as_bytes()[..r.start.min(text.len())]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1
        });
        let at = line.map(|l| format!(" line {l}")).unwrap_or_default();
        CliError::invalid(format!("config {}{at}: {}", path.display(), e.message()))
    })
}

/// `[listen] admin = "host:port"`.
fn config_admin(t: &toml::Table) -> Option<String> {
    let admin = t.get("listen")?.as_table()?.get("admin")?.as_str()?.trim();
    (!admin.is_empty()).then(|| admin.to_string())
}

/// `secret = "..."`, else the trimmed content of `secret_file` (relative to the
/// config file's directory, as presenced itself resolves it).
fn config_secret(t: &toml::Table, path: &Path) -> Result<Option<String>, CliError> {
    if let Some(s) = t
        .get("secret")
        .and_then(toml::Value::as_str)
        .filter(|s| !s.is_empty())
    {
        return Ok(Some(s.to_string()));
    }
    let Some(file) = t
        .get("secret_file")
        .and_then(toml::Value::as_str)
        .filter(|s| !s.is_empty())
    else {
        return Ok(None);
    };
    let file = Path::new(file);
    let file = if file.is_relative() {
        path.parent().unwrap_or(Path::new(".")).join(file)
    } else {
        file.to_path_buf()
    };
    let s = std::fs::read_to_string(&file).map_err(|e| {
        CliError::invalid(format!(
            "config {}: cannot read secret_file {}: {e}",
            path.display(),
            file.display()
        ))
    })?;
    let s = s.trim();
    Ok((!s.is_empty()).then(|| s.to_string()))
}

/// A node listening on the wildcard address is reached over loopback.
fn connectable(addr: &str) -> String {
    if let Some(port) = addr.strip_prefix("0.0.0.0:") {
        format!("127.0.0.1:{port}")
    } else if let Some(port) = addr.strip_prefix("[::]:") {
        format!("[::1]:{port}")
    } else {
        addr.to_string()
    }
}

/// Accept `HOST:PORT` (tolerating an `http://` prefix and a trailing `/`).
fn check_node(node: &str) -> Result<String, CliError> {
    let n = node
        .strip_prefix("http://")
        .unwrap_or(node)
        .trim_end_matches('/');
    let bad = || CliError::invalid(format!("bad node address {node:?}: expected HOST:PORT"));
    let (host, port) = n.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || host.contains('/') || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(bad());
    }
    Ok(n.to_string())
}

/// Client side of the cluster secret: add it to every request.
#[derive(Clone)]
pub struct AddSecret(MetadataValue<Ascii>);

impl Interceptor for AddSecret {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        req.metadata_mut().insert(SECRET_HEADER, self.0.clone());
        Ok(req)
    }
}

pub type Admin = AdminClient<InterceptedService<Channel, AddSecret>>;

/// An open connection to one node's admin API.
pub struct Conn {
    client: Admin,
    node: String,
    timeout: Duration,
}

impl Conn {
    pub async fn connect(target: &Target, timeout: Duration) -> Result<Conn, CliError> {
        let node = target.node.clone();
        let secret: MetadataValue<Ascii> = target.secret.parse().map_err(|_| {
            CliError::invalid("the cluster secret must be printable ASCII without spaces")
        })?;
        let endpoint = Endpoint::from_shared(format!("http://{node}"))
            .map_err(|e| CliError::invalid(format!("bad node address {node:?}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        let channel = match tokio::time::timeout(
            CONNECT_TIMEOUT + Duration::from_millis(500),
            endpoint.connect(),
        )
        .await
        {
            Ok(Ok(ch)) => ch,
            Ok(Err(e)) => return Err(CliError::unreachable(&node, error_chain(&e))),
            Err(_) => return Err(CliError::unreachable(&node, "connection timed out")),
        };
        let client = AdminClient::with_interceptor(channel, AddSecret(secret))
            .max_decoding_message_size(presenced_proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(presenced_proto::MAX_MESSAGE_BYTES);
        Ok(Conn {
            client,
            node,
            timeout,
        })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// A read, with the default per-call timeout.
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T, CliError>
    where
        F: FnOnce(Admin) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.invoke(self.timeout, false, f).await
    }

    /// A change, with the default per-call timeout.
    pub async fn change<T, F, Fut>(&self, f: F) -> Result<T, CliError>
    where
        F: FnOnce(Admin) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.invoke(self.timeout, true, f).await
    }

    /// A change with an explicit timeout.
    pub async fn change_within<T, F, Fut>(&self, timeout: Duration, f: F) -> Result<T, CliError>
    where
        F: FnOnce(Admin) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.invoke(timeout, true, f).await
    }

    /// One RPC; `f` gets its own handle on the (shared) channel. When a change is cut
    /// off on the client side (timeout, lost connection) the message says that it may
    /// or may not have been applied.
    async fn invoke<T, F, Fut>(&self, timeout: Duration, change: bool, f: F) -> Result<T, CliError>
    where
        F: FnOnce(Admin) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let (mut err, cut_off) = match tokio::time::timeout(timeout, f(self.client.clone())).await {
            Ok(Ok(reply)) => return Ok(reply.into_inner()),
            Ok(Err(status)) => {
                let transport = std::error::Error::source(&status).is_some();
                (CliError::from_status(&status, &self.node), transport)
            }
            Err(_) => {
                let msg = format!(
                    "node {} did not answer within {}s",
                    self.node,
                    timeout.as_secs_f64()
                );
                (
                    CliError::new(EXIT_UNAVAILABLE, "DEADLINE_EXCEEDED", msg),
                    true,
                )
            }
        };
        if change && cut_off && err.exit == EXIT_UNAVAILABLE {
            err.message.push_str(UNKNOWN_OUTCOME);
        }
        Err(err)
    }
}

/// Appended when a change was cut off before its answer arrived.
pub const UNKNOWN_OUTCOME: &str = "; the change may or may not have been applied";

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let dir = std::env::temp_dir().join(format!(
                "presencectl-test-{tag}-{}-{nanos}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).expect("create temp dir");
            TempDir(dir)
        }

        fn write(&self, name: &str, content: &str) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, content).expect("write temp file");
            p
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const CONFIG: &str = r#"
node_id = 1
domain = "example.test"
secret = "config-secret-0123456789"
[listen]
cluster = "127.0.0.1:7101"
admin = "127.0.0.1:7301"
[raft]
heartbeat_ms = 100
"#;

    #[test]
    fn flag_secret_and_node_win_over_config() {
        let dir = TempDir::new("flag");
        let cfg = dir.write("node.toml", CONFIG);
        let t = resolve(Some("10.0.0.1:9000"), Some("flag-secret"), Some(&cfg)).unwrap();
        assert_eq!(
            t,
            Target {
                node: "10.0.0.1:9000".into(),
                secret: "flag-secret".into()
            }
        );
    }

    #[test]
    fn config_supplies_what_flags_do_not() {
        let dir = TempDir::new("cfg");
        let cfg = dir.write("node.toml", CONFIG);
        let t = resolve(None, None, Some(&cfg)).unwrap();
        assert_eq!(
            t,
            Target {
                node: "127.0.0.1:7301".into(),
                secret: "config-secret-0123456789".into()
            }
        );
        // Only the secret from the flag (or PRESENCED_SECRET, which clap folds into it).
        let t = resolve(None, Some("env-secret"), Some(&cfg)).unwrap();
        assert_eq!(
            t,
            Target {
                node: "127.0.0.1:7301".into(),
                secret: "env-secret".into()
            }
        );
        // An empty flag/env value counts as unset.
        let t = resolve(Some(""), Some(""), Some(&cfg)).unwrap();
        assert_eq!(t.secret, "config-secret-0123456789");
        assert_eq!(t.node, "127.0.0.1:7301");
    }

    #[test]
    fn secret_file_is_relative_to_the_config_and_trimmed() {
        let dir = TempDir::new("secretfile");
        dir.write("secret.txt", "  file-secret-abcdef\n\n");
        let cfg = dir.write(
            "node.toml",
            "secret_file = \"secret.txt\"\nunknown_key = [1, 2]\n",
        );
        let t = resolve(None, None, Some(&cfg)).unwrap();
        assert_eq!(
            t,
            Target {
                node: DEFAULT_NODE.into(),
                secret: "file-secret-abcdef".into()
            }
        );

        let abs = dir.0.join("secret.txt");
        let cfg = dir.write(
            "abs.toml",
            &format!("secret_file = {:?}\n", abs.display().to_string()),
        );
        assert_eq!(
            resolve(None, None, Some(&cfg)).unwrap().secret,
            "file-secret-abcdef"
        );
    }

    #[test]
    fn missing_secret_file_is_an_error_only_when_needed() {
        let dir = TempDir::new("nosecretfile");
        let cfg = dir.write("node.toml", "secret_file = \"nope.txt\"\n");
        let e = resolve(None, None, Some(&cfg)).unwrap_err();
        assert_eq!(e.exit, 2);
        assert!(e.message.contains("cannot read secret_file"), "{e}");
        assert_eq!(
            resolve(None, Some("s3cret"), Some(&cfg)).unwrap().secret,
            "s3cret"
        );
    }

    #[test]
    fn no_secret_anywhere() {
        let e = resolve(None, None, None).unwrap_err();
        assert_eq!(e.exit, 2);
        assert_eq!(
            e.message,
            "no cluster secret: pass --secret, set PRESENCED_SECRET or --config FILE"
        );
        let dir = TempDir::new("nosecret");
        let cfg = dir.write("node.toml", "[listen]\nadmin = \"127.0.0.1:7401\"\n");
        assert_eq!(resolve(None, None, Some(&cfg)).unwrap_err().exit, 2);
    }

    #[test]
    fn bad_config_files() {
        let dir = TempDir::new("badcfg");
        let e = resolve(None, Some("s"), Some(&dir.0.join("missing.toml"))).unwrap_err();
        assert_eq!(e.exit, 2);
        assert!(e.message.starts_with("cannot read config"), "{e}");
        let cfg = dir.write("broken.toml", "secret = \n");
        let e = resolve(None, Some("s"), Some(&cfg)).unwrap_err();
        assert_eq!(e.exit, 2);
        assert!(!e.message.contains('\n'));
    }

    #[test]
    fn node_defaults_and_wildcards() {
        assert_eq!(
            resolve(None, Some("s"), None).unwrap().node,
            "127.0.0.1:7201"
        );
        let dir = TempDir::new("wild");
        let cfg = dir.write(
            "node.toml",
            "secret = \"x\"\n[listen]\nadmin = \"0.0.0.0:7201\"\n",
        );
        assert_eq!(
            resolve(None, None, Some(&cfg)).unwrap().node,
            "127.0.0.1:7201"
        );
        let cfg = dir.write(
            "node6.toml",
            "secret = \"x\"\n[listen]\nadmin = \"[::]:7201\"\n",
        );
        assert_eq!(resolve(None, None, Some(&cfg)).unwrap().node, "[::1]:7201");
        assert_eq!(
            resolve(Some("http://h:1/"), Some("s"), None).unwrap().node,
            "h:1"
        );
        for bad in [
            "nohost",
            ":7201",
            "host:",
            "host:port",
            "host:0",
            "host:70000",
        ] {
            assert_eq!(
                resolve(Some(bad), Some("s"), None).unwrap_err().exit,
                2,
                "{bad}"
            );
        }
    }

    #[test]
    fn secret_must_be_printable_ascii() {
        assert_eq!(resolve(None, Some("with space"), None).unwrap_err().exit, 2);
        assert_eq!(resolve(None, Some("ünïcode"), None).unwrap_err().exit, 2);
    }

    #[test]
    fn status_codes_map_to_exit_codes() {
        let cases = [
            (Code::InvalidArgument, 2),
            (Code::NotFound, 3),
            (Code::FailedPrecondition, 4),
            (Code::AlreadyExists, 4),
            (Code::Unavailable, 5),
            (Code::DeadlineExceeded, 5),
            (Code::Unauthenticated, 6),
            (Code::Internal, 1),
            (Code::Unknown, 1),
            (Code::PermissionDenied, 1),
            (Code::Cancelled, 1),
        ];
        for (code, exit) in cases {
            assert_eq!(exit_code(code), exit, "{code:?}");
            let e = CliError::from_status(&Status::new(code, "the message"), "h:1");
            assert_eq!(e.exit, exit, "{code:?}");
            assert_eq!(e.code, code_name(code));
        }
    }

    #[test]
    fn status_messages() {
        let e = CliError::from_status(&Status::not_found("unknown user bob"), "h:1");
        assert_eq!(
            (e.exit, e.code, e.message.as_str()),
            (3, "NOT_FOUND", "unknown user bob")
        );
        let e = CliError::from_status(
            &Status::unauthenticated("wrong or missing cluster secret"),
            "h:1",
        );
        assert_eq!(e.message, "wrong cluster secret (node h:1 refused it)");
        let e = CliError::from_status(&Status::unavailable("no leader\nretry later"), "h:1");
        assert_eq!((e.exit, e.message.as_str()), (5, "no leader; retry later"));
        let e = CliError::from_status(&Status::internal(""), "h:1");
        assert_eq!(
            (e.exit, e.message.as_str()),
            (1, "node h:1 answered INTERNAL")
        );
    }

    #[test]
    fn transport_failures_name_the_node() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let mut st = Status::unavailable("transport error");
        st.set_source(std::sync::Arc::new(io));
        let e = CliError::from_status(&st, "h:1");
        assert_eq!(e.exit, 5);
        assert_eq!(
            e.message,
            "cannot reach node h:1: transport error: connection refused"
        );
    }
}
