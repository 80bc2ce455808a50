//! Handing a user's offline queue to a session, and dropping from the queue what the
//! session's client then has.
//!
//! Each message handed out carries a receipt ([`crate::receipt`]) tied to the flush
//! that handed it. A message leaves the queue only once its receipt is done: written
//! to the client, or acknowledged by it with XEP-0198. One whose session ends first
//! stays queued for the user's next session. When every receipt of a flush is done
//! or dropped, the flush's acknowledgement (`OfflineAckSeqs`, idempotent) is applied,
//! retried while the cluster has no leader.
//!
//! One flush runs at a time per user; one asked for meanwhile runs after it. A
//! session is never handed the same queued message twice (`Local::offline_sent`),
//! even while an earlier flush's acknowledgement is still on its way.

use std::sync::Weak;

use super::*;
use crate::offline::decode;
use crate::receipt::Waiter;

/// How long a flush keeps retrying its acknowledgement (a leader election takes
/// seconds; a minority never gets one).
const OFFLINE_ACK_BUDGET: Duration = Duration::from_secs(30);

/// The messages one flush handed out whose receipts are done; acknowledged when the
/// last receipt of the flush is gone.
pub(crate) struct FlushBatch {
    router: Weak<crate::Inner>,
    user: String,
    done: Mutex<Vec<u64>>,
}

impl std::fmt::Debug for FlushBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FlushBatch({})", self.user)
    }
}

impl FlushBatch {
    /// Queued message `seq` has reached the client.
    pub(crate) fn taken(&self, seq: u64) {
        self.done.lock().push(seq);
    }
}

impl Drop for FlushBatch {
    fn drop(&mut self) {
        let mut seqs = std::mem::take(self.done.get_mut());
        if seqs.is_empty() {
            return;
        }
        let Some(inner) = self.router.upgrade() else {
            return;
        };
        seqs.sort_unstable();
        let router = Router { inner };
        let user = std::mem::take(&mut self.user);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let cmd = Command::OfflineAckSeqs {
                    user: user.clone(),
                    seqs,
                };
                router.ack_offline(&user, cmd).await;
            });
        }
    }
}

impl Router {
    /// Deliver `user`'s offline queue to `resource`, one flush at a time per user: a
    /// flush asked for while one runs is done once that one has handed out its
    /// messages. Several messages stored at once used to start overlapping flushes
    /// that each delivered the whole queue (found by scripts/chaos).
    pub(crate) async fn flush_offline(&self, user: &str, resource: &str) {
        {
            let mut f = self.inner.flushing.lock();
            if let Some(again) = f.get_mut(user) {
                *again = true;
                return;
            }
            f.insert(user.to_string(), false);
        }
        loop {
            self.flush_offline_once(user, resource);
            let mut f = self.inner.flushing.lock();
            match f.get_mut(user) {
                Some(again) if *again => *again = false,
                _ => {
                    f.remove(user);
                    return;
                }
            }
        }
    }

    fn flush_offline_once(&self, user: &str, resource: &str) {
        let queued: Vec<(u64, OfflineMessage)> = self.read(|s| {
            s.user(user)
                .map(|d| {
                    d.offline
                        .messages
                        .iter()
                        .map(|(k, v)| (*k, v.clone()))
                        .collect()
                })
                .unwrap_or_default()
        });
        if queued.is_empty() {
            return;
        }
        let batch = Arc::new(FlushBatch {
            router: Arc::downgrade(&self.inner),
            user: user.to_string(),
            done: Mutex::new(Vec::new()),
        });
        let mut unreadable = 0u64;
        let mut dir = self.inner.dir.lock();
        let Some(e) = dir.get_mut(user, resource) else {
            return;
        };
        let sid = e.sid;
        let Some(local) = &mut e.local else {
            return;
        };
        for (seq, om) in &queued {
            if local.offline_sent.is_some_and(|sent| *seq <= sent) {
                // Handed to this session by an earlier flush: its receipt answers.
                continue;
            }
            let mut m = match decode(&self.inner.domains, &om.payload) {
                Ok(m) => m,
                Err(err) => {
                    unreadable += 1;
                    tracing::warn!(user, seq, "offline message kept: cannot read it: {err}");
                    continue;
                }
            };
            m.delay = Some(Delay {
                stamp_ms: om.stamp_ms,
            });
            let waiter = Waiter::Offline {
                batch: batch.clone(),
                seq: *seq,
            };
            m.receipt = Some(Receipt::new(self, user, Some(resource), &m, waiter));
            if !self.send_local(user, resource, sid, local, Delivery::Message(Box::new(m))) {
                break; // not taken: delivered at the next login
            }
            local.offline_sent = Some(*seq);
        }
        drop(dir);
        if unreadable > 0 {
            metrics::counter!("presenced_offline_unreadable_total").increment(unreadable);
        }
    }

    /// Apply a flush's acknowledgement, retrying while the cluster has no leader (the
    /// command is idempotent). Past the budget the messages stay queued and go, once
    /// more, to the user's next session.
    pub(crate) async fn ack_offline(&self, user: &str, cmd: Command) {
        let mut backoff = Duration::from_millis(200);
        let deadline = Instant::now() + OFFLINE_ACK_BUDGET;
        loop {
            match self.write(cmd.clone()).await {
                Ok(_) => return,
                Err(e) if Instant::now() + backoff < deadline => {
                    tracing::debug!(user, "offline acknowledgement not applied, retrying: {e}");
                    metrics::counter!("presenced_offline_ack_retries_total").increment(1);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    tracing::warn!(user, "offline messages delivered but not acknowledged: {e}");
                    return;
                }
            }
        }
    }
}
