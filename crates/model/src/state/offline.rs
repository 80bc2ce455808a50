//! The offline message queue: enqueueing and acknowledging.

use crate::{Event, Outcome, Refusal, Reply};

use super::{Key, OfflineMessage, State};

impl State {
    pub(super) fn offline_enqueue(
        &mut self,
        user: &str,
        message: &OfflineMessage,
        ev: &mut Vec<Event>,
    ) -> Outcome {
        if self.settings.suppress_offline_im {
            return Err(Refusal::OfflineSuppressed);
        }
        let cap = self.settings.offline_queue_max_per_user;
        let q = &mut self.existing(user)?.offline;
        if q.messages.len() >= cap as usize {
            return Err(Refusal::OfflineQueueFull(user.to_string(), cap));
        }
        let seq = q.next_seq;
        q.next_seq = q.next_seq.saturating_add(1);
        q.messages.insert(seq, message.clone());
        self.dirty.insert(Key::Offline(user.to_string(), seq));
        self.dirty.insert(Key::OfflineNext(user.to_string()));
        ev.push(Event::OfflineQueued {
            user: user.to_string(),
            seq,
        });
        Ok(Reply::Queued { seq })
    }

    pub(super) fn offline_ack(&mut self, user: &str, upto: u64, ev: &mut Vec<Event>) -> Outcome {
        let q = &mut self.existing(user)?.offline;
        let gone: Vec<u64> = q.messages.range(..=upto).map(|(s, _)| *s).collect();
        for s in &gone {
            q.messages.remove(s);
        }
        self.dirty
            .extend(gone.iter().map(|s| Key::Offline(user.to_string(), *s)));
        if !gone.is_empty() {
            ev.push(Event::OfflineAcked {
                user: user.to_string(),
                upto,
            });
        }
        Ok(Reply::Done)
    }

    pub(super) fn offline_ack_seqs(
        &mut self,
        user: &str,
        seqs: &[u64],
        ev: &mut Vec<Event>,
    ) -> Outcome {
        let q = &mut self.existing(user)?.offline;
        let gone: Vec<u64> = seqs
            .iter()
            .copied()
            .filter(|s| q.messages.remove(s).is_some())
            .collect();
        self.dirty
            .extend(gone.iter().map(|s| Key::Offline(user.to_string(), *s)));
        if let Some(&upto) = gone.iter().max() {
            ev.push(Event::OfflineAcked {
                user: user.to_string(),
                upto,
            });
        }
        Ok(Reply::Done)
    }
}
