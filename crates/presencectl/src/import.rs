//! `roster import`: parse a CSV of `user,contact[,name[,group]]` rows and send them in
//! file order, in chunks, as RosterAdd calls.

use std::fmt::Write as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use presenced_proto::admin::{ContactEntry, Refused, RosterAddRequest};
use serde_json::{Value, json};

use crate::client::{CliError, Conn};
use crate::output::refused_json;

/// Entries per RosterAdd call.
pub const CHUNK: usize = 500;
/// Examples shown per refusal code in the summary.
const EXAMPLES: usize = 3;

/// Parse the import file. `source` names it in error messages. Nothing is sent if any
/// row is bad.
pub fn parse(data: &[u8], source: &str) -> Result<Vec<ContactEntry>, CliError> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .comment(Some(b'#'))
        .trim(csv::Trim::All)
        .from_reader(data);
    let mut out = Vec::new();
    let mut first = true;
    let mut record = csv::StringRecord::new();
    loop {
        match rdr.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let line = e
                    .position()
                    .map(|p| format!(" line {}", line_of(data, p.byte())))
                    .unwrap_or_default();
                return Err(CliError::invalid(format!(
                    "{source}{line}: {}",
                    csv_error_text(&e)
                )));
            }
        }
        // csv's own line count is off after comment lines; count from the byte offset.
        let line = record.position().map_or(0, |p| line_of(data, p.byte()));
        // A line of blanks reads as one empty field: treat it as a blank line.
        if record.iter().all(str::is_empty) {
            continue;
        }
        if std::mem::take(&mut first) && record.get(0) == Some("user") {
            continue;
        }
        let bad = |what: &str| CliError::invalid(format!("{source} line {line}: {what}"));
        if record.len() < 2 {
            return Err(bad(&format!(
                "expected user,contact[,name[,group]] but found {} field",
                record.len()
            )));
        }
        if record.len() > 4 {
            return Err(bad(&format!(
                "expected user,contact[,name[,group]] but found {} fields (quote names containing commas)",
                record.len()
            )));
        }
        let field = |i: usize| record.get(i).unwrap_or("").to_string();
        let (user, contact) = (field(0), field(1));
        if user.is_empty() {
            return Err(bad("empty user field"));
        }
        if contact.is_empty() {
            return Err(bad("empty contact field"));
        }
        out.push(ContactEntry {
            user,
            contact,
            name: field(2),
            group: field(3),
        });
    }
    Ok(out)
}

/// 1-based line number of the record csv reports at byte offset `at`. csv's positions
/// point just past the previous record, before any blank and comment lines it
/// skipped, so skip those here too.
fn line_of(data: &[u8], at: u64) -> u64 {
    let mut i = usize::try_from(at).unwrap_or(usize::MAX).min(data.len());
    while i < data.len() {
        match data[i] {
            b'\n' | b'\r' => i += 1,
            b'#' => {
                i = data[i..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(data.len(), |p| i + p + 1)
            }
            _ => break,
        }
    }
    data[..i].iter().filter(|&&b| b == b'\n').count() as u64 + 1
}

fn csv_error_text(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { err, .. } => format!("not valid UTF-8 ({err})"),
        csv::ErrorKind::Io(err) => format!("read error: {err}"),
        _ => e.to_string(),
    }
}

/// What an import did, so far.
#[derive(Debug, Default)]
pub struct Outcome {
    pub total: usize,
    pub sent: usize,
    pub added: usize,
    pub refused: Vec<Refused>,
}

impl Outcome {
    pub fn json(&self) -> Value {
        json!({
            "added": self.added,
            "refused": self.refused.iter().map(refused_json).collect::<Vec<_>>(),
        })
    }

