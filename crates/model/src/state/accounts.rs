//! Creating and deleting accounts, and changing an account's credentials and policies.

use crate::names;
use crate::roster::Roster;
use crate::settings::{Override, PolicyKey};
use crate::{Credentials, Event, Outcome, Refusal, Reply};

use super::{Account, Key, OfflineQueue, State, UserData};

impl State {
    pub(super) fn create_account(
        &mut self,
        user: &str,
        credentials: &Credentials,
        ev: &mut Vec<Event>,
    ) -> Outcome {
        self.require_domain()?;
        names::validate_user(user)?;
        if self.users.contains_key(user) {
            return Err(Refusal::UserExists(user.to_string()));
        }
        let account = Account {
            credentials: credentials.clone(),
            availability_sharing: Override::Inherit,
            view_without_approval: Override::Inherit,
        };
        self.users.insert(
            user.to_string(),
            UserData {
                account,
                roster: Roster::default(),
                offline: OfflineQueue::default(),
            },
        );
        self.dirty.extend([
            Key::Account(user.to_string()),
            Key::Version(user.to_string()),
            Key::OfflineNext(user.to_string()),
        ]);
        ev.push(Event::AccountCreated {
            user: user.to_string(),
        });
        Ok(Reply::Done)
    }

    pub(super) fn set_credentials(
        &mut self,
        user: &str,
        credentials: &Credentials,
        ev: &mut Vec<Event>,
    ) -> Outcome {
        self.existing(user)?.account.credentials = credentials.clone();
        self.dirty.insert(Key::Account(user.to_string()));
        ev.push(Event::CredentialsChanged {
            user: user.to_string(),
        });
        Ok(Reply::Done)
    }

    pub(super) fn set_policy(
        &mut self,
        user: &str,
        key: PolicyKey,
        value: Override,
        ev: &mut Vec<Event>,
    ) -> Outcome {
        let acct = &mut self.existing(user)?.account;
        match key {
            PolicyKey::AvailabilitySharing => acct.availability_sharing = value,
            PolicyKey::ViewWithoutApproval => acct.view_without_approval = value,
        }
        self.dirty.insert(Key::Account(user.to_string()));
        ev.push(Event::PolicyChanged {
            user: user.to_string(),
            key,
            value,
        });
        Ok(Reply::Done)
    }

    pub(super) fn delete_account(&mut self, user: &str, ev: &mut Vec<Event>) -> Outcome {
        self.existing(user)?;
        let me = self.jid_of(user);
        // Out of every roster that lists the user, and their requests out of others' inboxes.
        let owners: Vec<String> = self.listed_by.of(user).map(str::to_string).collect();
        for o in owners {
            self.remove_item(&o, &me, ev);
        }
        let contacts: Vec<String> = self.users[user]
            .roster
            .items
            .keys()
            .map(str::to_string)
            .collect();
        for c in &contacts {
            if let Some(c) = self.local_user(c).map(str::to_string) {
                self.remove_pending(&c, &me);
            }
            self.remove_item(user, c, ev);
        }
        let data = self.users.remove(user).expect("checked above");
        for j in data.roster.pending_in {
            self.dirty.insert(Key::PendingIn(user.to_string(), j));
        }
        for s in data.offline.messages.keys() {
            self.dirty.insert(Key::Offline(user.to_string(), *s));
        }
        for k in [
            Key::Account(user.into()),
            Key::Version(user.into()),
            Key::OfflineNext(user.into()),
        ] {
            self.dirty.insert(k);
        }
        self.listed_by.forget(user);
        self.removals.remove(user);
        ev.push(Event::AccountDeleted {
            user: user.to_string(),
        });
        Ok(Reply::Done)
    }
}
