//! The durable, cluster-wide state of presenced and the commands that change it.
//!
//! Everything here is deterministic: [`State::apply`] depends only on the state and the
//! command, so every node that applies the same Raft log ends in the same state. Limits
//! (contact-list size, watchers, offline queue) are decided here and nowhere else.
//! Nothing in this crate knows about Raft, sled, XML or SIP.

mod command_read;
pub mod credentials;
pub mod names;
pub mod roster;
pub mod settings;
mod split;
mod state;
pub mod tag_first;

use serde::{Deserialize, Serialize};

pub use credentials::Credentials;
pub use roster::{Roster, RosterItem, Subscription};
pub use settings::{Limit, Override, PolicyKey, Settings};
pub use split::{encoded_len, join_replies};
pub use state::{Account, OfflineMessage, OfflineQueue, RosterChanges, State, UserData};

/// Why a command (or one entry of a bulk command) was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "code", content = "detail", rename_all = "snake_case")]
pub enum Refusal {
    #[error("unknown setting {0}")]
    UnknownSetting(String),
    #[error("bad value: {0}")]
    BadValue(String),
    #[error("unknown user {0}")]
    UnknownUser(String),
    #[error("user {0} already exists")]
    UserExists(String),
    #[error("unknown contact {0}: no such account in this domain")]
    UnknownContact(String),
    #[error("{0} is not in {1}'s contact list")]
    NotInRoster(String, String),
    #[error("a user cannot add themselves as a contact")]
    SelfContact,
    #[error("{0} is at the maximum contact-list size ({1})")]
    ContactListFull(String, String),
    #[error("{0} is at the maximum number of watchers ({1})")]
    WatchersFull(String, String),
    #[error("{0} has no pending subscription request from {1}")]
    NoPendingRequest(String, String),
    #[error("the offline queue of {0} is full ({1} messages)")]
    OfflineQueueFull(String, u32),
    #[error("offline messages are suppressed by the cluster's settings")]
    OfflineSuppressed,
    #[error("the cluster has no domain yet: run `presencectl cluster init`")]
    NotInitialized,
    #[error("the cluster serves domain {0}, not {1}")]
    DomainMismatch(String, String),
}

impl Refusal {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::UnknownSetting(_) => "unknown_setting",
            Refusal::BadValue(_) => "bad_value",
            Refusal::UnknownUser(_) => "unknown_user",
            Refusal::UserExists(_) => "user_exists",
            Refusal::UnknownContact(_) => "unknown_contact",
            Refusal::NotInRoster(..) => "not_in_roster",
            Refusal::SelfContact => "self_contact",
            Refusal::ContactListFull(..) => "contact_list_full",
            Refusal::WatchersFull(..) => "watchers_full",
            Refusal::NoPendingRequest(..) => "no_pending_request",
            Refusal::OfflineQueueFull(..) => "offline_queue_full",
            Refusal::OfflineSuppressed => "offline_suppressed",
            Refusal::NotInitialized => "not_initialized",
            Refusal::DomainMismatch(..) => "domain_mismatch",
        }
    }

    /// The broad class of the refusal, for mapping onto gRPC / CLI / stanza errors.
    pub fn class(&self) -> RefusalClass {
        match self {
            Refusal::UnknownSetting(_) | Refusal::BadValue(_) | Refusal::SelfContact => {
                RefusalClass::Invalid
            }
            Refusal::UnknownUser(_) | Refusal::UnknownContact(_) | Refusal::NotInRoster(..) => {
                RefusalClass::NotFound
            }
            Refusal::UserExists(_) => RefusalClass::Exists,
            _ => RefusalClass::Precondition,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalClass {
    Invalid,
    NotFound,
    Exists,
    Precondition,
}

/// One contact to add through operator provisioning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewContact {
    /// Local user name of the roster owner.
    pub user: String,
    /// Bare JID of the contact.
    pub contact: String,
    pub name: Option<String>,
    pub groups: Vec<String>,
}

/// A change to the durable state, proposed to the Raft leader and applied on every node.
/// Written internally tagged by `op`, read tag first (`command_read`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// Record the cluster's domain; proposed once by `cluster init`.
    Init {
        domain: String,
    },
    SetSetting {
        key: String,
        value: String,
    },
    ResetSetting {
        key: String,
    },
    CreateAccount {
        user: String,
        credentials: Credentials,
    },
    DeleteAccount {
        user: String,
    },
    SetCredentials {
        user: String,
        credentials: Credentials,
    },
    SetPolicy {
        user: String,
        key: PolicyKey,
        value: Override,
    },
    /// Operator provisioning: each entry makes `user` see `contact` (subscription `to`,
    /// and `from` on the contact's side). Entries are applied in order; the ones that
    /// would cross a limit are refused and reported, the rest are added.
    AddContacts {
        entries: Vec<NewContact>,
    },
    /// A client's roster set: create or rename an item without touching subscriptions.
    UpdateItem {
        user: String,
        contact: String,
        name: Option<String>,
        groups: Vec<String>,
    },
    RemoveContact {
        user: String,
        contact: String,
    },
    /// `user` asks to see `contact` (RFC 6121 §3.1).
    Subscribe {
        user: String,
        contact: String,
    },
    /// `user` approves `requester`'s pending request (RFC 6121 §3.1.4).
    Approve {
        user: String,
        requester: String,
    },
    /// `user` stops seeing `contact` (RFC 6121 §3.3).
    Unsubscribe {
        user: String,
        contact: String,
    },
    /// `user` denies or revokes `watcher`'s subscription (RFC 6121 §3.2).
    Revoke {
        user: String,
        watcher: String,
    },
    OfflineEnqueue {
        user: String,
        message: OfflineMessage,
    },
    /// Remove offline messages of `user` up to and including `upto`.
    OfflineAck {
        user: String,
        upto: u64,
    },
    /// Remove exactly these offline messages of `user` (what was delivered when some
    /// queued message could not be read: that one stays queued).
    OfflineAckSeqs {
        user: String,
        seqs: Vec<u64>,
    },
    /// Several commands proposed together (the leader batches concurrent proposals into
    /// one log entry). Each is applied in order with its own outcome; batches do not nest.
    Batch {
        commands: Vec<Command>,
    },
}

