//! Broadcast messages: one message to many recipients (XEP-0033 on the XMPP side).

use super::*;

impl Router {
    pub(crate) async fn broadcast(&self, msg: Message, max: u32) -> Result<(), RouteError> {
        let mut recipients: Vec<Address> = Vec::new();
        for a in &msg.recipients {
            let deliver = matches!(
                a.kind,
                RecipientKind::To | RecipientKind::Cc | RecipientKind::Bcc
            );
            if deliver && !recipients.contains(&a.address) {
                recipients.push(a.address.clone());
            }
        }
        if recipients.is_empty() {
            return Err(RouteError::NoRecipients);
        }
        if recipients.len() > max as usize {
            return Err(RouteError::TooManyRecipients(recipients.len(), max));
        }
        // Recipients see the to/cc list but not the bcc list (XEP-0033 §4.6).
        let shown: Vec<Recipient> = msg
            .recipients
            .iter()
            .filter(|a| a.kind != RecipientKind::Bcc)
            .map(|a| Recipient {
                delivered: true,
                ..a.clone()
            })
            .collect();
        metrics::counter!("presenced_broadcasts_total").increment(1);
        let mut first_err = None;
        for to in recipients {
            let mut copy = msg.clone();
            copy.to = to.clone();
            copy.recipients = shown.clone();
            let res = match &to {
                Address::Local(l) => {
                    if self.read(|s| s.user(&l.user).is_none()) {
                        Err(RouteError::NoSuchUser(l.user.clone()))
                    } else {
                        self.deliver_message(&l.user, l.endpoint.as_deref(), copy)
                            .await
                    }
                }
                Address::Remote(r) => self.message_out(&copy, r),
                Address::Server => Err(RouteError::BadAddress(self.inner.domain.clone())),
                Address::Room { room, .. } => Err(RouteError::NotDeliverable(format!(
                    "no chat room {room} here"
                ))),
            };
            if let Err(e) = res {
                tracing::debug!(?to, "broadcast copy not delivered: {e}");
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            // Delivered to everyone that could get it; one refusal is reported.
            Some(e @ RouteError::OfflineRefused(_)) => Err(e),
            _ => Ok(()),
        }
    }
}
