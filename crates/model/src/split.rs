//! Splitting a bulk command into parts of bounded encoded size, and joining the
//! parts' replies back into the reply of the whole.
//!
//! One log entry must replicate within one heartbeat, so the replication layer bounds
//! every entry by bytes. A bulk command larger than that (a roster import call with
//! long contact names, a large batch) is proposed as consecutive parts instead: each
//! part is applied in order with the same per-entry rules, so the joined reply equals
//! what the whole would have given. Unlike the whole, the parts are separate writes:
//! a failure between two parts leaves the earlier ones applied (the bulk operations
//! are idempotent to re-run).

use crate::{Command, Outcome, Reply};

/// The length of `v`'s JSON encoding, without building it.
pub fn encoded_len<T: serde::Serialize>(v: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

/// Cut `items` into runs whose encoded sizes add up to at most `max` (a single larger
/// item makes a run of its own).
fn runs<T: serde::Serialize>(items: Vec<T>, max: usize) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut size = 0;
    for it in items {
        let n = encoded_len(&it) + 1;
        if !cur.is_empty() && size + n > max {
            out.push(std::mem::take(&mut cur));
            size = 0;
        }
        size += n;
        cur.push(it);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

impl Command {
    /// Split a bulk command into consecutive parts of about `max` encoded bytes each.
    /// A command that cannot be split (not a bulk command, or a single item) comes
    /// back alone.
    pub fn split(self, max: usize) -> Vec<Command> {
        match self {
            Command::AddContacts { entries } if entries.len() > 1 => runs(entries, max)
                .into_iter()
                .map(|entries| Command::AddContacts { entries })
                .collect(),
            Command::Batch { commands } if commands.len() > 1 => runs(commands, max)
                .into_iter()
                .map(|commands| Command::Batch { commands })
                .collect(),
            other => vec![other],
        }
    }
}

/// Join the replies of the parts of a split command, in order.
pub fn join_replies(parts: Vec<Outcome>) -> Outcome {
    let mut parts = parts.into_iter();
    let mut whole = parts.next().unwrap_or(Ok(Reply::Done))?;
    for p in parts {
        match (&mut whole, p?) {
            (
                Reply::Contacts { added, refused },
                Reply::Contacts {
                    added: a,
                    refused: r,
                },
            ) => {
                added.extend(a);
                refused.extend(r);
            }
            (Reply::Batch { outcomes }, Reply::Batch { outcomes: o }) => outcomes.extend(o),
            (_, other) => whole = other,
        }
    }
    Ok(whole)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NewContact;

    #[test]
    fn bulk_commands_split_and_replies_join() {
        let entries: Vec<NewContact> = (0..100)
            .map(|i| NewContact {
                user: "alice".into(),
                contact: format!("c{i}@x.test"),
                name: Some("n".repeat(100)),
                groups: vec![],
            })
            .collect();
        let whole = Command::AddContacts {
            entries: entries.clone(),
        };
        let parts = whole.split(1_000);
        assert!(parts.len() >= 10, "{}", parts.len());
        let mut again = Vec::new();
        for p in &parts {
            assert!(encoded_len(p) < 1_200);
            let Command::AddContacts { entries } = p else {
                panic!()
            };
            again.extend(entries.clone());
        }
        assert_eq!(again, entries);
        assert_eq!(
            Command::DeleteAccount { user: "a".into() }.split(10).len(),
            1
        );
        let joined = join_replies(vec![
            Ok(Reply::Contacts {
                added: vec![("a".into(), "b".into())],
                refused: vec![],
            }),
            Ok(Reply::Contacts {
                added: vec![("a".into(), "c".into())],
                refused: vec![],
            }),
        ])
        .unwrap();
        assert_eq!(
            joined,
            Reply::Contacts {
                added: vec![("a".into(), "b".into()), ("a".into(), "c".into())],
                refused: vec![]
            }
        );
    }
}