impl Command {
    /// A short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Init { .. } => "init",
            Command::SetSetting { .. } => "set_setting",
            Command::ResetSetting { .. } => "reset_setting",
            Command::CreateAccount { .. } => "create_account",
            Command::DeleteAccount { .. } => "delete_account",
            Command::SetCredentials { .. } => "set_credentials",
            Command::SetPolicy { .. } => "set_policy",
            Command::AddContacts { .. } => "add_contacts",
            Command::UpdateItem { .. } => "update_item",
            Command::RemoveContact { .. } => "remove_contact",
            Command::Subscribe { .. } => "subscribe",
            Command::Approve { .. } => "approve",
            Command::Unsubscribe { .. } => "unsubscribe",
            Command::Revoke { .. } => "revoke",
            Command::OfflineEnqueue { .. } => "offline_enqueue",
            Command::OfflineAck { .. } => "offline_ack",
            Command::OfflineAckSeqs { .. } => "offline_ack_seqs",
            Command::Batch { .. } => "batch",
        }
    }
}

/// A contact that a bulk add refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedContact {
    pub user: String,
    pub contact: String,
    pub reason: Refusal,
}

/// What a successfully applied command reports back to its proposer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reply {
    #[default]
    Done,
    Setting {
        key: String,
        value: String,
    },
    Contacts {
        added: Vec<(String, String)>,
        refused: Vec<RefusedContact>,
    },
    Subscription {
        approved: bool,
    },
    Queued {
        seq: u64,
    },
    /// One outcome per command of a [`Command::Batch`], in order.
    Batch {
        outcomes: Vec<Outcome>,
    },
}

pub type Outcome = Result<Reply, Refusal>;

/// Something that changed, for the rest of the node to react to (push to clients,
/// re-evaluate visibility, ...). Emitted by every node as it applies the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Initialized {
        domain: String,
    },
    SettingChanged {
        key: String,
        value: String,
    },
    AccountCreated {
        user: String,
    },
    AccountDeleted {
        user: String,
    },
    CredentialsChanged {
        user: String,
    },
    PolicyChanged {
        user: String,
        key: PolicyKey,
        value: Override,
    },
    RosterItemChanged {
        user: String,
        item: RosterItem,
        version: u64,
    },
    RosterItemRemoved {
        user: String,
        jid: String,
        version: u64,
    },
    SubscriptionRequested {
        user: String,
        from: String,
    },
    /// A subscription notice the change implies (RFC 6121 §3): `from` (a bare JID)
    /// tells `to` (a bare JID, local or in another domain). Derived in `apply`, so
    /// every node sees it whoever proposed the change.
    Notice {
        to: String,
        from: String,
        kind: NoticeKind,
    },
    OfflineQueued {
        user: String,
        seq: u64,
    },
    OfflineAcked {
        user: String,
        upto: u64,
    },
    /// The whole state was replaced by a snapshot; consumers should re-read what they cache.
    StateReplaced,
}

/// The subscription notices a roster change sends (RFC 6121 §3.1–§3.3, §2.5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// A request to a contact in another domain (local requests are
    /// `Event::SubscriptionRequested`).
    Subscribe,
    /// The sender approved the recipient's subscription.
    Subscribed,
    /// The sender stopped watching the recipient.
    Unsubscribe,
    /// The sender cancelled or denied the recipient's subscription.
    Unsubscribed,
}
