//! `user import`: a CSV of `user[,password]` rows, checked whole in a first streaming
//! pass, then sent in file order, `CHUNK` accounts per UserImport call. Rows without a
//! password get a generated one, which is written (only for the accounts actually
//! created) to the --passwords-out file and never to the terminal.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};

use presenced_model::credentials::generate_password;
use presenced_proto::admin::{UserImportEntry, UserImportRequest};
use serde_json::json;

use super::rows::Rows;
use super::{Input, Outcome, Sending, Stop, next_to_send, progress_bar, with_retry};
use crate::client::{CliError, Conn, EXIT_UNAVAILABLE};

/// Accounts per UserImport call by default.
pub const CHUNK: usize = 1_000;
/// The most accounts one UserImport call may carry.
pub const CHUNK_MAX: usize = 2_000;
/// Longest password the server accepts.
const PASSWORD_MAX: usize = 1024;

/// One row: a user name (spaces around it dropped) and its password, verbatim, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub name: String,
    pub password: Option<String>,
}

/// The rows of a user CSV, one at a time.
pub struct UserRows<R: Read> {
    rows: Rows<R>,
}

impl<R: Read> UserRows<R> {
    pub fn new(reader: R, source: &str) -> Self {
        UserRows {
            rows: Rows::new(reader, source, "user", false),
        }
    }

    /// The next row, or `None` at the end. A bad row is an error naming its line.
    pub fn next_user(&mut self) -> Result<Option<UserRow>, CliError> {
        let Some(line) = self.rows.next_row()? else {
            return Ok(None);
        };
        let rows = &self.rows;
        let n = rows.record().len();
        if n > 2 {
            return Err(rows.bad(
                line,
                &format!(
                    "expected user[,password] but found {n} fields (quote passwords containing commas)"
                ),
            ));
        }
        let name = rows.field(0).trim();
        if name.is_empty() {
            return Err(rows.bad(line, "empty user field"));
        }
        let password = rows.field(1);
        if password.len() > PASSWORD_MAX {
            return Err(rows.bad(line, &format!("password longer than {PASSWORD_MAX} bytes")));
        }
        Ok(Some(UserRow {
            name: name.to_string(),
            password: (!password.is_empty()).then(|| password.to_string()),
        }))
    }
}

/// Every row of `data` (for tests; imports stream).
#[cfg(test)]
pub fn parse(data: &[u8], source: &str) -> Result<Vec<UserRow>, CliError> {
    let mut rows = UserRows::new(data, source);
    let mut out = Vec::new();
    while let Some(u) = rows.next_user()? {
        out.push(u);
    }
    Ok(out)
}

/// What the checking pass found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Checked {
    pub rows: u64,
    /// Rows without a password.
    pub to_generate: u64,
}

/// First pass: check every row, and that generated passwords have somewhere to go.
pub fn check(input: &mut Input, passwords_out: Option<&Path>) -> Result<Checked, CliError> {
    let source = input.name().to_string();
    let mut rows = UserRows::new(input.first_pass()?, &source);
    let mut c = Checked::default();
    while let Some(u) = rows.next_user()? {
        c.rows += 1;
        c.to_generate += u64::from(u.password.is_none());
    }
    if c.to_generate > 0 && passwords_out.is_none() {
        return Err(CliError::invalid(format!(
            "{source}: {} of {} rows have no password; pass --passwords-out FILE to receive \
             the generated ones (they are never printed)",
            c.to_generate, c.rows
        )));
    }
    Ok(c)
}

/// Where generated passwords go: a CSV file of `user,password` lines, created with mode
/// 0600 (with a header), or appended to when it exists already (so that a re-run can
/// complete an interrupted import) provided only its owner can read it.
pub struct PasswordsOut {
    path: PathBuf,
    w: csv::Writer<File>,
    pub written: u64,
}

