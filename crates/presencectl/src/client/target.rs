//! Where to connect and with which secret: flags, environment and a node config file.

use std::path::Path;

use super::CliError;

/// The admin address used when neither `--node` nor `--config` names one.
pub const DEFAULT_NODE: &str = "127.0.0.1:7201";

/// The node to talk to and the secret to present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub node: String,
    pub secret: String,
}

/// Work out the target from the flags (clap has already folded the environment
/// variables `PRESENCECTL_NODE` and `PRESENCED_SECRET` into them) and, where they are
/// silent, from a presenced node config file.
#[cfg(test)]
pub fn resolve(
    node: Option<&str>,
    secret: Option<&str>,
    config: Option<&Path>,
) -> Result<Target, CliError> {
    resolve_with(node, secret, config, false)
}

/// As [`resolve`]; with `secret_optional` (an operator certificate authenticates) a
/// missing secret is left empty instead of being an error.
pub fn resolve_with(
    node: Option<&str>,
    secret: Option<&str>,
    config: Option<&Path>,
    secret_optional: bool,
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
            if secret_optional && from_config.is_none() {
                return Ok(Target {
                    node,
                    secret: String::new(),
                });
            }
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
}
