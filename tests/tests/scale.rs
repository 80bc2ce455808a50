//! Operator scale: replication that never wedges on large log entries.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use presenced_e2e::*;

fn roster_len(c: &Cluster, node: usize, user: &str) -> usize {
    let v = c.ctl_json(node, &["roster", "show", user]);
    v["items"].as_array().map_or(0, Vec::len)
}

/// A roster import whose calls carry about 5 MB each (more than the 4 MiB a gRPC
/// server accepted by default, and than the 13 MB append that once wedged a rejoin
/// when batched): the writes are split into bounded log entries, a node wiped and
/// re-added catches up from the log (appends are cut by bytes), and later from a
/// snapshot once one was built by log size and the log behind it purged by size.
#[test]
fn a_wiped_node_catches_up_after_bulk_writes_of_more_than_four_mib_per_call() {
    let mut c = Cluster::start_with(
        3,
        Opts {
            // Lands in the [raft] table.
            extra: "snapshot_log_mb = 24\nkeep_log_mb = 1\n".into(),
            ..Opts::default()
        },
    );
    c.ctl(
        0,
        &["settings", "set", "max_contact_list_size", "unlimited"],
    )
    .ok();
    c.ctl(0, &["user", "add", "dora", "--password", "pw-dora"])
        .ok();
    let name = "n".repeat(950);
    let csv: String = (0..10_000)
        .map(|i| format!("dora,c{i}@remote.example,{name}{i}\n"))
        .collect();
    let file = c.dir.path().join("big.csv");
    std::fs::write(&file, csv).unwrap();
    let out = c.ctl(0, &["roster", "import", file.to_str().unwrap()]);
    if out.code != 0 {
        for n in 0..3 {
            eprintln!("==== node {n}\n{}", c.log_tail(n));
        }
        panic!("{}", out.stderr);
    }
    assert!(out.stdout.contains("10000 added"), "{}", out.stdout);
    for n in 0..3 {
        assert_eq!(roster_len(&c, n, "dora"), 10_000, "node {}", n + 1);
    }

    // Wiped and re-added: the log still holds the large entries.
    c.ctl(0, &["cluster", "remove-node", "3"]).ok();
    c.kill(2);
    c.wipe(2);
    c.start_node(2);
    c.wait_listening(2);
    let t = Instant::now();
    let addr = c.nodes[2].cluster_addr();
    c.ctl(1, &["cluster", "add-node", "3", &addr]).ok();
    c.wait_healthy(2, Duration::from_secs(60));
    assert_eq!(
        roster_len(&c, 2, "dora"),
        10_000,
        "wiped node did not catch up"
    );
    eprintln!("caught up from the log in {:?}", t.elapsed());
    let leader = c.wait_leader(Duration::from_secs(5));
    let split = metric(&c.metrics(leader), "presenced_raft_append_split_total").unwrap_or(0.0);
    assert!(split >= 1.0, "no append was cut by size");

    // More large entries: the log passes snapshot_log_mb, a snapshot is built by
    // size and the log behind it purged, so the next rejoin needs the snapshot.
    let csv: String = (10_000..30_000)
        .map(|i| format!("dora,c{i}@remote.example,{name}{i}\n"))
        .collect();
    std::fs::write(&file, csv).unwrap();
    c.ctl(0, &["roster", "import", file.to_str().unwrap()]).ok();
    let deadline = Instant::now() + Duration::from_secs(20);
    let leader = loop {
        let l = c.wait_leader(Duration::from_secs(5));
        let built = metric(&c.metrics(l), "presenced_raft_snapshots_built_total").unwrap_or(0.0);
        if built >= 1.0 {
            break l;
        }
        assert!(
            Instant::now() < deadline,
            "no snapshot was built by log size"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let other = (0..3).find(|&n| n != leader).unwrap();
    let voter = leader;
    // Replaced the routine way: the node died and lost its disk; a fresh one with
    // the same id takes its place.
    c.kill(other);
    c.wipe(other);
    c.start_node(other);
    c.wait_listening(other);
    let t = Instant::now();
    let addr = c.nodes[other].cluster_addr();
    let id = (other + 1).to_string();
    let out = c.ctl(voter, &["cluster", "replace-node", &id, &addr]).ok();
    assert!(out.stdout.contains("promoted to voter"), "{}", out.stdout);
    c.wait_healthy(other, Duration::from_secs(60));
    assert_eq!(roster_len(&c, other, "dora"), 30_000);
    eprintln!("caught up from a snapshot in {:?}", t.elapsed());
    let installed = metric(
        &c.metrics(other),
        "presenced_raft_snapshots_installed_total",
    )
    .unwrap_or(0.0);
    assert!(
        installed >= 1.0,
        "the wiped node caught up without a snapshot"
    );
    let voters: BTreeSet<u64> = c.ctl_json(0, &["cluster", "status"])["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["membership"] == "voter")
        .map(|n| n["id"].as_u64().unwrap())
        .collect();
    assert_eq!(voters.len(), 3);
}