impl PasswordsOut {
    pub fn open(path: &Path) -> Result<Self, CliError> {
        let shown = path.display();
        let fail = |e: std::io::Error| CliError::invalid(format!("cannot write {shown}: {e}"));
        let mut new = OpenOptions::new();
        new.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut new, 0o600);
        let (file, fresh) = match new.open(path) {
            Ok(f) => (f, true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let meta = std::fs::metadata(path).map_err(fail)?;
                if !meta.is_file() {
                    return Err(CliError::invalid(format!("{shown} is not a regular file")));
                }
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = meta.permissions().mode() & 0o777;
                    if mode & 0o077 != 0 {
                        return Err(CliError::invalid(format!(
                            "{shown} exists and others may read it (mode {mode:o}); \
                             refusing to add passwords to it (chmod 600 it, or name a new file)"
                        )));
                    }
                }
                let f = OpenOptions::new().append(true).open(path).map_err(fail)?;
                (f, meta.len() == 0)
            }
            Err(e) => return Err(fail(e)),
        };
        let mut w = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(file);
        if fresh {
            w.write_record(["user", "password"])
                .map_err(|e| CliError::invalid(format!("cannot write {shown}: {e}")))?;
        }
        Ok(PasswordsOut {
            path: path.to_path_buf(),
            w,
            written: 0,
        })
    }

    fn add(&mut self, user: &str, password: &str) -> Result<(), CliError> {
        self.w
            .write_record([user, password])
            .map_err(|e| self.error(&e))?;
        self.written += 1;
        Ok(())
    }

    /// Flush to the disk (after every call, before the next one goes out).
    fn sync(&mut self) -> Result<(), CliError> {
        self.w.flush().map_err(|e| self.error(&e))?;
        self.w.get_ref().sync_data().map_err(|e| self.error(&e))
    }

    fn error(&self, e: &dyn std::fmt::Display) -> CliError {
        CliError::new(
            crate::client::EXIT_FAILURE,
            "INTERNAL",
            format!("cannot write {}: {e}", self.path.display()),
        )
    }
}

/// One call's worth: the entries, and the generated password of each (if it was).
type Chunk = Vec<(UserImportEntry, Option<String>)>;

fn next_chunk<R: Read>(rows: &mut UserRows<R>, n: usize) -> Result<Chunk, CliError> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let Some(u) = rows.next_user()? else { break };
        let (password, generated) = match u.password {
            Some(p) => (p, None),
            None => {
                let p = generate_password();
                (p.clone(), Some(p))
            }
        };
        out.push((
            UserImportEntry {
                name: u.name,
                password,
            },
            generated,
        ));
    }
    Ok(out)
}

