//! Rendering of replies: JSON documents whose field names mirror the proto fields, and
//! plain tables for people.

use std::fmt::Write as _;

use comfy_table::{Table, presets};
use presenced_proto::admin::{
    ContactEntry, Finding, InitReply, MembershipReply, NodeInfo, NodeRequest, Refused,
    RosterAddReply, RosterItem, RosterReply, Setting, StatusReply, UserInfo,
};
use serde_json::{Value, json};

use crate::client::CliError;

/// What a command produced: a JSON document, the human text, and possibly a failure
/// to report after the output (exit code and stderr line).
pub struct Report {
    pub json: Value,
    pub human: String,
    pub error: Option<CliError>,
}

impl Report {
    pub fn ok(json: Value, human: impl Into<String>) -> Report {
        Report {
            json,
            human: human.into(),
            error: None,
        }
    }

    pub fn with_error(mut self, error: Option<CliError>) -> Report {
        self.error = error;
        self
    }
}

/// The JSON document describing a failure.
pub fn error_json(e: &CliError) -> Value {
    json!({"error": e.message, "code": e.code, "exit": e.exit})
}

/// `doc` with the failure's fields added, so that stdout stays one JSON document even
/// when a command has both a result and an error to report.
pub fn merge_error(mut doc: Value, e: &CliError) -> Value {
    match &mut doc {
        Value::Object(map) => {
            if let Value::Object(err) = error_json(e) {
                map.extend(err);
            }
            doc
        }
        _ => error_json(e),
    }
}

/// A borderless table with two spaces between columns and no trailing blanks.
pub fn table<I, S>(header: I) -> Table
where
    I: IntoIterator<Item = S>,
    S: Into<comfy_table::Cell>,
{
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    t.set_header(header);
    t
}

