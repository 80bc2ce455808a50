//! Rosters: showing them, adding contacts in bulk and removing contacts.

use presenced_model::{Command, NewContact, Refusal, Reply, State, names};
use presenced_proto::admin::*;
use tonic::Status;

use crate::{AdminService, cluster, refusal};

pub(crate) async fn show(svc: &AdminService, r: UserRequest) -> Result<RosterReply, Status> {
    let name = r.name;
    let user = svc.user_name(&name)?;
    svc.node
        .linearizable(|s| {
            s.user(&user).map(|d| RosterReply {
                user: user.clone(),
                version: d.roster.version,
                items: d
                    .roster
                    .items
                    .values()
                    .map(|i| RosterItem {
                        jid: i.jid.clone(),
                        name: i.name.clone().unwrap_or_default(),
                        groups: i.groups.iter().cloned().collect(),
                        subscription: i.subscription.to_string(),
                        ask: i.ask,
                    })
                    .collect(),
                pending_in: d.roster.pending_in.iter().cloned().collect(),
            })
        })
        .await
        .map_err(cluster)?
        .ok_or_else(|| refusal(Refusal::UnknownUser(user)))
}

pub(crate) async fn add(svc: &AdminService, r: RosterAddRequest) -> Result<RosterAddReply, Status> {
    let entries = r.entries;
    if entries.len() > 10_000 {
        return Err(Status::invalid_argument("at most 10000 contacts per call"));
    }
    let domain = svc.domain().to_string();
    let mut refused = Vec::new();
    let mut valid = Vec::new();
    // Entries that cannot even be named are refused here; the rest go to the
    // state machine in their original order.
    for e in entries {
        let normalized = names::normalize_user(&e.user, &domain)
            .and_then(|u| names::normalize_contact(&e.contact, &domain).map(|c| (u, c)));
        match normalized {
            Ok((user, contact)) => valid.push(NewContact {
                user,
                contact,
                name: Some(e.name).filter(|n| !n.is_empty()),
                groups: if e.group.is_empty() {
                    vec![]
                } else {
                    vec![e.group]
                },
            }),
            Err(r) => refused.push(Refused {
                user: e.user,
                contact: e.contact,
                code: r.code().into(),
                reason: r.to_string(),
            }),
        }
    }
    let mut added = Vec::new();
    let mut unchanged = Vec::new();
    if !valid.is_empty() {
        // Which entries are already in place, for the report only: the state machine
        // decides what is added (re-adding an item as it is changes nothing there). A
        // local read: no leadership round per call, and a replica that lags by a few
        // milliseconds only makes a row added twice in one file count as added twice.
        let already: Vec<bool> = svc
            .node
            .read(|s| valid.iter().map(|c| in_place(s, c)).collect());
        let asked: Vec<(String, String)> = valid
            .iter()
            .map(|c| (c.user.clone(), c.contact.clone()))
            .collect();
        match svc.apply(Command::AddContacts { entries: valid }).await? {
            Reply::Contacts {
                added: a,
                refused: r,
            } => {
                // `a` is the accepted entries, in request order: walk the request
                // alongside to tell the new ones from those that were in place.
                let mut next = asked.iter().zip(&already);
                for (user, contact) in a {
                    let was = next
                        .by_ref()
                        .find(|((u, c), _)| *u == user && *c == contact)
                        .is_some_and(|(_, was)| *was);
                    let e = ContactEntry {
                        user,
                        contact,
                        name: String::new(),
                        group: String::new(),
                    };
                    if was {
                        unchanged.push(e);
                    } else {
                        added.push(e);
                    }
                }
                refused.extend(r.into_iter().map(|r| Refused {
                    user: r.user,
                    contact: r.contact,
                    code: r.reason.code().into(),
                    reason: r.reason.to_string(),
                }));
            }
            other => return Err(Status::internal(format!("unexpected reply {other:?}"))),
        }
    }
    Ok(RosterAddReply {
        added,
        refused,
        unchanged,
    })
}

/// Whether adding `c` would change nothing: the user already sees the contact (or, for
/// a contact in another domain, asked to) and the name and group asked for are the
/// ones the item has.
fn in_place(s: &State, c: &NewContact) -> bool {
    let Some(item) = s.user(&c.user).and_then(|d| d.roster.items.get(&c.contact)) else {
        return false;
    };
    let Ok((name, groups)) = names::validate_item_labels(c.name.as_deref(), &c.groups) else {
        return false;
    };
    let labels = name.is_none_or(|n| item.name.as_deref() == Some(n.as_str()))
        && (groups.is_empty() || groups == item.groups);
    let subscription = if s.local_user(&c.contact).is_some() {
        item.subscription.sees_contact() && !item.ask
    } else {
        item.subscription.sees_contact() || item.ask
    };
    labels && subscription
}

pub(crate) async fn remove(svc: &AdminService, r: RosterRemoveRequest) -> Result<Empty, Status> {
    let RosterRemoveRequest { user, contact } = r;
    let user = svc.user_name(&user)?;
    let contact = names::normalize_contact(&contact, svc.domain()).map_err(refusal)?;
    svc.apply(Command::RemoveContact { user, contact }).await?;
    Ok(Empty {})
}
