//! Rosters: showing them, adding contacts in bulk and removing contacts.

use presenced_model::{Command, NewContact, Refusal, Reply, names};
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
    if !valid.is_empty() {
        match svc.apply(Command::AddContacts { entries: valid }).await? {
            Reply::Contacts {
                added: a,
                refused: r,
            } => {
                added = a
                    .into_iter()
                    .map(|(user, contact)| ContactEntry {
                        user,
                        contact,
                        name: String::new(),
                        group: String::new(),
                    })
                    .collect();
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
    Ok(RosterAddReply { added, refused })
}

pub(crate) async fn remove(svc: &AdminService, r: RosterRemoveRequest) -> Result<Empty, Status> {
    let RosterRemoveRequest { user, contact } = r;
    let user = svc.user_name(&user)?;
    let contact = names::normalize_contact(&contact, svc.domain()).map_err(refusal)?;
    svc.apply(Command::RemoveContact { user, contact }).await?;
    Ok(Empty {})
}
