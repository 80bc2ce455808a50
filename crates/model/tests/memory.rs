//! Memory per account and per roster item of the in-memory state, measured as the
//! growth of this process's resident memory while the state is built (the figure an
//! operator sees; bounded at 250 bytes per roster item).

use presenced_model::{Command, Credentials, NewContact, State};

/// Resident memory of this process, in bytes (Linux).
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

const D: &str = "example.test";

#[test]
fn bytes_per_account_and_per_roster_item() {
    let users = 8_000usize;
    let contacts = 25usize;
    let creds = Credentials::derive("x", D, "pw", 1);
    let mut s = State::default();
    s.apply(&Command::Init { domain: D.into() }).0.unwrap();
    s.apply(&Command::SetSetting {
        key: "max_contact_list_size".into(),
        value: "unlimited".into(),
    })
    .0
    .unwrap();
    s.take_changes();
    let base = rss();
    for i in 0..users {
        let c = Command::CreateAccount {
            user: format!("user{i}"),
            credentials: creds.clone(),
        };
        s.apply(&c).0.unwrap();
    }
    s.take_changes();
    let accounts = rss() - base;
    for i in 0..users {
        let entries = (1..=contacts)
            .map(|k| NewContact {
                user: format!("user{i}"),
                contact: format!("user{}@{D}", (i + k * 7919 + 1) % users),
                name: None,
                groups: vec![],
            })
            .collect();
        s.apply(&Command::AddContacts { entries }).0.unwrap();
        s.take_changes();
    }
    let items: usize = s.users().map(|(_, d)| d.roster.items.len()).sum();
    let roster = rss() - base - accounts;
    let per_account = accounts / users;
    let per_item = roster / items;
    println!("accounts: {users}, {per_account} bytes each; items: {items}, {per_item} bytes each");
    assert!(per_item <= 250, "{per_item} bytes per roster item");
}
