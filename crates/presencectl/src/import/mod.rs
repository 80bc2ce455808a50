//! Bulk imports (`roster import`, `user import`): what they share. Both read their CSV
//! twice, streaming: a first pass checks every row (nothing is sent if one is bad, and
//! the error names its line), a second pass sends the rows in file order, in chunks,
//! one call at a time. Memory stays bounded whatever the file's size: a chunk or two of
//! rows, and per refusal code a count and a few examples.

pub mod roster;
mod rows;
pub mod users;

use std::fmt::Write as _;
use std::fs::File;
use std::future::Future;
use std::io::{BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use presenced_proto::admin::Refused;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use crate::client::{CliError, EXIT_UNAVAILABLE};
use crate::output::refused_json;

/// Examples shown per refusal code in the summary.
const EXAMPLES: usize = 3;
/// With --json, refusals listed one by one (the rest are only counted, by code).
pub const JSON_LIST_MAX: usize = 10_000;
/// Exit code after Ctrl-C.
const EXIT_INTERRUPTED: u8 = 130;
/// How long one chunk is retried while the node or the cluster is unavailable.
const RETRY_FOR: Duration = Duration::from_secs(60);
/// The longest pause between two tries.
const RETRY_PAUSE_MAX: Duration = Duration::from_secs(8);

/// How the sending pass goes.
#[derive(Debug, Clone, Copy)]
pub struct Sending {
    /// Rows per call.
    pub chunk: usize,
    /// Per-call timeout.
    pub timeout: std::time::Duration,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

/// The file to import, or stdin (`-`). Stdin is copied to an unlinked temporary file
/// during the first pass, so that the second pass can read it again.
pub struct Input {
    name: String,
    path: Option<PathBuf>,
    spool: Option<File>,
}

impl Input {
    pub fn new(file: &Path) -> Input {
        let stdin = file.as_os_str() == "-";
        Input {
            name: if stdin {
                "stdin".to_string()
            } else {
                file.display().to_string()
            },
            path: (!stdin).then(|| file.to_path_buf()),
            spool: None,
        }
    }

    /// How messages name the input.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn open(path: &Path) -> Result<File, CliError> {
        File::open(path)
            .map_err(|e| CliError::invalid(format!("cannot read {}: {e}", path.display())))
    }

    /// The bytes, for the checking pass.
    pub fn first_pass(&mut self) -> Result<Box<dyn Read>, CliError> {
        if let Some(path) = &self.path {
            return Ok(Box::new(Self::open(path)?));
        }
        let spool = tempfile::tempfile()
            .map_err(|e| CliError::invalid(format!("cannot buffer stdin: {e}")))?;
        let copy = spool
            .try_clone()
            .map_err(|e| CliError::invalid(format!("cannot buffer stdin: {e}")))?;
        self.spool = Some(spool);
        Ok(Box::new(Tee {
            from: std::io::stdin(),
            to: BufWriter::new(copy),
        }))
    }

    /// The same bytes again, for the sending pass.
    pub fn second_pass(&mut self) -> Result<Box<dyn Read + Send>, CliError> {
        if let Some(path) = &self.path {
            return Ok(Box::new(Self::open(path)?));
        }
        let again = |e: std::io::Error| CliError::invalid(format!("cannot reread stdin: {e}"));
        let mut f = self
            .spool
            .as_ref()
            .ok_or_else(|| again(std::io::Error::other("no first pass")))?
            .try_clone()
            .map_err(again)?;
        f.rewind().map_err(again)?;
        Ok(Box::new(f))
    }
}

/// Reads `from`, copying what it reads to `to`.
struct Tee<R, W: Write> {
    from: R,
    to: BufWriter<W>,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.from.read(buf)?;
        if n == 0 {
            self.to.flush()?;
        } else {
            self.to.write_all(&buf[..n])?;
        }
        Ok(n)
    }
}

