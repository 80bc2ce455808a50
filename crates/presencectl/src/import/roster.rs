//! `roster import`: a CSV of `user,contact[,name[,group]]` rows, checked whole in a
//! first streaming pass, then sent in file order in a second one, `CHUNK` entries per
//! RosterAdd call and one call at a time (rows of one user must apply in file order:
//! the contact-list limit makes "195 + 6 at a limit of 200" add exactly the first 5).

use std::io::Read;

use presenced_proto::admin::{ContactEntry, RosterAddRequest};

use super::rows::Rows;
use super::{Input, Outcome, Sending, Stop, next_to_send, progress_bar, with_retry};
use crate::client::{CliError, Conn};

/// Entries per RosterAdd call by default (the server takes at most 10,000).
pub const CHUNK: usize = 2_000;
/// The most entries one RosterAdd call may carry.
pub const CHUNK_MAX: usize = 10_000;

/// The entries of a roster CSV, one at a time.
pub struct RosterRows<R: Read> {
    rows: Rows<R>,
}

impl<R: Read> RosterRows<R> {
    pub fn new(reader: R, source: &str) -> Self {
        RosterRows {
            rows: Rows::new(reader, source, "user", true),
        }
    }

    /// The next entry, or `None` at the end. A bad row is an error naming its line.
    pub fn next_entry(&mut self) -> Result<Option<ContactEntry>, CliError> {
        let Some(line) = self.rows.next_row()? else {
            return Ok(None);
        };
        let rows = &self.rows;
        let n = rows.record().len();
        if n < 2 {
            return Err(rows.bad(
                line,
                &format!("expected user,contact[,name[,group]] but found {n} field"),
            ));
        }
        if n > 4 {
            return Err(rows.bad(
                line,
                &format!(
                    "expected user,contact[,name[,group]] but found {n} fields (quote names containing commas)"
                ),
            ));
        }
        let (user, contact) = (rows.field(0), rows.field(1));
        if user.is_empty() {
            return Err(rows.bad(line, "empty user field"));
        }
        if contact.is_empty() {
            return Err(rows.bad(line, "empty contact field"));
        }
        Ok(Some(ContactEntry {
            user: user.to_string(),
            contact: contact.to_string(),
            name: rows.field(2).to_string(),
            group: rows.field(3).to_string(),
        }))
    }

    /// Up to `n` next entries (fewer only at the end).
    pub fn next_chunk(&mut self, n: usize) -> Result<Vec<ContactEntry>, CliError> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match self.next_entry()? {
                Some(e) => out.push(e),
                None => break,
            }
        }
        Ok(out)
    }
}

/// Every entry of `data` (for tests; imports stream).
#[cfg(test)]
pub fn parse(data: &[u8], source: &str) -> Result<Vec<ContactEntry>, CliError> {
    let mut rows = RosterRows::new(data, source);
    let mut out = Vec::new();
    while let Some(e) = rows.next_entry()? {
        out.push(e);
    }
    Ok(out)
}

/// First pass: check every row; the number of entries.
pub fn check(input: &mut Input) -> Result<u64, CliError> {
    let source = input.name().to_string();
    let mut rows = RosterRows::new(input.first_pass()?, &source);
    let mut n = 0u64;
    while rows.next_entry()?.is_some() {
        n += 1;
    }
    Ok(n)
}

/// Second pass: send the entries in file order, `how.chunk` per call, one call after the
/// other. Stops at the first failing call (or at Ctrl-C, after the call in flight); the
/// outcome so far is returned with the error.
pub async fn run(
    conn: &Conn,
    input: &mut Input,
    total: u64,
    how: Sending,
    outcome: &mut Outcome,
) -> Option<CliError> {
    outcome.total = total;
    let source = input.name().to_string();
    let reader = match input.second_pass() {
        Ok(r) => r,
        Err(e) => return Some(e),
    };
    let mut chunks = super::read_ahead(move || {
        let mut rows = RosterRows::new(reader, &source);
        move || rows.next_chunk(how.chunk)
    });
    let stop = Stop::on_ctrl_c();
    let bar = how.progress.then(|| progress_bar(total, "contacts"));
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
        let result = with_retry(bar.as_ref(), &stop, |_| {
            let req = RosterAddRequest {
                entries: chunk.clone(),
            };
            conn.change_within(how.timeout, |mut c| async move { c.roster_add(req).await })
        })
        .await;
        match result {
            Ok(reply) => {
                outcome.sent += n;
                outcome.added += reply.added.len() as u64;
                outcome.unchanged += reply.unchanged.len() as u64;
                for r in reply.refused {
                    outcome.refused.push(r);
                }
                if let Some(pb) = &bar {
                    pb.inc(n);
                }
            }
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    if let Some(pb) = bar {
        pb.finish_and_clear();
    }
    error.map(|mut e| {
        e.message = format!("{} ({})", e.message, outcome.so_far("entries"));
        e
    })
}

#[cfg(test)]
mod tests {
    use presenced_proto::admin::Refused;

    use super::super::Refusals;
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
        let csv: String = (0..4_800).map(|i| format!("u{},c{i}\n", i % 7)).collect();
        let es = parse(csv.as_bytes(), "f").unwrap();
        assert_eq!(es.len(), 4_800);
        assert!(
            es.iter()
                .enumerate()
                .all(|(i, e)| e.contact == format!("c{i}"))
        );
        let mut rows = RosterRows::new(csv.as_bytes(), "f");
        let mut chunks = Vec::new();
        loop {
            let c = rows.next_chunk(CHUNK).unwrap();
            if c.is_empty() {
                break;
            }
            chunks.push(c.len());
        }
        assert_eq!(chunks, vec![2_000, 2_000, 800]);
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
    fn bad_row_deep_in_a_long_file() {
        let mut csv: String = (1..99_999)
            .map(|i| format!("u{},c{i}\n", i % 500))
            .collect();
        csv.push_str("u1,\n");
        csv.push_str("u1,c0\n");
        let e = parse(csv.as_bytes(), "contacts.csv").unwrap_err();
        assert_eq!(e.message, "contacts.csv line 99999: empty contact field");
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
        let mut o = Outcome {
            total: 10,
            sent: 10,
            added: 5,
            refused: Refusals::new(2),
            ..Outcome::default()
        };
        for x in [
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
        ] {
            o.refused.push(x);
        }
        assert_eq!(
            o.summary(),
            "imported: 5 added, 5 refused\n  contact_list_full: 4 (alice -> u200@example.test: alice@example.test is at the \
             maximum contact-list size (200); alice -> u201: full; alice -> u202: full; ...)\n  unknown_contact: 1 (bob -> \
             zed: unknown contact zed)"
        );
        let j = o.json();
        assert_eq!(j["refused"][1]["code"], "unknown_contact");
        assert_eq!(j["refused"].as_array().unwrap().len(), 2);
        assert_eq!(j["refused_count"], 5);
        assert_eq!(j["refused_not_listed"], 3);
        assert_eq!(j["refused_by_code"]["contact_list_full"], 4);
        assert_eq!(j["added"], 5);
        assert_eq!(j["unchanged"], 0);

        o.unchanged = 7;
        assert!(
            o.summary()
                .starts_with("imported: 5 added, 7 unchanged, 5 refused\n")
        );
    }
}
