//! The newest log entries, kept decoded beside the log so that replication does not
//! read back and decode what was appended a moment ago.
//!
//! openraft's replication asks the log reader for the entries it sends each follower,
//! usually the ones just appended. Reading them from the segment files and decoding
//! their JSON again cost the leader 7.6 % of its CPU at 64 writers (`perf record
//! --call-graph dwarf` of the leader, 2026-12-03): once per follower per entry. The
//! cache holds the tail of the log as appended (owned entries, moved in after they
//! were encoded for the log), bounded by entries and encoded bytes; a read it cannot
//! serve whole (a follower far behind) goes to the files as before.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::Entry;

use crate::TypeConfig;

/// At most this many entries are kept.
const MAX_ENTRIES: usize = 1024;
/// At most this many bytes of entries (their encoded size) are kept.
const MAX_BYTES: usize = 8 << 20;

#[derive(Default)]
struct Inner {
    /// Consecutive entries, the last one the log's last.
    entries: VecDeque<(Entry<TypeConfig>, usize)>,
    bytes: usize,
}

impl Inner {
    fn first(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.log_id.index)
    }

    fn next(&self) -> Option<u64> {
        self.entries.back().map(|(e, _)| e.log_id.index + 1)
    }

    fn pop_front(&mut self) {
        if let Some((_, b)) = self.entries.pop_front() {
            self.bytes -= b;
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }
}

/// Shared by the log store and its readers (clones).
#[derive(Clone, Default)]
pub(crate) struct EntryCache(Arc<Mutex<Inner>>);

impl EntryCache {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Entries just appended to the log, each with its encoded size. An append that
    /// does not follow the cached tail (the first after a start, or after a
    /// truncation the cache was not told of) starts the cache afresh.
    pub(crate) fn appended(&self, new: Vec<(Entry<TypeConfig>, usize)>) {
        let Some(first) = new.first().map(|(e, _)| e.log_id.index) else {
            return;
        };
        let mut g = self.lock();
        if g.next() != Some(first) {
            g.clear();
        }
        for (e, b) in new {
            g.bytes += b;
            g.entries.push_back((e, b));
        }
        while g.entries.len() > MAX_ENTRIES || (g.bytes > MAX_BYTES && g.entries.len() > 1) {
            g.pop_front();
        }
    }

    /// Copies of the entries with `from <= index < to` (`None`: to the end), if the
    /// cache holds every one of them; `None` otherwise (read the log instead).
    pub(crate) fn get(&self, from: u64, to: Option<u64>) -> Option<Vec<Entry<TypeConfig>>> {
        let g = self.lock();
        let (first, next) = (g.first()?, g.next()?);
        let to = to.unwrap_or(next);
        if from < first || to > next {
            return None;
        }
        if from >= to {
            return Some(Vec::new());
        }
        let at = (from - first) as usize;
        let n = (to - from) as usize;
        Some(
            g.entries
                .range(at..at + n)
                .map(|(e, _)| e.clone())
                .collect(),
        )
    }

    /// The log lost its entries from `index` on (a conflicting leader's overwrite).
    pub(crate) fn truncated(&self, index: u64) {
        let mut g = self.lock();
        while g.next().is_some_and(|n| n > index) {
            if let Some((_, b)) = g.entries.pop_back() {
                g.bytes -= b;
            }
        }
    }

    /// The log dropped its entries up to and including `index`.
    pub(crate) fn purged(&self, index: u64) {
        let mut g = self.lock();
        while g.first().is_some_and(|f| f <= index) {
            g.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload, LogId};

    fn entry(term: u64, i: u64) -> (Entry<TypeConfig>, usize) {
        let e = Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), i),
            payload: EntryPayload::Blank,
        };
        (e, 100)
    }

    fn indexes(v: Option<Vec<Entry<TypeConfig>>>) -> Option<Vec<u64>> {
        v.map(|v| v.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn serves_the_tail_and_refuses_what_it_does_not_hold() {
        let c = EntryCache::default();
        assert_eq!(indexes(c.get(1, None)), None, "empty");
        c.appended((5..=9).map(|i| entry(1, i)).collect());
        assert_eq!(indexes(c.get(5, None)), Some(vec![5, 6, 7, 8, 9]));
        assert_eq!(indexes(c.get(7, Some(9))), Some(vec![7, 8]));
        assert_eq!(indexes(c.get(10, None)), Some(vec![]));
        assert_eq!(indexes(c.get(4, None)), None, "older than the cache");
        assert_eq!(indexes(c.get(6, Some(11))), None, "past the last entry");
        c.appended(vec![entry(1, 10)]);
        assert_eq!(indexes(c.get(9, None)), Some(vec![9, 10]));
        // A gap (an append not following the tail) starts afresh.
        c.appended(vec![entry(1, 20)]);
        assert_eq!(indexes(c.get(9, None)), None);
        assert_eq!(indexes(c.get(20, None)), Some(vec![20]));
    }

    #[test]
    fn truncation_and_purge_drop_entries_and_a_new_term_overwrites() {
        let c = EntryCache::default();
        c.appended((1..=10).map(|i| entry(1, i)).collect());
        c.truncated(8);
        assert_eq!(indexes(c.get(6, None)), Some(vec![6, 7]));
        c.appended(vec![entry(2, 8)]);
        let got = c.get(8, None).unwrap();
        assert_eq!(got[0].log_id.leader_id.term, 2, "the new term's entry");
        c.purged(5);
        assert_eq!(indexes(c.get(5, None)), None);
        assert_eq!(indexes(c.get(6, None)), Some(vec![6, 7, 8]));
        c.purged(100);
        assert_eq!(indexes(c.get(6, None)), None);
    }

    #[test]
    fn bounded_by_entries_and_bytes() {
        let c = EntryCache::default();
        c.appended(
            (1..=(MAX_ENTRIES as u64 + 10))
                .map(|i| entry(1, i))
                .collect(),
        );
        assert_eq!(indexes(c.get(10, Some(12))), None);
        assert_eq!(indexes(c.get(11, Some(13))), Some(vec![11, 12]));
        let big = (entry(1, 5000).0, MAX_BYTES / 2 + 1);
        let c = EntryCache::default();
        c.appended(vec![big.clone()]);
        c.appended(vec![(entry(1, 5001).0, MAX_BYTES / 2 + 1)]);
        assert_eq!(indexes(c.get(5000, None)), None, "over the byte bound");
        assert_eq!(indexes(c.get(5001, None)), Some(vec![5001]));
    }
}
