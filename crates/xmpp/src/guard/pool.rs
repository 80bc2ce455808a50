//! The password-derivation slots: a bounded pool with a two-class waiting line.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::{Refused, lock};

/// The derivation slots: a bounded pool with a two-class waiting line.
pub(super) struct Pool {
    pub(super) max: usize,
    pub(super) queue: usize,
    pub(super) st: Mutex<PoolState>,
}

#[derive(Default)]
pub(super) struct PoolState {
    pub(super) running: usize,
    pub(super) clean: VecDeque<oneshot::Sender<PoolPermit>>,
    pub(super) suspect: VecDeque<oneshot::Sender<PoolPermit>>,
}

/// One running derivation; handed to the next waiter when dropped.
pub(super) struct PoolPermit(Arc<Pool>);

impl Pool {
    pub(super) async fn acquire(self: &Arc<Self>, clean: bool) -> Result<PoolPermit, Refused> {
        let rx = {
            let mut st = lock(&self.st);
            if st.running < self.max {
                st.running += 1;
                return Ok(PoolPermit(self.clone()));
            }
            if st.clean.len() + st.suspect.len() >= self.queue {
                // Full: a clean attempt displaces the newest suspect one (whose
                // waiter then sees its sender gone: busy).
                if !clean || st.suspect.pop_back().is_none() {
                    return Err(Refused::AuthBusy);
                }
            }
            let (tx, rx) = oneshot::channel();
            if clean {
                st.clean.push_back(tx);
            } else {
                st.suspect.push_back(tx);
            }
            rx
        };
        rx.await.map_err(|_| Refused::AuthBusy)
    }
}

impl Drop for PoolPermit {
    fn drop(&mut self) {
        let pool = &self.0;
        let next = {
            let mut st = lock(&pool.st);
            match st.clean.pop_front().or_else(|| st.suspect.pop_front()) {
                Some(tx) => tx,
                None => {
                    st.running -= 1;
                    return;
                }
            }
        };
        // A waiter that went away returns the permit, which is dropped in turn and
        // goes to the next one.
        let _ = next.send(PoolPermit(pool.clone()));
    }
}
