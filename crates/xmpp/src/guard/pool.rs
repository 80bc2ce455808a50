//! The password-derivation slots: a bounded pool with a waiting line in three classes:
//! addresses that logged in lately (trusted), addresses without recent failures
//! (clean), the others (suspect). A class goes before the ones after it, and one
//! arriving at a full line takes the place of the newest waiter of a later class.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::{Refused, lock};

/// How far an attempt's address is trusted (the order of service).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Class {
    /// Logged in successfully within the failure window.
    Trusted = 0,
    /// No failures within the window.
    Clean = 1,
    Suspect = 2,
}

/// The derivation slots: a bounded pool with a three-class waiting line.
pub(super) struct Pool {
    pub(super) max: usize,
    pub(super) queue: usize,
    pub(super) st: Mutex<PoolState>,
}

#[derive(Default)]
pub(super) struct PoolState {
    pub(super) running: usize,
    /// Waiters by class (index: `Class as usize`).
    pub(super) waiting: [VecDeque<oneshot::Sender<PoolPermit>>; 3],
}

/// One running derivation; handed to the next waiter when dropped.
pub(super) struct PoolPermit(Arc<Pool>);

impl Pool {
    pub(super) async fn acquire(self: &Arc<Self>, class: Class) -> Result<PoolPermit, Refused> {
        let rx = {
            let mut st = lock(&self.st);
            if st.running < self.max {
                st.running += 1;
                return Ok(PoolPermit(self.clone()));
            }
            let queued: usize = st.waiting.iter().map(VecDeque::len).sum();
            if queued >= self.queue {
                // Full: displace the newest waiter of the least trusted class after
                // this one (it then sees its sender gone: busy).
                let displaced = (class as usize + 1..3)
                    .rev()
                    .any(|c| st.waiting[c].pop_back().is_some());
                if !displaced {
                    return Err(Refused::AuthBusy);
                }
            }
            let (tx, rx) = oneshot::channel();
            st.waiting[class as usize].push_back(tx);
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
            match st.waiting.iter_mut().find_map(VecDeque::pop_front) {
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
