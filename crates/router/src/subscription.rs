//! Roster changes and the subscription handshake (RFC 6121 §2, §3). Each is a Raft
//! command; the roster pushes, the notices (subscribed, unsubscribe, unsubscribed)
//! and the presence that becomes visible or not all come from the applied log
//! (`events`), on every node, whoever made the change.

use super::*;

impl Session {
    /// The roster key (model form) of a contact address.
    fn contact_jid(&self, contact: &Address) -> Result<String, RouteError> {
        self.router.jid_of_addr(&contact.bare())
    }

    /// Roster set (create or rename an item).
    pub async fn roster_set(
        &self,
        contact: &Address,
        name: Option<String>,
        groups: Vec<String>,
    ) -> Result<(), RouteError> {
        let contact = self.contact_jid(contact)?;
        self.router
            .write_ok(Command::UpdateItem {
                user: self.user.clone(),
                contact,
                name,
                groups,
            })
            .await
            .map(drop)
    }

    /// Roster remove (RFC 6121 §2.5): the subscriptions both ways end too.
    pub async fn roster_remove(&self, contact: &Address) -> Result<(), RouteError> {
        let contact = self.contact_jid(contact)?;
        self.router
            .write_ok(Command::RemoveContact {
                user: self.user.clone(),
                contact,
            })
            .await
            .map(drop)
    }

    /// Ask to see `contact`'s availability. Approved at once when the contact allows
    /// viewing without approval; otherwise the request waits in the contact's roster.
    pub async fn subscribe(&self, contact: &Address) -> Result<bool, RouteError> {
        let contact = self.contact_jid(contact)?;
        let reply = self
            .router
            .write_ok(Command::Subscribe {
                user: self.user.clone(),
                contact,
            })
            .await?;
        Ok(matches!(reply, Reply::Subscription { approved: true }))
    }

    /// Approve `requester`'s request to see this user.
    pub async fn approve(&self, requester: &Address) -> Result<(), RouteError> {
        let requester = self.contact_jid(requester)?;
        match self
            .router
            .write(Command::Approve {
                user: self.user.clone(),
                requester,
            })
            .await?
        {
            Ok(_) => Ok(()),
            // RFC 6121 §3.1.5: an approval with no pending request is ignored.
            Err(Refusal::NoPendingRequest(..)) => Ok(()),
            Err(e) => Err(RouteError::Refused(e)),
        }
    }

    /// Stop seeing `contact`.
    pub async fn unsubscribe(&self, contact: &Address) -> Result<(), RouteError> {
        let contact = self.contact_jid(contact)?;
        self.router
            .write_ok(Command::Unsubscribe {
                user: self.user.clone(),
                contact,
            })
            .await
            .map(drop)
    }

    /// Deny or revoke `watcher`'s subscription to this user.
    pub async fn revoke(&self, watcher: &Address) -> Result<(), RouteError> {
        let watcher = self.contact_jid(watcher)?;
        self.router
            .write_ok(Command::Revoke {
                user: self.user.clone(),
                watcher,
            })
            .await
            .map(drop)
    }
}
