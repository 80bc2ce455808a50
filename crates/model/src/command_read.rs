//! Reading a [`Command`] tag first ([`crate::tag_first`]): the Raft log's entries and
//! the proposals forwarded to the leader are read on every node, batches of up to
//! thousands of commands each, and serde's derived reader buffered every command whole
//! (and a batch's commands once more inside the batch).

use serde::{Deserialize, Deserializer};

use crate::Command;
use crate::tag_first::{TagFirst, TagFirstVisitor};

/// The tags, as written (`rename_all = "snake_case"` on [`Command`]).
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Init,
    SetSetting,
    ResetSetting,
    CreateAccount,
    DeleteAccount,
    SetCredentials,
    SetPolicy,
    AddContacts,
    UpdateItem,
    RemoveContact,
    Subscribe,
    Approve,
    Unsubscribe,
    Revoke,
    OfflineEnqueue,
    OfflineAck,
    OfflineAckSeqs,
    Batch,
}

/// The fields of each variant shape, named as in [`Command`] (a field missing here,
/// or extra, does not compile: every one is moved into its variant).
mod body {
    use serde::Deserialize;

    use crate::{Command, Credentials, NewContact, OfflineMessage, Override, PolicyKey};

    #[derive(Deserialize)]
    pub(super) struct Init {
        pub(super) domain: String,
    }

    #[derive(Deserialize)]
    pub(super) struct Setting {
        pub(super) key: String,
        pub(super) value: String,
    }

    #[derive(Deserialize)]
    pub(super) struct Key {
        pub(super) key: String,
    }

    #[derive(Deserialize)]
    pub(super) struct User {
        pub(super) user: String,
    }

    #[derive(Deserialize)]
    pub(super) struct Account {
        pub(super) user: String,
        pub(super) credentials: Credentials,
    }

    #[derive(Deserialize)]
    pub(super) struct Policy {
        pub(super) user: String,
        pub(super) key: PolicyKey,
        pub(super) value: Override,
    }

    #[derive(Deserialize)]
    pub(super) struct AddContacts {
        pub(super) entries: Vec<NewContact>,
    }

    #[derive(Deserialize)]
    pub(super) struct UpdateItem {
        pub(super) user: String,
        pub(super) contact: String,
        pub(super) name: Option<String>,
        pub(super) groups: Vec<String>,
    }

    #[derive(Deserialize)]
    pub(super) struct Contact {
        pub(super) user: String,
        pub(super) contact: String,
    }

    #[derive(Deserialize)]
    pub(super) struct Approve {
        pub(super) user: String,
        pub(super) requester: String,
    }

    #[derive(Deserialize)]
    pub(super) struct Revoke {
        pub(super) user: String,
        pub(super) watcher: String,
    }

    #[derive(Deserialize)]
    pub(super) struct Enqueue {
        pub(super) user: String,
        pub(super) message: OfflineMessage,
    }

    #[derive(Deserialize)]
    pub(super) struct Ack {
        pub(super) user: String,
        pub(super) upto: u64,
    }

    #[derive(Deserialize)]
    pub(super) struct AckSeqs {
        pub(super) user: String,
        pub(super) seqs: Vec<u64>,
    }

    #[derive(Deserialize)]
    pub(super) struct Batch {
        pub(super) commands: Vec<Command>,
    }
}

impl TagFirst for Command {
    const TAG: &'static str = "op";
    type Tag = Op;

    fn read<'de, D: Deserializer<'de>>(op: Op, rest: D) -> Result<Command, D::Error> {
        let contact = |b: body::Contact| (b.user, b.contact);
        Ok(match op {
            Op::Init => Command::Init {
                domain: body::Init::deserialize(rest)?.domain,
            },
            Op::SetSetting => {
                let b = body::Setting::deserialize(rest)?;
                Command::SetSetting {
                    key: b.key,
                    value: b.value,
                }
            }
            Op::ResetSetting => Command::ResetSetting {
                key: body::Key::deserialize(rest)?.key,
            },
            Op::CreateAccount => {
                let b = body::Account::deserialize(rest)?;
                Command::CreateAccount {
                    user: b.user,
                    credentials: b.credentials,
                }
            }
            Op::DeleteAccount => Command::DeleteAccount {
                user: body::User::deserialize(rest)?.user,
            },
            Op::SetCredentials => {
                let b = body::Account::deserialize(rest)?;
                Command::SetCredentials {
                    user: b.user,
                    credentials: b.credentials,
                }
            }
            Op::SetPolicy => {
                let b = body::Policy::deserialize(rest)?;
                Command::SetPolicy {
                    user: b.user,
                    key: b.key,
                    value: b.value,
                }
            }
            Op::AddContacts => Command::AddContacts {
                entries: body::AddContacts::deserialize(rest)?.entries,
            },
            Op::UpdateItem => {
                let b = body::UpdateItem::deserialize(rest)?;
                Command::UpdateItem {
                    user: b.user,
                    contact: b.contact,
                    name: b.name,
                    groups: b.groups,
                }
            }
            Op::RemoveContact => {
                let (user, contact) = contact(body::Contact::deserialize(rest)?);
                Command::RemoveContact { user, contact }
            }
            Op::Subscribe => {
                let (user, contact) = contact(body::Contact::deserialize(rest)?);
                Command::Subscribe { user, contact }
            }
            Op::Unsubscribe => {
                let (user, contact) = contact(body::Contact::deserialize(rest)?);
                Command::Unsubscribe { user, contact }
            }
            Op::Approve => {
                let b = body::Approve::deserialize(rest)?;
                Command::Approve {
                    user: b.user,
                    requester: b.requester,
                }
            }
            Op::Revoke => {
                let b = body::Revoke::deserialize(rest)?;
                Command::Revoke {
                    user: b.user,
                    watcher: b.watcher,
                }
            }
            Op::OfflineEnqueue => {
                let b = body::Enqueue::deserialize(rest)?;
                Command::OfflineEnqueue {
                    user: b.user,
                    message: b.message,
                }
            }
            Op::OfflineAck => {
                let b = body::Ack::deserialize(rest)?;
                Command::OfflineAck {
                    user: b.user,
                    upto: b.upto,
                }
            }
            Op::OfflineAckSeqs => {
                let b = body::AckSeqs::deserialize(rest)?;
                Command::OfflineAckSeqs {
                    user: b.user,
                    seqs: b.seqs,
                }
            }
            Op::Batch => Command::Batch {
                commands: body::Batch::deserialize(rest)?.commands,
            },
        })
    }
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Command, D::Error> {
        d.deserialize_map(TagFirstVisitor::new())
    }
}

#[cfg(test)]
mod tests;