/// Second pass: send the accounts in file order, `how.chunk` per call, one call after the
/// other, writing the generated passwords of the created accounts after each call.
/// Stops at the first failing call (or at Ctrl-C, after the call in flight).
pub async fn run(
    conn: &Conn,
    input: &mut Input,
    checked: &Checked,
    mut passwords: Option<PasswordsOut>,
    how: Sending,
    outcome: &mut Outcome,
) -> Option<CliError> {
    outcome.total = checked.rows;
    let source = input.name().to_string();
    let reader = match input.second_pass() {
        Ok(r) => r,
        Err(e) => return Some(e),
    };
    let mut chunks = super::read_ahead(move || {
        let mut rows = UserRows::new(reader, &source);
        move || next_chunk(&mut rows, how.chunk)
    });
    let stop = Stop::on_ctrl_c();
    let bar = how.progress.then(|| progress_bar(checked.rows, "accounts"));
    let mut error = None;
    loop {
        let chunk = match next_to_send(&mut chunks, &stop).await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => {
                error = Some(e);
                break;
            }
        };
        let n = chunk.len() as u64;
        let (entries, generated): (Vec<_>, Vec<_>) = chunk.into_iter().unzip();
        let result = with_retry(bar.as_ref(), &stop, |retry| {
            let req = UserImportRequest {
                entries: entries.clone(),
                retry,
            };
            conn.change_within(how.timeout, |mut c| async move { c.user_import(req).await })
        })
        .await;
        match result {
            Ok(reply) => {
                outcome.sent += n;
                outcome.added += reply.added.len() as u64;
                if let Some(out) = passwords.as_mut() {
                    let written = reply.added.iter().try_for_each(|a| {
                        match generated.get(a.index as usize) {
                            Some(Some(p)) => out.add(&a.name, p),
                            _ => Ok(()),
                        }
                    });
                    if let Err(e) = written.and_then(|()| out.sync()) {
                        error = Some(e);
                        break;
                    }
                }
                for r in reply.refused {
                    outcome.refused.push(r);
                }
                if let Some(pb) = &bar {
                    pb.inc(n);
                }
            }
            Err(mut e) => {
                if e.exit == EXIT_UNAVAILABLE && generated.iter().any(Option::is_some) {
                    e.message.push_str(
                        "; if that call created accounts, their generated passwords are lost: a \
                         re-run reports them as user_exists, give them new ones with \
                         `presencectl user passwd`",
                    );
                }
                error = Some(e);
                break;
            }
        }
    }
    if let Some(pb) = bar {
        pb.finish_and_clear();
    }
    if let Some(out) = &passwords {
        outcome.extra.insert("generated".into(), json!(out.written));
        outcome.extra.insert(
            "passwords_out".into(),
            json!(out.path.display().to_string()),
        );
        outcome.notes.push(format!(
            "generated passwords of {} new accounts written to {}",
            out.written,
            out.path.display()
        ));
    }
    error.map(|mut e| {
        e.message = format!("{} ({})", e.message, outcome.so_far("rows"));
        e
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, password: Option<&str>) -> UserRow {
        UserRow {
            name: name.into(),
            password: password.map(Into::into),
        }
    }

    #[test]
    fn rows_with_and_without_passwords() {
        let csv = "# accounts\nuser,password\n\nalice,s3cret\n bob \ncarol,\n\"dave\",\"a, b\"\r\nerin, spaced \n";
        assert_eq!(
            parse(csv.as_bytes(), "u.csv").unwrap(),
            vec![
                row("alice", Some("s3cret")),
                row("bob", None),
                row("carol", None),
                row("dave", Some("a, b")),
                row("erin", Some(" spaced ")),
            ]
        );
        // A header only when first.
        assert_eq!(
            parse(b"alice\nuser,password\n", "f").unwrap(),
            vec![row("alice", None), row("user", Some("password"))]
        );
        assert!(parse(b"user\n", "f").unwrap().is_empty());
        assert!(parse(b"", "f").unwrap().is_empty());
    }

    #[test]
    fn bad_rows_name_their_line() {
        let e = parse(b"alice,a\n# c\n\nbob,b,extra\n", "u.csv").unwrap_err();
        assert_eq!(e.exit, 2);
        assert!(
            e.message
                .starts_with("u.csv line 4: expected user[,password] but found 3 fields"),
            "{}",
            e.message
        );
        let e = parse(b"alice\n  ,pw\n", "f").unwrap_err();
        assert_eq!(e.message, "f line 2: empty user field");
        let long = format!("alice\nbob,{}\n", "x".repeat(1025));
        let e = parse(long.as_bytes(), "f").unwrap_err();
        assert_eq!(e.message, "f line 2: password longer than 1024 bytes");
        let e = parse(b"alice\r\nbob,\xff\r\n", "f").unwrap_err();
        assert!(
            e.message.starts_with("f line 2: not valid UTF-8"),
            "{}",
            e.message
        );
    }

    #[test]
    fn chunks_generate_missing_passwords() {
        let csv: String = (0..1200)
            .map(|i| {
                if i % 2 == 0 {
                    format!("u{i}\n")
                } else {
                    format!("u{i},pw{i}\n")
                }
            })
            .collect();
        let mut rows = UserRows::new(csv.as_bytes(), "f");
        let mut sizes = Vec::new();
        let mut i = 0;
        loop {
            let c = next_chunk(&mut rows, CHUNK).unwrap();
            if c.is_empty() {
                break;
            }
            sizes.push(c.len());
            for (e, generated) in c {
                assert_eq!(e.name, format!("u{i}"));
                if i % 2 == 0 {
                    assert_eq!(generated.as_deref(), Some(e.password.as_str()));
                    assert!(e.password.len() >= 16);
                } else {
                    assert_eq!((e.password, generated), (format!("pw{i}"), None));
                }
                i += 1;
            }
        }
        assert_eq!(sizes, vec![1_000, 200]);
    }

    #[cfg(unix)]
    #[test]
    fn passwords_file_mode_and_append() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw.csv");
        let mut out = PasswordsOut::open(&p).unwrap();
        out.add("alice", "one").unwrap();
        out.sync().unwrap();
        drop(out);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mut out = PasswordsOut::open(&p).unwrap();
        out.add("bob", "two").unwrap();
        out.sync().unwrap();
        drop(out);
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "user,password\nalice,one\nbob,two\n"
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = PasswordsOut::open(&p).err().unwrap();
        assert!(e.message.contains("others may read it"), "{}", e.message);
    }
}
