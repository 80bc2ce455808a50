//! Events that are never lost: a bulk import while clients are online on every node,
//! with the router's event buffer so small that it must fall behind; every roster
//! push and presence change still arrives (the router resynchronises from the state).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use presenced_e2e::xmpp::{Agent, jid};
use presenced_e2e::{Cluster, metric};

const PW: &str = "resync-pw";
const REMOTE: usize = 150;

#[test]
fn a_bulk_import_reaches_online_clients_on_every_node_although_the_router_falls_behind() {
    let users: Vec<String> = (0..6).map(|i| format!("u{i}")).collect();
    let names: Vec<&str> = users.iter().map(String::as_str).collect();
    // Lands in the [raft] table: 8 buffered events, far fewer than the import makes.
    let c = Cluster::with_users(&names, PW, "event_buffer = 8\n");
    c.ctl(
        0,
        &["settings", "set", "max_contact_list_size", "unlimited"],
    )
    .ok();
    let mut agents: Vec<Agent> = users
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let mut a = Agent::login(&c, i % 3, u, "r", PW);
            a.roster();
            a.available();
            a
        })
        .collect();
    // Each online user gets every other online user (both ways, so both end with
    // subscription both) and many contacts in another domain.
    let mut csv = String::new();
    for u in &users {
        for v in &users {
            if u != v {
                csv.push_str(&format!("{u},{v}\n"));
            }
        }
        for k in 0..REMOTE {
            csv.push_str(&format!("{u},x{k}@remote.example,Remote {k}\n"));
        }
    }
    let file = c.dir.path().join("contacts.csv");
    std::fs::write(&file, csv).unwrap();
    let out = c.ctl(1, &["roster", "import", file.to_str().unwrap()]).ok();
    assert!(out.stdout.contains("added"), "{}", out.stdout);

    for (i, a) in agents.iter_mut().enumerate() {
        let me = &users[i];
        let mut want: BTreeSet<String> =
            users.iter().filter(|v| *v != me).map(|v| jid(v)).collect();
        let locals = want.clone();
        want.extend((0..REMOTE).map(|k| format!("x{k}@remote.example")));
        // Every item arrives as a push; the local contacts end as `both`.
        let mut got = BTreeSet::new();
        let mut both = BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while got != want || both != locals {
            assert!(
                Instant::now() < deadline,
                "{}: roster pushes missing: {:?}; not both: {:?}",
                a.name,
                want.difference(&got).take(5).collect::<Vec<_>>(),
                locals.difference(&both).collect::<Vec<_>>()
            );
            let ev = a.expect("a roster push", Duration::from_secs(30), |e| {
                e["ev"] == "roster_push"
            });
            for (j, item) in ev["items"].as_object().unwrap() {
                if item["subscription"] == "remove" {
                    got.remove(j);
                    continue;
                }
                got.insert(j.clone());
                if item["subscription"] == "both" {
                    both.insert(j.clone());
                }
            }
        }
        // Every other online user's availability arrives.
        for v in &locals {
            a.expect_available(v, Duration::from_secs(15));
        }
    }
    let resyncs: f64 = (0..3)
        .map(|n| metric(&c.metrics(n), "presenced_router_resyncs_total").unwrap_or(0.0))
        .sum();
    assert!(
        resyncs >= 1.0,
        "the router never fell behind: the test tests nothing"
    );
    for a in agents {
        a.quit();
    }
}
