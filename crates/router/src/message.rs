//! One-to-one messages (RFC 6121 §5, delivery rules of §8.5): forking to every
//! available resource, sticky replies, offline storage for what nobody can take.

use super::*;

/// Sticky reply routes kept at most; past it, expired routes go first, then the
/// oldest.
const STICKY_MAX: usize = 100_000;

/// (recipient user, sender's bare address) -> (resource that replied, last activity)
pub(crate) type StickyMap = HashMap<(String, Address), (String, Instant)>;

impl Router {
    /// Record that `user` got a chat message from another user's resource: later
    /// messages from `user` to that user go to that resource only (sticky reply).
    pub(crate) fn note_reply(&self, user: &str, m: &Message) {
        if m.kind != MessageKind::Chat || !m.has_content() || m.delay.is_some() {
            return;
        }
        let Address::Local(LocalAddress {
            user: from_user,
            endpoint: Some(res),
        }) = &m.from
        else {
            return;
        };
        let mut sticky = self.inner.sticky.lock();
        if sticky.len() >= STICKY_MAX {
            prune_sticky(&mut sticky, self.inner.cfg.sticky_quiet);
        }
        sticky.insert(
            (user.to_string(), Address::user(from_user)),
            (res.clone(), Instant::now()),
        );
    }

    /// The resource `sender` sticks to when writing to `user`, if any is still valid.
    pub(crate) fn sticky_for(
        &self,
        dir: &Directory,
        sender: &Address,
        user: &str,
    ) -> Option<String> {
        let Address::Local(s) = sender else {
            return None;
        };
        let key = (s.user.clone(), Address::user(user));
        let mut sticky = self.inner.sticky.lock();
        let (res, at) = sticky.get_mut(&key)?;
        let online = dir
            .get(user, res)
            .is_some_and(|e| e.avail.as_ref().is_some_and(|a| a.preference >= 0));
        if !online || at.elapsed() > self.inner.cfg.sticky_quiet {
            sticky.remove(&key);
            return None;
        }
        *at = Instant::now();
        Some(res.clone())
    }

    /// Drop expired sticky routes (a periodic sweep, and when the map is full).
    pub(crate) fn sweep_sticky(&self) {
        prune_sticky(&mut self.inner.sticky.lock(), self.inner.cfg.sticky_quiet);
    }

    pub(crate) async fn route_message(&self, msg: Message) -> Result<(), RouteError> {
        let (im, history, max_bcast) = self.read(|s| {
            let st = s.settings();
            (
                st.im_enabled,
                st.allow_history_logging,
                st.broadcast_max_recipients,
            )
        });
        if !im {
            return Err(RouteError::ImDisabled);
        }
        let mut msg = msg;
        msg.no_store = !history;
        match msg.to.clone() {
            Address::Remote(r) => self.message_out(&msg, &r),
            Address::Server => {
                if msg.recipients.is_empty() {
                    return Err(RouteError::NoRecipients);
                }
                self.broadcast(msg, max_bcast).await
            }
            Address::Room { room, .. } => Err(RouteError::NotDeliverable(format!(
                "no chat room {room} here"
            ))),
            Address::Local(l) => {
                if self.read(|s| s.user(&l.user).is_none()) {
                    return Err(RouteError::NoSuchUser(l.user.clone()));
                }
                self.deliver_message(&l.user, l.endpoint.as_deref(), msg)
                    .await
            }
        }
    }