    /// "imported: N added, M refused" and the refusals grouped by code, in order of
    /// first appearance, with a few examples each.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "imported: {} added, {} refused",
            self.added,
            self.refused.len()
        );
        let mut codes: Vec<(&str, Vec<&Refused>)> = Vec::new();
        for r in &self.refused {
            match codes.iter_mut().find(|(c, _)| *c == r.code) {
                Some((_, v)) => v.push(r),
                None => codes.push((&r.code, vec![r])),
            }
        }
        for (code, rs) in codes {
            let code = if code.is_empty() { "refused" } else { code };
            let examples: Vec<String> = rs
                .iter()
                .take(EXAMPLES)
                .map(|r| crate::output::refused_line(r))
                .collect();
            let more = if rs.len() > EXAMPLES { "; ..." } else { "" };
            let _ = write!(
                out,
                "\n  {code}: {} ({}{more})",
                rs.len(),
                examples.join("; ")
            );
        }
        out
    }
}

/// Send `entries` in file order, `CHUNK` at a time, one call after the other. Stops at
/// the first failing call; the outcome so far is returned with the error.
pub async fn run(
    conn: &Conn,
    entries: Vec<ContactEntry>,
    call_timeout: Duration,
    progress: bool,
) -> (Outcome, Option<CliError>) {
    let mut outcome = Outcome {
        total: entries.len(),
        ..Outcome::default()
    };
    let bar = progress.then(|| {
        let pb = ProgressBar::new(entries.len() as u64);
        if let Ok(style) = ProgressStyle::with_template(
            "{bar:40} {pos}/{len} entries  {elapsed_precise} (eta {eta})",
        ) {
            pb.set_style(style);
        }
        pb
    });
    let mut error = None;
    for chunk in entries.chunks(CHUNK) {
        let req = RosterAddRequest {
            entries: chunk.to_vec(),
        };
        match conn
            .change_within(call_timeout, |mut c| async move { c.roster_add(req).await })
            .await
        {
            Ok(reply) => {
                outcome.sent += chunk.len();
                outcome.added += reply.added.len();
                outcome.refused.extend(reply.refused);
                if let Some(pb) = &bar {
                    pb.inc(chunk.len() as u64);
                }
            }
            Err(mut e) => {
                e.message = format!(
                    "{} (stopped after {} of {} entries: {} added, {} refused)",
                    e.message,
                    outcome.sent,
                    outcome.total,
                    outcome.added,
                    outcome.refused.len()
                );
                error = Some(e);
                break;
            }
        }
    }
    if let Some(pb) = bar {
        pb.finish_and_clear();
    }
    (outcome, error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(user: &str, contact: &str, name: &str, group: &str) -> ContactEntry {
        ContactEntry {
            user: user.into(),
            contact: contact.into(),
            name: name.into(),
            group: group.into(),
        }
    }

    #[test]
    fn header_is_skipped_only_when_first() {
        let csv = "user,contact,name,group\nalice,bob,Bob,Friends\nuser,carol\n";
        let es = parse(csv.as_bytes(), "f.csv").unwrap();
        assert_eq!(
            es,
            vec![
                entry("alice", "bob", "Bob", "Friends"),
                entry("user", "carol", "", "")
            ]
        );
    }

    #[test]
    fn header_after_comments_and_blank_lines() {
        let csv = "# exported 2024\n\n   \nuser,contact\nalice,bob\n";
        assert_eq!(
            parse(csv.as_bytes(), "f").unwrap(),
            vec![entry("alice", "bob", "", "")]
        );
    }

    #[test]
    fn no_header() {
        let csv = "alice,bob\r\nalice,carol,Carol\r\n";
        let es = parse(csv.as_bytes(), "f").unwrap();
        assert_eq!(
            es,
            vec![
                entry("alice", "bob", "", ""),
                entry("alice", "carol", "Carol", "")
            ]
        );
    }

    #[test]
    fn comments_blank_lines_and_missing_columns() {
        let csv = "\
# a comment
alice, bob , Bob Smith ,

# another, with, commas
alice,carol,,Work
alice,\"dave\",\"Dave, Jr.\",Friends
alice,erin
";
        let es = parse(csv.as_bytes(), "f").unwrap();
        assert_eq!(
            es,
            vec![
                entry("alice", "bob", "Bob Smith", ""),
                entry("alice", "carol", "", "Work"),
                entry("alice", "dave", "Dave, Jr.", "Friends"),
                entry("alice", "erin", "", ""),
            ]
        );
    }

    #[test]
    fn order_is_file_order() {
        let csv: String = (0..1200).map(|i| format!("u{},c{i}\n", i % 7)).collect();
        let es = parse(csv.as_bytes(), "f").unwrap();
        assert_eq!(es.len(), 1200);
        assert!(
            es.iter()
                .enumerate()
                .all(|(i, e)| e.contact == format!("c{i}"))
        );
        let chunks: Vec<usize> = es.chunks(CHUNK).map(<[_]>::len).collect();
        assert_eq!(chunks, vec![500, 500, 200]);
    }

    #[test]
    fn bad_row_names_its_line() {
        let csv = "user,contact\n# comment\nalice,bob\n\nalice\nalice,carol\n";
        let e = parse(csv.as_bytes(), "roster.csv").unwrap_err();
        assert_eq!(e.exit, 2);
        assert!(
            e.message.starts_with("roster.csv line 5: "),
            "{}",
            e.message
        );

        let e = parse(b"alice,bob\n,carol\n", "f").unwrap_err();
        assert!(
            e.message.starts_with("f line 2: empty user"),
            "{}",
            e.message
        );
        let e = parse(b"alice,\n", "f").unwrap_err();
        assert!(
            e.message.starts_with("f line 1: empty contact"),
            "{}",
            e.message
        );
        let e = parse(b"alice,bob\nalice,carol,Carol,Work,extra\n", "f").unwrap_err();
        assert!(e.message.starts_with("f line 2: "), "{}", e.message);
    }

    #[test]
    fn line_numbers_count_comments_blank_lines_and_crlf() {
        let csv = "# a\r\n# b\r\n\r\nalice,bob\r\n\r\n# c\r\nbob\r\n";
        let e = parse(csv.as_bytes(), "f").unwrap_err();
        assert!(e.message.starts_with("f line 7: "), "{}", e.message);
        let e = parse(b"alice,bob\n# comment\nalice,\xff\n", "f").unwrap_err();
        assert!(
            e.message.starts_with("f line 3: not valid UTF-8"),
            "{}",
            e.message
        );
    }

    #[test]
    fn bad_utf8_and_quotes() {
        let e = parse(b"alice,bob\nalice,\xff\xfe\n", "f").unwrap_err();
        assert_eq!(e.exit, 2);
        assert!(e.message.starts_with("f line 2: "), "{}", e.message);
    }

    #[test]
    fn empty_input() {
        assert!(parse(b"", "f").unwrap().is_empty());
        assert!(parse(b"user,contact,name,group\n", "f").unwrap().is_empty());
    }

    #[test]
    fn summary_groups_by_code() {
        let r = |u: &str, c: &str, code: &str, reason: &str| Refused {
            user: u.into(),
            contact: c.into(),
            code: code.into(),
            reason: reason.into(),
        };
        let o = Outcome {
            total: 10,
            sent: 10,
            added: 5,
            refused: vec![
                r(
                    "alice",
                    "u200@example.test",
                    "contact_list_full",
                    "alice@example.test is at the maximum contact-list size (200)",
                ),
                r("bob", "zed", "unknown_contact", "unknown contact zed"),
                r("alice", "u201", "contact_list_full", "full"),
                r("alice", "u202", "contact_list_full", "full"),
                r("alice", "u203", "contact_list_full", "full"),
            ],
        };
        assert_eq!(
            o.summary(),
            "imported: 5 added, 5 refused\n  contact_list_full: 4 (alice -> u200@example.test: alice@example.test is at the \
             maximum contact-list size (200); alice -> u201: full; alice -> u202: full; ...)\n  unknown_contact: 1 (bob -> \
             zed: unknown contact zed)"
        );
        assert_eq!(o.json()["refused"][1]["code"], "unknown_contact");
        assert_eq!(o.json()["added"], 5);
    }
}
