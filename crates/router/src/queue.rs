//! A bounded single-consumer queue that costs almost nothing while empty.
//!
//! Every session has one for its deliveries and one between its XML reader and its
//! writer. tokio's mpsc allocates a block of 32 slots per channel up front (over 2 KiB
//! for a delivery); this queue holds a `VecDeque` that is only allocated while items
//! wait and is released when it drains, which keeps idle sessions small.
//! `recv` is cancel-safe: an item is only taken by the call that returns it.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

struct Inner<T> {
    state: Mutex<State<T>>,
    /// Wakes the receiver (an item arrived, or the queue closed).
    item: Notify,
    /// Wakes a sender waiting for room.
    room: Notify,
    cap: usize,
}

struct State<T> {
    items: VecDeque<T>,
    closed: bool,
}

/// Why `try_send` did not queue the item.
#[derive(Debug, PartialEq, Eq)]
pub enum TrySendError {
    Full,
    Closed,
}

/// The producing side. Dropping it closes the queue (the receiver still gets what
/// was queued, then `None`).
pub struct Sender<T>(Arc<Inner<T>>);

pub struct Receiver<T>(Arc<Inner<T>>);

pub fn queue<T>(cap: usize) -> (Sender<T>, Receiver<T>) {
    let inner = Arc::new(Inner {
        state: Mutex::new(State {
            items: VecDeque::new(),
            closed: false,
        }),
        item: Notify::new(),
        room: Notify::new(),
        cap: cap.max(1),
    });
    (Sender(inner.clone()), Receiver(inner))
}

impl<T> Sender<T> {
    pub fn try_send(&self, v: T) -> Result<(), TrySendError> {
        {
            let mut s = self.0.state.lock();
            if s.closed {
                return Err(TrySendError::Closed);
            }
            if s.items.len() >= self.0.cap {
                return Err(TrySendError::Full);
            }
            s.items.push_back(v);
        }
        self.0.item.notify_one();
        Ok(())
    }

    /// Queue `v`, waiting for room; `Err(v)` if the receiver is gone.
    pub async fn send(&self, v: T) -> Result<(), T> {
        let mut v = Some(v);
        loop {
            // notify_one leaves a permit when nobody waits, so a wake-up between the
            // check and the wait is not lost.
            let room = self.0.room.notified();
            {
                let mut s = self.0.state.lock();
                let Some(item) = v.take() else {
                    unreachable!("the item is only taken to return");
                };
                if s.closed {
                    return Err(item);
                }
                if s.items.len() < self.0.cap {
                    s.items.push_back(item);
                    drop(s);
                    self.0.item.notify_one();
                    return Ok(());
                }
                v = Some(item);
            }
            room.await;
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.0.state.lock().closed = true;
        self.0.item.notify_one();
    }
}

impl<T> Receiver<T> {
    /// The next item, or `None` once the queue is closed and drained.
    pub async fn recv(&mut self) -> Option<T> {
        let inner = self.0.clone();
        loop {
            let notified = inner.item.notified();
            if let Some(v) = self.try_recv_inner() {
                return v;
            }
            notified.await;
        }
    }

    /// An item if one is waiting.
    pub fn try_recv(&mut self) -> Option<T> {
        self.try_recv_inner().flatten()
    }

    /// `Some(Some(v))`: an item; `Some(None)`: closed and drained; `None`: empty.
    fn try_recv_inner(&mut self) -> Option<Option<T>> {
        let mut s = self.0.state.lock();
        match s.items.pop_front() {
            Some(v) => {
                if s.items.is_empty() && s.items.capacity() > 0 {
                    // Idle again: give the memory back (even the first push's four
                    // slots, ~0.5 KiB a session; an allocation per burst is cheap).
                    s.items = VecDeque::new();
                }
                drop(s);
                self.0.room.notify_one();
                Some(Some(v))
            }
            None if s.closed => Some(None),
            None => None,
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut s = self.0.state.lock();
        s.closed = true;
        s.items.clear();
        drop(s);
        self.0.room.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_ordered_and_closed_by_the_sender() {
        let (tx, mut rx) = queue::<u32>(2);
        assert_eq!(tx.try_send(1), Ok(()));
        assert_eq!(tx.try_send(2), Ok(()));
        assert_eq!(tx.try_send(3), Err(TrySendError::Full));
        assert_eq!(rx.recv().await, Some(1));
        let waiter = tokio::spawn(async move {
            tx.send(3).await.unwrap();
            tx.send(4).await.unwrap();
        });
        assert_eq!(rx.recv().await, Some(2));
        assert_eq!(rx.recv().await, Some(3));
        assert_eq!(rx.recv().await, Some(4));
        waiter.await.unwrap();
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn a_dropped_receiver_closes_for_the_sender() {
        let (tx, rx) = queue::<u32>(1);
        tx.try_send(1).unwrap();
        let t = tokio::spawn(async move { tx.send(2).await });
        tokio::task::yield_now().await;
        drop(rx);
        assert_eq!(t.await.unwrap(), Err(2));
    }
}