    /// Deliver to a local user by RFC 6121 §8.5.2 (bare) and §8.5.3 (full address).
    pub(crate) async fn deliver_message(
        &self,
        user: &str,
        resource: Option<&str>,
        msg: Message,
    ) -> Result<(), RouteError> {
        let kind = msg.kind;
        let delivered = {
            let dir = self.inner.dir.lock();
            let connected = resource.filter(|r| dir.get(user, r).is_some());
            let targets = match (connected, kind) {
                (Some(r), _) => vec![r.to_string()],
                // §8.5.2.1.1, §8.5.3.2.1: never forked, never stored.
                (None, MessageKind::Groupchat) => {
                    return Err(RouteError::NotDeliverable(
                        "a groupchat message to a user needs a connected resource".into(),
                    ));
                }
                (None, MessageKind::Error) => return Ok(()),
                (None, _) => match self.sticky_for(&dir, &msg.from, user) {
                    Some(r) if kind == MessageKind::Chat => vec![r],
                    _ => self.resources_for(&dir, user, None, true),
                },
            };
            let mut n = 0;
            for r in &targets {
                n += self.send_to(&dir, user, r, Delivery::Message(Box::new(msg.clone()))) as usize;
            }
            crate::hot::MESSAGES_ROUTED.increment(1);
            n > 0
        };
        if delivered || !msg.has_content() {
            // Chat states, receipts and the like are not worth keeping.
            return Ok(());
        }
        match kind {
            MessageKind::Chat | MessageKind::Normal => self.store_offline(user, msg).await,
            // §8.5.2.2.1: silently dropped.
            MessageKind::Headline | MessageKind::Error => Ok(()),
            MessageKind::Groupchat => Err(RouteError::NotStored("groupchat")),
        }
    }
}

fn prune_sticky(sticky: &mut StickyMap, quiet: Duration) {
    sticky.retain(|_, (_, at)| at.elapsed() <= quiet);
    if sticky.len() >= STICKY_MAX {
        // Still full of live routes: forget the quietest tenth.
        let mut ages: Vec<Instant> = sticky.values().map(|(_, at)| *at).collect();
        let cut = ages.len() / 10;
        ages.select_nth_unstable(cut);
        let limit = ages[cut];
        sticky.retain(|_, (_, at)| *at > limit);
    }
}

impl Session {
    /// Send a message; `from` is stamped here, `msg.to` is where the client
    /// addressed it.
    pub async fn send_message(&self, msg: Message) -> Result<(), RouteError> {
        self.send_message_tracked(msg, None).await
    }

    /// [`Session::send_message`], and `handled` is held until the message has been
    /// taken: written to a recipient's client, stored offline, or answered with the
    /// error returned here (see [`crate::receipt`]).
    pub async fn send_message_tracked(
        &self,
        mut msg: Message,
        handled: Option<Handled>,
    ) -> Result<(), RouteError> {
        msg.from = self.address();
        msg.delay = None;
        msg.receipt = None;
        msg.uid = self.router.inner.next_uid.fetch_add(1, Ordering::Relaxed);
        for a in &mut msg.recipients {
            a.delivered = false;
        }
        let receipt = match &msg.to {
            Address::Local(l) if msg.wants_receipt() => {
                let waiter = receipt::Waiter::Local(handled);
                let rc = Receipt::new(&self.router, &l.user, l.endpoint.as_deref(), &msg, waiter);
                msg.receipt = Some(rc.clone());
                Some(rc)
            }
            _ => None,
        };
        let r = self.router.route_message(msg).await;
        if let (Err(_), Some(rc)) = (&r, &receipt) {
            // The sender is told: nobody else answers for it.
            rc.done();
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(crate) fn sticky_routes_are_bounded() {
        let mut m = StickyMap::new();
        let now = Instant::now();
        for i in 0..STICKY_MAX {
            m.insert((format!("u{i}"), Address::user("x")), ("r".into(), now));
        }
        prune_sticky(&mut m, Duration::from_secs(300));
        assert!(m.len() < STICKY_MAX, "a full map of live routes is cut");
        let old = now - Duration::from_secs(600);
        m.insert(("old".into(), Address::user("x")), ("r".into(), old));
        prune_sticky(&mut m, Duration::from_secs(300));
        assert!(
            !m.contains_key(&("old".into(), Address::user("x"))),
            "expired routes go"
        );
    }
}