/// Produce chunks on a thread of their own (parsing the next chunk while a call is in
/// flight), at most two ahead. `make` runs on that thread and returns the producer; an
/// empty chunk ends the input, an error ends it too (after being passed on).
/// The next chunk to send: `None` at the end of the file; an error for a bad read,
/// or once the operator pressed Ctrl-C (nothing more is sent).
pub async fn next_to_send<T>(
    chunks: &mut mpsc::Receiver<Result<Vec<T>, CliError>>,
    stop: &Stop,
) -> Result<Option<Vec<T>>, CliError> {
    let Some(chunk) = chunks.recv().await else {
        return Ok(None);
    };
    let chunk = chunk?;
    if stop.requested() {
        return Err(Stop::error());
    }
    Ok(Some(chunk))
}

pub fn read_ahead<T, P, F>(make: F) -> mpsc::Receiver<Result<Vec<T>, CliError>>
where
    T: Send + 'static,
    F: FnOnce() -> P + Send + 'static,
    P: FnMut() -> Result<Vec<T>, CliError>,
{
    let (tx, rx) = mpsc::channel(2);
    std::thread::spawn(move || {
        let mut next = make();
        loop {
            match next() {
                Ok(c) if c.is_empty() => return,
                Ok(c) => {
                    if tx.blocking_send(Ok(c)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    rx
}

/// One call of an import, tried again (with the same rows) while it fails because the
/// node or the cluster is unavailable (no leader, no quorum, a timeout, a lost
/// connection), for up to `RETRY_FOR`. `call` is told whether it is a retry. Trying
/// again is safe: the previous try either never applied or applied before the retry
/// in the log (one leader's log keeps the order of its proposals, and a new leader
/// commits what it keeps before anything new), and re-applying a chunk changes nothing
/// more. Each failure is reported on stderr (above the progress bar, if any).
pub async fn with_retry<T, F, Fut>(
    bar: Option<&ProgressBar>,
    stop: &Stop,
    mut call: F,
) -> Result<T, CliError>
where
    F: FnMut(bool) -> Fut,
    Fut: Future<Output = Result<T, CliError>>,
{
    let start = Instant::now();
    let mut pause = Duration::from_millis(500);
    let mut retry = false;
    loop {
        match call(retry).await {
            Err(e)
                if e.exit == EXIT_UNAVAILABLE
                    && !stop.requested()
                    && start.elapsed() + pause < RETRY_FOR =>
            {
                let line = format!(
                    "warning: {}; trying the same rows again in {:.1}s",
                    e.message,
                    pause.as_secs_f64()
                );
                match bar {
                    Some(pb) => pb.println(line),
                    None => eprintln!("{line}"),
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RETRY_PAUSE_MAX);
                retry = true;
            }
            other => return other,
        }
    }
}

/// A progress bar on stderr with rate and time left.
pub fn progress_bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    let template = format!(
        "{{bar:40}} {{human_pos}}/{{human_len}} {what}  {{rate}}  {{elapsed_precise}} (eta {{eta}})"
    );
    if let Ok(style) = ProgressStyle::with_template(&template) {
        pb.set_style(style.with_key(
            "rate",
            |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0}/s", s.per_sec());
            },
        ));
    }
    pb
}

/// Ctrl-C during the sending pass: stop after the call in flight (its outcome is then
/// known and reported); a second Ctrl-C quits at once.
pub struct Stop {
    flag: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Stop {
    pub fn on_ctrl_c() -> Stop {
        let flag = Arc::new(AtomicBool::new(false));
        let set = flag.clone();
        let task = tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                set.store(true, Ordering::SeqCst);
                eprintln!(
                    "\ninterrupted: stopping after the call in flight (Ctrl-C again quits at once)"
                );
                let _ = tokio::signal::ctrl_c().await;
                std::process::exit(i32::from(EXIT_INTERRUPTED));
            }
        });
        Stop { flag, task }
    }

    pub fn requested(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    pub fn error() -> CliError {
        CliError::new(
            EXIT_INTERRUPTED,
            "CANCELLED",
            "interrupted; run the same import again to finish it",
        )
    }
}

impl Drop for Stop {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Refusals, kept bounded: a count and a few examples per code, in order of first
/// appearance, and (with --json) the first `list_max` of them one by one.
#[derive(Debug, Default)]
pub struct Refusals {
    count: u64,
    groups: Vec<Group>,
    listed: Vec<Refused>,
    list_max: usize,
}

#[derive(Debug)]
struct Group {
    code: String,
    count: u64,
    examples: Vec<Refused>,
}

impl Refusals {
    pub fn new(list_max: usize) -> Self {
        Refusals {
            list_max,
            ..Refusals::default()
        }
    }

    pub fn push(&mut self, r: Refused) {
        self.count += 1;
        let code = if r.code.is_empty() {
            "refused"
        } else {
            r.code.as_str()
        };
        let i = match self.groups.iter().position(|g| g.code == code) {
            Some(i) => i,
            None => {
                self.groups.push(Group {
                    code: code.to_string(),
                    count: 0,
                    examples: Vec::new(),
                });
                self.groups.len() - 1
            }
        };
        let g = &mut self.groups[i];
        g.count += 1;
        if g.examples.len() < EXAMPLES {
            g.examples.push(r.clone());
        }
        if self.listed.len() < self.list_max {
            self.listed.push(r);
        }
    }
}

fn example(r: &Refused) -> String {
    if r.contact.is_empty() {
        format!("{}: {}", r.user, r.reason)
    } else {
        crate::output::refused_line(r)
    }
}

/// What an import did, so far.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Rows in the file.
    pub total: u64,
    /// Rows sent and answered.
    pub sent: u64,
    pub added: u64,
    /// Rows that were already in place (roster import).
    pub unchanged: u64,
    pub refused: Refusals,
    /// More summary lines, and more JSON members.
    pub notes: Vec<String>,
    pub extra: Map<String, Value>,
}

impl Outcome {
    /// An empty outcome; with `json`, refusals are also listed one by one.
    pub fn new(json: bool) -> Self {
        Outcome {
            refused: Refusals::new(if json { JSON_LIST_MAX } else { 0 }),
            ..Outcome::default()
        }
    }

    pub fn json(&self) -> Value {
        let by_code: Map<String, Value> = self
            .refused
            .groups
            .iter()
            .map(|g| (g.code.clone(), json!(g.count)))
            .collect();
        let mut v = json!({
            "total": self.total,
            "sent": self.sent,
            "added": self.added,
            "unchanged": self.unchanged,
            "refused": self.refused.listed.iter().map(refused_json).collect::<Vec<_>>(),
            "refused_count": self.refused.count,
            "refused_by_code": by_code,
            "refused_not_listed": self.refused.count - self.refused.listed.len() as u64,
        });
        if let Some(m) = v.as_object_mut() {
            m.extend(self.extra.clone());
        }
        v
    }

    /// "imported: N added[, U unchanged], M refused" and the refusals grouped by code,
    /// in order of first appearance, with a few examples each.
    pub fn summary(&self) -> String {
        let unchanged = if self.unchanged > 0 {
            format!(", {} unchanged", self.unchanged)
        } else {
            String::new()
        };
        let mut out = format!(
            "imported: {} added{unchanged}, {} refused",
            self.added, self.refused.count
        );
        for g in &self.refused.groups {
            let examples: Vec<String> = g.examples.iter().map(example).collect();
            let more = if g.count > EXAMPLES as u64 {
                "; ..."
            } else {
                ""
            };
            let _ = write!(
                out,
                "\n  {}: {} ({}{more})",
                g.code,
                g.count,
                examples.join("; ")
            );
        }
        for n in &self.notes {
            let _ = write!(out, "\n{n}");
        }
        out
    }

    /// For an error that stopped the import: how far it got.
    pub fn so_far(&self, rows: &str) -> String {
        format!(
            "stopped after {} of {} {rows}: {} added, {} unchanged, {} refused",
            self.sent, self.total, self.added, self.unchanged, self.refused.count
        )
    }

    /// The error to exit with when the import went through but refused some rows.
    pub fn refusal_error(&self, rows: &str) -> Option<CliError> {
        (self.refused.count > 0).then(|| {
            CliError::refused(format!(
                "{} of {} {rows} refused",
                self.refused.count, self.total
            ))
        })
    }
}
