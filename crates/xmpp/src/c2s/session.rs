//! The bound session: the reader task, the loop joining client stanzas and router
//! deliveries, keepalive pings and idle timeouts, and the dispatch by stanza kind.

use super::*;

impl Conn {
    pub(super) async fn session_loop(
        &mut self,
        session: Session,
        mut rx: Receiver<Delivery>,
    ) -> End {
        let (reader_task, mut srx) = spawn_reader(self.reader.take());
        let end = self.session_inner(&session, &mut srx, &mut rx).await;
        reader_task.abort();
        drop(session);
        end
    }

    pub(super) async fn session_inner(
        &mut self,
        s: &Session,
        srx: &mut Receiver<Result<Item, XmlError>>,
        rx: &mut Receiver<Delivery>,
    ) -> End {
        let cfg = self.shared.cfg.clone();
        let mut last_in = Instant::now();
        let mut pinged = false;
        let mut tick = tokio::time::interval(cfg.ping_after.min(Duration::from_secs(30)) / 2);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // XEP-0198: the oldest of the client's messages being handled is.
                Some(()) = sm::next_handled(&mut self.sm), if sm::handling_any(&self.sm) => {
                    self.sm_handled();
                }
                f = srx.recv() => {
                    last_in = Instant::now();
                    pinged = false;
                    match f {
                        Some(Ok(Item::Stanza(el))) if el.ns == sm::NS_SM => {
                            if let Err(e) = self.sm_element(&el) {
                                return e;
                            }
                        }
                        Some(Ok(Item::Stanza(el))) => {
                            super::hot::STANZAS_IN.increment(1);
                            self.sm_received(&el);
                            // Boxed: handling may await a Raft write, a large future
                            // that an idle session should not carry.
                            let r = Box::pin(self.stanza(s, *el)).await;
                            // Not taken (not a message to route): handled now.
                            self.handled = None;
                            if let Err(e) = r {
                                return e;
                            }
                        }
                        Some(Ok(Item::Keepalive)) => {}
                        Some(Ok(Item::End)) | None => return End::Closed,
                        Some(Ok(Item::Header)) => return End::Error(StreamError::BadFormat, "unexpected stream header".into()),
                        Some(Err(e)) => return e.into(),
                    }
                }
                d = rx.recv() => {
                    let Some(d) = d else {
                        guard::closed("queue_full");
                        return End::Error(StreamError::PolicyViolation, "the client did not read its stanzas fast enough".into());
                    };
                    if let Err(e) = self.deliver(s, d) {
                        return e;
                    }
                    // Drain what else is queued into the same write.
                    for _ in 0..64 {
                        match rx.try_recv() {
                            Some(d) => if let Err(e) = self.deliver(s, d) { return e; },
                            None => break,
                        }
                    }
                }
                _ = tick.tick() => {
                    let idle = last_in.elapsed();
                    if idle >= cfg.idle_timeout {
                        guard::closed("idle_timeout");
                        return End::Error(StreamError::ConnectionTimeout, "no traffic from the client".into());
                    }
                    if idle >= cfg.ping_after && !pinged {
                        pinged = true;
                        let ping = Element::new("iq", NS_CLIENT)
                            .with_attr("type", "get")
                            .with_attr("id", format!("ping-{:x}", rand::random::<u32>()))
                            .with_attr("from", self.domain().to_string())
                            .with_attr("to", self.full_jid(s))
                            .with_child(Element::new("ping", NS_PING));
                        self.out.push(&ping);
                    }
                }
            }
            if self.out.flush().await.is_err() {
                return End::Lost;
            }
            // The messages just written are the client's now (or wait for its
            // acknowledgement, which `sm_written` asks for).
            if let Err(e) = self.sm_written() {
                return e;
            }
            if self.out.flush().await.is_err() {
                return End::Lost;
            }
        }
    }

    /// Turn a router delivery into stanzas.
    pub(super) fn deliver(&mut self, s: &Session, d: Delivery) -> Result<(), End> {
        match d {
            Delivery::Presence { from, state } => self.deliver_presence(s, &from, state),
            Delivery::Subscription { from, kind } => self.deliver_subscription(s, &from, kind),
            Delivery::Message(mut m) => {
                let el = self.message_element(&m);
                self.out.push(&el);
                if let Some(r) = m.take_receipt() {
                    self.taken.push((self.out.stanzas, r));
                }
            }
            Delivery::Query(q) => self.deliver_query(s, &q),
            Delivery::RosterPush { jid, item, version } => self.roster_push(s, jid, item, version),
            Delivery::Replaced => {
                return Err(End::Error(
                    StreamError::Conflict,
                    "replaced by a new login with the same resource".into(),
                ));
            }
            Delivery::Close { reason } => {
                return Err(End::Error(StreamError::NotAuthorized, reason));
            }
        }
        Ok(())
    }

    /// Handle one stanza from the client.
    pub(super) async fn stanza(&mut self, s: &Session, mut el: Element) -> Result<(), End> {
        if el.ns != NS_CLIENT {
            return Err(End::Error(
                StreamError::UnsupportedStanzaType,
                format!("<{}/> in {}", el.name, el.ns),
            ));
        }
        // RFC 6120 §8.1.2.1: the server stamps `from`; a client may not claim another.
        let full = self.full_jid(s);
        if let Some(f) = el.attr("from") {
            let ok = jid::Jid::new(f).is_ok_and(|j| {
                let j = j.to_string();
                j == full || j == self.bare_jid(s)
            });
            if !ok {
                return Err(End::Error(
                    StreamError::InvalidFrom,
                    format!("{f} is not this session's address"),
                ));
            }
        }
        el.set_attr("from", full);
        match el.name.as_str() {
            "message" => self.message(s, &el).await,
            "presence" => self.presence(s, &el).await,
            "iq" => self.iq(s, &el).await,
            other => Err(End::Error(
                StreamError::UnsupportedStanzaType,
                format!("<{other}/>"),
            )),
        }
    }
}

/// Start the session's reader task. The XML reader is not cancel-safe: it lives in its
/// own task for the whole session and hands over complete stanzas. A plain function,
/// so the session loop's future does not keep room for the reader's.
fn spawn_reader(
    reader: Option<Box<Reader>>,
) -> (
    tokio::task::JoinHandle<()>,
    Receiver<Result<Item, XmlError>>,
) {
    let (stx, srx) = queue::queue::<Result<Item, XmlError>>(8);
    let task = tokio::spawn(async move {
        let Some(mut reader) = reader else { return };
        loop {
            let f = reader.next().await.map(|f| match f {
                Frame::Stanza(el) => Item::Stanza(Box::new(el)),
                Frame::Keepalive => Item::Keepalive,
                Frame::Header(_) => Item::Header,
                Frame::End => Item::End,
            });
            let more = matches!(f, Ok(Item::Stanza(_)) | Ok(Item::Keepalive));
            if stx.send(f).await.is_err() || !more {
                return;
            }
        }
    });
    (task, srx)
}