pub fn render(mut t: Table) -> String {
    for c in t.column_iter_mut() {
        c.set_padding((0, 2));
    }
    let s = t.to_string();
    let lines: Vec<&str> = s.lines().map(str::trim_end).collect();
    lines.join("\n")
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

// ---- cluster ------------------------------------------------------------------------

pub fn init_json(r: &InitReply) -> Value {
    json!({"leader_id": r.leader_id, "domain": r.domain})
}

pub fn init_human(r: &InitReply) -> String {
    format!(
        "cluster initialised: domain {}, leader node {}",
        r.domain, r.leader_id
    )
}

fn node_info_json(n: &NodeInfo) -> Value {
    json!({
        "id": n.id,
        "addr": n.addr,
        "membership": n.membership,
        "reachable": n.reachable,
        "state": n.state,
        "term": n.term,
        "last_applied": n.last_applied,
        "lag": n.lag,
        "error": n.error,
    })
}

pub fn status_json(r: &StatusReply) -> Value {
    json!({
        "leader_id": r.leader_id,
        "term": r.term,
        "commit_index": r.commit_index,
        "domain": r.domain,
        "answered_by": r.answered_by,
        "nodes": r.nodes.iter().map(node_info_json).collect::<Vec<_>>(),
    })
}

pub fn status_human(r: &StatusReply) -> String {
    let leader = if r.leader_id == 0 {
        "none".to_string()
    } else {
        r.leader_id.to_string()
    };
    let domain = if r.domain.is_empty() {
        "(not initialised)"
    } else {
        &r.domain
    };
    let mut out = format!(
        "domain {domain}  leader {leader}  term {}  commit {}\n",
        r.term, r.commit_index
    );
    let mut t = table([
        "ID",
        "ADDRESS",
        "MEMBERSHIP",
        "STATE",
        "TERM",
        "APPLIED",
        "LAG",
        "ANSWERS",
    ]);
    for n in &r.nodes {
        // An unreachable node's numbers are unknown, not zero.
        let num = |x: u64| {
            if n.reachable {
                x.to_string()
            } else {
                "-".to_string()
            }
        };
        let answers = match (n.reachable, n.error.is_empty()) {
            (true, _) => "yes".to_string(),
            (false, true) => "no".to_string(),
            (false, false) => format!("no: {}", n.error),
        };
        t.add_row(vec![
            n.id.to_string(),
            n.addr.clone(),
            n.membership.clone(),
            n.state.clone(),
            num(n.term),
            num(n.last_applied),
            num(n.lag),
            answers,
        ]);
    }
    out.push_str(&render(t));
    out
}

fn node_request_json(n: &NodeRequest) -> Value {
    json!({"id": n.id, "addr": n.addr})
}

pub fn membership_json(m: &MembershipReply) -> Value {
    json!({
        "voters": m.voters.iter().map(node_request_json).collect::<Vec<_>>(),
        "learners": m.learners.iter().map(node_request_json).collect::<Vec<_>>(),
    })
}

pub fn membership_human(m: &MembershipReply) -> String {
    let list = |ns: &[NodeRequest]| {
        if ns.is_empty() {
            "none".to_string()
        } else {
            ns.iter()
                .map(|n| format!("{} ({})", n.id, n.addr))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    format!(
        "voters: {}\nlearners: {}",
        list(&m.voters),
        list(&m.learners)
    )
}

// ---- settings -----------------------------------------------------------------------

pub fn setting_json(s: &Setting) -> Value {
    json!({
        "key": s.key,
        "value": s.value,
        "default_value": s.default_value,
        "is_default": s.is_default,
        "kind": s.kind,
        "help": s.help,
    })
}

pub fn settings_json(ss: &[Setting]) -> Value {
    json!({"settings": ss.iter().map(setting_json).collect::<Vec<_>>()})
}

pub fn settings_human(ss: &[Setting]) -> String {
    let mut t = table(["KEY", "VALUE", "DEFAULT", "", "HELP"]);
    for s in ss {
        let mark = if s.is_default { "" } else { "*" };
        t.add_row(vec![
            s.key.as_str(),
            s.value.as_str(),
            s.default_value.as_str(),
            mark,
            s.help.as_str(),
        ]);
    }
    render(t)
}

pub fn setting_human(s: &Setting) -> String {
    let note = if s.is_default { " (default)" } else { "" };
    format!("{} = {}{note}", s.key, s.value)
}

// ---- users --------------------------------------------------------------------------

pub fn user_json(u: &UserInfo) -> Value {
    json!({
        "name": u.name,
        "jid": u.jid,
        "contacts": u.contacts,
        "watchers": u.watchers,
        "pending_in": u.pending_in,
        "offline": u.offline,
        "availability_sharing": u.availability_sharing,
        "view_without_approval": u.view_without_approval,
    })
}

pub fn users_json(us: &[UserInfo]) -> Value {
    json!({"users": us.iter().map(user_json).collect::<Vec<_>>()})
}

pub fn users_human(us: &[UserInfo]) -> String {
    if us.is_empty() {
        return "no users".to_string();
    }
    let mut t = table([
        "NAME",
        "JID",
        "CONTACTS",
        "WATCHERS",
        "PENDING",
        "OFFLINE",
        "SHARING",
        "VIEW-W/O-APPROVAL",
    ]);
    for u in us {
        t.add_row(vec![
            u.name.clone(),
            u.jid.clone(),
            u.contacts.to_string(),
            u.watchers.to_string(),
            u.pending_in.to_string(),
            u.offline.to_string(),
            u.availability_sharing.clone(),
            u.view_without_approval.clone(),
        ]);
    }
    render(t)
}

// ---- rosters ------------------------------------------------------------------------

fn roster_item_json(i: &RosterItem) -> Value {
    json!({"jid": i.jid, "name": i.name, "groups": i.groups, "subscription": i.subscription, "ask": i.ask})
}

pub fn roster_json(r: &RosterReply) -> Value {
    json!({
        "user": r.user,
        "version": r.version,
        "items": r.items.iter().map(roster_item_json).collect::<Vec<_>>(),
        "pending_in": r.pending_in,
    })
}

pub fn roster_human(r: &RosterReply) -> String {
    let mut out = format!("roster of {} (version {})\n", r.user, r.version);
    if r.items.is_empty() {
        out.push_str("no contacts\n");
    } else {
        let mut t = table(["JID", "NAME", "GROUPS", "SUBSCRIPTION", "PENDING-OUT"]);
        for i in &r.items {
            t.add_row(vec![
                i.jid.clone(),
                i.name.clone(),
                i.groups.join(", "),
                i.subscription.clone(),
                yes_no(i.ask).to_string(),
            ]);
        }
        out.push_str(&render(t));
        out.push('\n');
    }
    if r.pending_in.is_empty() {
        out.push_str("pending inbound: none");
    } else {
        let _ = write!(out, "pending inbound: {}", r.pending_in.join(", "));
    }
    out
}

pub fn contact_json(c: &ContactEntry) -> Value {
    json!({"user": c.user, "contact": c.contact, "name": c.name, "group": c.group})
}

pub fn refused_json(r: &Refused) -> Value {
    json!({"user": r.user, "contact": r.contact, "code": r.code, "reason": r.reason})
}

pub fn roster_add_json(r: &RosterAddReply) -> Value {
    json!({
        "added": r.added.iter().map(contact_json).collect::<Vec<_>>(),
        "unchanged": r.unchanged.iter().map(contact_json).collect::<Vec<_>>(),
        "refused": r.refused.iter().map(refused_json).collect::<Vec<_>>(),
    })
}

pub fn refused_line(r: &Refused) -> String {
    format!("{} -> {}: {}", r.user, r.contact, r.reason)
}

pub fn roster_add_human(r: &RosterAddReply) -> String {
    let unchanged = if r.unchanged.is_empty() {
        String::new()
    } else {
        format!(", unchanged {}", r.unchanged.len())
    };
    let mut out = format!(
        "added {}{unchanged}, refused {}",
        r.added.len(),
        r.refused.len()
    );
    for x in &r.refused {
        let _ = write!(out, "\n  {}", refused_line(x));
    }
    out
}

// ---- troubleshooting ----------------------------------------------------------------

fn finding_json(f: &Finding) -> Value {
    json!({"severity": f.severity, "subject": f.subject, "problem": f.problem, "detail": f.detail})
}

pub fn findings_json(fs: &[Finding]) -> Value {
    json!({"findings": fs.iter().map(finding_json).collect::<Vec<_>>()})
}

pub fn findings_human(fs: &[Finding]) -> String {
    if fs.is_empty() {
        return "no problems found".to_string();
    }
    let mut t = table(["SEVERITY", "SUBJECT", "PROBLEM", "DETAIL"]);
    for f in fs {
        t.add_row(vec![
            f.severity.as_str(),
            f.subject.as_str(),
            f.problem.as_str(),
            f.detail.as_str(),
        ]);
    }
    render(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_have_no_borders_or_trailing_blanks() {
        let mut t = table(["A", "LONGER"]);
        t.add_row(vec!["x", ""]);
        t.add_row(vec!["long cell", "y"]);
        assert_eq!(render(t), "A          LONGER\nx\nlong cell  y");
    }

    #[test]
    fn membership_lines() {
        let m = MembershipReply {
            voters: vec![
                NodeRequest {
                    id: 1,
                    addr: "127.0.0.1:7101".into(),
                },
                NodeRequest {
                    id: 2,
                    addr: "127.0.0.1:7102".into(),
                },
            ],
            learners: vec![],
        };
        assert_eq!(
            membership_human(&m),
            "voters: 1 (127.0.0.1:7101), 2 (127.0.0.1:7102)\nlearners: none"
        );
        assert_eq!(membership_json(&m)["voters"][1]["addr"], "127.0.0.1:7102");
    }

    #[test]
    fn errors_merge_into_the_document() {
        let e = CliError::refused("no");
        let v = merge_error(json!({"added": 1}), &e);
        assert_eq!(
            v,
            json!({"added": 1, "error": "no", "code": "FAILED_PRECONDITION", "exit": 4})
        );
    }
}
