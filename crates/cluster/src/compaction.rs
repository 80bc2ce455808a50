//! Log compaction by bytes as well as by entries.
//!
//! openraft snapshots every `snapshot_every` entries and keeps `keep_logs` entries
//! behind a snapshot. Batching packs many commands into one entry, so a count alone
//! lets the log grow without bound in bytes (a bulk import of 500,000 contacts is a
//! few thousand entries of hundreds of KiB each). This module keeps the encoded size
//! of every log entry and, twice a second:
//! - triggers a snapshot once the entries after the last snapshot exceed
//!   `snapshot_log_bytes`;
//! - purges the log behind the snapshot down to `keep_log_bytes`, so a follower that
//!   far behind (or a wiped, re-added node) gets the snapshot rather than the log.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::Raft;

use crate::TypeConfig;

/// Sizes of the entries in the log, and where the last snapshot ends.
#[derive(Default)]
pub(crate) struct LogSizes {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// (index, encoded bytes), in index order.
    sizes: VecDeque<(u64, u32)>,
    snapshot: Option<u64>,
}

/// What compaction should do now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Bytes of log after the last snapshot.
    pub since_snapshot: u64,
    /// Bytes of log at or before the last snapshot.
    pub behind_snapshot: u64,
    pub snapshot: bool,
    pub purge_upto: Option<u64>,
}

impl LogSizes {
    pub(crate) fn new(sizes: Vec<(u64, u32)>) -> Self {
        LogSizes {
            inner: Mutex::new(Inner {
                sizes: sizes.into(),
                snapshot: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn appended(&self, rows: impl Iterator<Item = (u64, usize)>) {
        let mut g = self.lock();
        for (i, n) in rows {
            // Appends continue the log or overwrite its tail (after a truncate).
            while g.sizes.back().is_some_and(|(j, _)| *j >= i) {
                g.sizes.pop_back();
            }
            g.sizes.push_back((i, u32::try_from(n).unwrap_or(u32::MAX)));
        }
    }

    pub(crate) fn truncated(&self, from: u64) {
        let mut g = self.lock();
        while g.sizes.back().is_some_and(|(j, _)| *j >= from) {
            g.sizes.pop_back();
        }
    }

    pub(crate) fn purged(&self, upto: u64) {
        let mut g = self.lock();
        while g.sizes.front().is_some_and(|(j, _)| *j <= upto) {
            g.sizes.pop_front();
        }
    }

    pub(crate) fn snapshot_at(&self, index: Option<u64>) {
        self.lock().snapshot = index;
    }

    pub(crate) fn plan(&self, snapshot_bytes: u64, keep_bytes: u64) -> Plan {
        let g = self.lock();
        let snap = g.snapshot;
        let covered = |i: u64| snap.is_some_and(|s| i <= s);
        let (mut since, mut behind) = (0u64, 0u64);
        for (i, n) in &g.sizes {
            if covered(*i) {
                behind += u64::from(*n);
            } else {
                since += u64::from(*n);
            }
        }
        // Purge the oldest covered entries until what stays behind fits.
        let mut purge_upto = None;
        if behind > keep_bytes {
            let mut left = behind;
            for (i, n) in g.sizes.iter().take_while(|(i, _)| covered(*i)) {
                if left <= keep_bytes {
                    break;
                }
                left -= u64::from(*n);
                purge_upto = Some(*i);
            }
        }
        Plan {
            since_snapshot: since,
            behind_snapshot: behind,
            snapshot: since > snapshot_bytes,
            purge_upto,
        }
    }
}

/// Run compaction for `raft` until it shuts down (its triggers then fail).
pub(crate) fn spawn(
    raft: Raft<TypeConfig>,
    sizes: Arc<LogSizes>,
    snapshot_bytes: u64,
    keep_bytes: u64,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_purge = None;
        loop {
            tick.tick().await;
            let plan = sizes.plan(snapshot_bytes, keep_bytes);
            metrics::gauge!("presenced_raft_log_bytes", "part" => "after_snapshot")
                .set(plan.since_snapshot as f64);
            metrics::gauge!("presenced_raft_log_bytes", "part" => "behind_snapshot")
                .set(plan.behind_snapshot as f64);
            if plan.snapshot {
                tracing::debug!(bytes = plan.since_snapshot, "log size triggers a snapshot");
                // Ignored by openraft while a build is under way.
                if raft.trigger().snapshot().await.is_err() {
                    return;
                }
            }
            if let Some(upto) = plan.purge_upto.filter(|u| Some(*u) != last_purge) {
                last_purge = Some(upto);
                if raft.trigger().purge_log(upto).await.is_err() {
                    return;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_by_bytes() {
        let s = LogSizes::new((1..=10).map(|i| (i, 100)).collect());
        let p = s.plan(500, 300);
        assert_eq!(
            (p.since_snapshot, p.snapshot, p.purge_upto),
            (1000, true, None)
        );
        s.snapshot_at(Some(8));
        let p = s.plan(500, 300);
        assert_eq!((p.since_snapshot, p.behind_snapshot), (200, 800));
        assert!(!p.snapshot);
        // 800 behind, keep 300: purge 1..=5.
        assert_eq!(p.purge_upto, Some(5));
        s.purged(5);
        assert_eq!(s.plan(500, 300).purge_upto, None);
        // A truncate and an overwrite of the tail.
        s.truncated(9);
        s.appended([(9, 1000)].into_iter());
        s.appended([(9, 50), (10, 50)].into_iter());
        let p = s.plan(500, 300);
        assert_eq!(p.since_snapshot, 100);
    }
}
