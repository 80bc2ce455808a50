//! Replication, failover, durability and catch-up with real node processes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use presenced_e2e::{Cluster, Opts, metric};
use serde_json::Value;

fn setting(c: &Cluster, node: usize, key: &str) -> String {
    let v = c.ctl_json(node, &["settings", "show"]);
    let list = v["settings"]
        .as_array()
        .unwrap_or_else(|| panic!("settings list in {v}"));
    let s = list
        .iter()
        .find(|s| s["key"] == key)
        .unwrap_or_else(|| panic!("{key} in {v}"));
    s["value"].as_str().unwrap().to_string()
}

fn roster(c: &Cluster, node: usize, user: &str) -> BTreeSet<String> {
    let v = c.ctl_json(node, &["roster", "show", user]);
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["jid"].as_str().unwrap().to_string())
        .collect()
}

fn follower_of(c: &Cluster) -> usize {
    let leader = c.wait_leader(Duration::from_secs(10));
    (0..c.nodes.len()).find(|i| *i != leader).unwrap()
}

#[test]
fn a_setting_set_through_a_follower_is_in_force_on_every_node() {
    let c = Cluster::start(3);
    let f = follower_of(&c);
    let leader = c.wait_leader(Duration::from_secs(5));
    let disk_reads = |c: &Cluster| {
        metric(
            &c.metrics(leader),
            "presenced_raft_log_reads_from_disk_total",
        )
        .unwrap_or(0.0)
    };
    let before = disk_reads(&c);
    let t = Instant::now();
    let out = c
        .ctl(f, &["settings", "set", "max_contact_list_size", "150"])
        .ok();
    assert!(out.stdout.contains("150"), "{}", out.stdout);
    // The follower forwarded it on its proposal stream to the leader, not as a unary
    // call (which is only for a leader of an earlier release).
    let m = c.metrics(f);
    assert!(
        metric(&m, "presenced_raft_propose_streams_opened_total").unwrap_or(0.0) >= 1.0,
        "no propose stream opened on the follower"
    );
    // The leader replicated the new entry from the log's decoded tail in memory, not by
    // reading it back from its segment files.
    assert_eq!(disk_reads(&c), before, "replication read the log from disk");
    // A linearizable read from every node sees it at once.
    for i in 0..3 {
        assert_eq!(
            setting(&c, i, "presence.max_contact_list_size"),
            "150",
            "node {i}"
        );
    }
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );
    // ... and each node's own replica applied it (not just the leader): the apply
    // index on every node reaches the leader's commit index.
    let commit = metric(&c.metrics(leader), "presenced_raft_commit_index").unwrap();
    let deadline = Instant::now() + Duration::from_secs(1) + Duration::from_millis(1500);
    for i in 0..3 {
        loop {
            let applied = metric(&c.metrics(i), "presenced_raft_applied_index").unwrap_or(0.0);
            if applied >= commit {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {i} applied {applied} < commit {commit}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // reset goes back to the default, again through a follower
    c.ctl(f, &["settings", "reset", "presence.max_contact_list_size"])
        .ok();
    assert_eq!(
        setting(&c, (f + 1) % 3, "presence.max_contact_list_size"),
        "200"
    );
}

/// Concurrent writers add roster items through every node while the leader is killed
/// twice; every acknowledged item must be on every node afterwards.
#[test]
fn acknowledged_writes_survive_leader_kills() {
    let c = Cluster::start(3);
    c.ctl(
        0,
        &["settings", "set", "max_contact_list_size", "unlimited"],
    )
    .ok();
    const WRITERS: usize = 6;
    const CALLS: usize = 24; // per writer, 8 contacts per call: 1152 items
    const PER_CALL: usize = 8;
    for w in 0..WRITERS {
        c.ctl(
            0,
            &[
                "user",
                "add",
                &format!("owner{w}"),
                "--password",
                "pw-owner",
            ],
        )
        .ok();
    }
    let c = Arc::new(Mutex::new(c));
    let acked: Arc<Mutex<BTreeMap<String, BTreeSet<String>>>> = Arc::default();
    let attempts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let (bins, addrs) = {
        let g = c.lock().unwrap();
        (
            g.ctl_runner(),
            g.nodes.iter().map(|n| n.admin_addr()).collect::<Vec<_>>(),
        )
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (acked, attempts, bins, addrs) =
                (acked.clone(), attempts.clone(), bins.clone(), addrs.clone());
            std::thread::spawn(move || {
                let owner = format!("owner{w}");
                for call in 0..CALLS {
                    let contacts: Vec<String> = (0..PER_CALL)
                        .map(|k| format!("w{w}c{call}k{k}@remote.example"))
                        .collect();
                    let mut args = vec!["--json", "roster", "add", owner.as_str()];
                    args.extend(contacts.iter().map(String::as_str));
                    // Spread the writes over all nodes. Like a real client, retry a
                    // failed call (on the next node): adding the same contacts again is
                    // harmless. Only acknowledged calls count.
                    for attempt in 0..40 {
                        let addr = &addrs[(w + call + attempt) % addrs.len()];
                        attempts.fetch_add(1, Ordering::Relaxed);
                        let out = bins.run(addr, presenced_e2e::SECRET, &args);
                        if out.code == 0 {
                            let v = out.json();
                            let mut a = acked.lock().unwrap();
                            for e in v["added"].as_array().unwrap() {
                                a.entry(owner.clone())
                                    .or_default()
                                    .insert(e["contact"].as_str().unwrap().to_string());
                            }
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            })
        })
        .collect();
    // Kill the leader twice while the writers run, restarting it each time.
    let chaos = {
        let (c, acked, done) = (c.clone(), acked.clone(), done.clone());
        std::thread::spawn(move || {
            let mut kills = 0;
            for threshold in [250, 650] {
                while acked
                    .lock()
                    .unwrap()
                    .values()
                    .map(BTreeSet::len)
                    .sum::<usize>()
                    < threshold
                {
                    if done.load(Ordering::Relaxed) {
                        return kills;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let mut g = c.lock().unwrap();
                // confirmed by the leader itself just before the kill
                let (leader, term) = loop {
                    if let Some(lt) = g.leader_term() {
                        break lt;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                };
                g.kill(leader);
                kills += 1;
                // a new leader, elected in a later term, within a few seconds
                let t = Instant::now();
                let (new, new_term) = g.wait_leader_after(term, Duration::from_secs(10));
                drop(g);
                assert_ne!(new, leader);
                eprintln!(
                    "killed node {} (leader in term {term}); node {} leads in term {new_term} after {:?}",
                    leader + 1,
                    new + 1,
                    t.elapsed()
                );
                std::thread::sleep(Duration::from_millis(500));
                c.lock().unwrap().start_node(leader);
            }
            kills
        })
    };
    for w in writers {
        w.join().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let kills = chaos.join().unwrap();
    assert_eq!(kills, 2, "the leader was not killed twice");
    let c = Arc::try_unwrap(c).ok().unwrap().into_inner().unwrap();
    let acked = acked.lock().unwrap().clone();
    let total: usize = acked.values().map(BTreeSet::len).sum();
    eprintln!(
        "{total} items acknowledged in {} calls",
        attempts.load(Ordering::Relaxed)
    );
    assert!(total >= 1000, "only {total} acknowledged");
    for i in 0..3 {
        c.wait_healthy(i, Duration::from_secs(30));
        for (owner, items) in &acked {
            let have = roster(&c, i, owner);
            let missing: Vec<_> = items.difference(&have).collect();
            assert!(
                missing.is_empty(),
                "node {}: {owner} lost {} acknowledged items, e.g. {:?}",
                i + 1,
                missing.len(),
                &missing[..missing.len().min(3)]
            );
        }
    }
}

#[test]
fn every_acknowledged_write_survives_kill_9_of_all_nodes() {
    let mut c = Cluster::start(3);
    c.ctl(1, &["settings", "set", "suppress_offline_im", "on"])
        .ok();
    c.ctl(2, &["user", "add", "alice", "--password", "alice-pw"])
        .ok();
    c.ctl(0, &["user", "add", "bob", "--password", "bob-pw"])
        .ok();
    c.ctl(1, &["roster", "add", "alice", "bob", "--group", "Friends"])
        .ok();
    c.ctl(2, &["user", "policy", "bob", "availability_sharing", "off"])
        .ok();
    for i in 0..3 {
        c.kill(i);
    }
    for i in 0..3 {
        c.start_node(i);
    }
    for i in 0..3 {
        c.wait_healthy(i, Duration::from_secs(30));
    }
    for i in 0..3 {
        assert_eq!(setting(&c, i, "messaging.suppress_offline_im"), "on");
        let r = c.ctl_json(i, &["roster", "show", "alice"]);
        let item = &r["items"][0];
        assert_eq!(item["jid"], "bob@example.test");
        assert_eq!(item["subscription"], "to");
        assert_eq!(item["groups"], Value::from(vec!["Friends"]));
        let users = c.ctl_json(i, &["user", "list"]);
        let bob = users["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["name"] == "bob")
            .unwrap()
            .clone();
        assert_eq!(bob["availability_sharing"], "off");
        assert_eq!(bob["watchers"], 1);
    }
    // and the cluster still takes writes
    c.ctl(0, &["user", "add", "carol", "--password", "carol-pw"])
        .ok();
}

#[test]
fn a_node_that_was_down_catches_up_and_a_wiped_node_rejoins_through_a_snapshot() {
    let mut c = Cluster::start_with(
        3,
        Opts {
            snapshot_every: 40,
            keep_logs: 5,
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
    // node 3 misses a stretch of writes
    c.kill(2);
    // status from node 1 shows who answers, with role, term and applied index
    let st = c.ctl_json(0, &["cluster", "status"]);
    let nodes = st["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{st}");
    for n in nodes {
        if n["id"] == 3 {
            assert_eq!(n["reachable"], false, "{st}");
        } else {
            assert_eq!(n["reachable"], true, "{st}");
            assert!(
                ["Leader", "Follower"].contains(&n["state"].as_str().unwrap()),
                "{st}"
            );
            assert!(
                n["term"].as_u64().unwrap() >= 1 && n["last_applied"].as_u64().unwrap() >= 1,
                "{st}"
            );
        }
    }
    for k in 0..30 {
        let contacts: Vec<String> = (0..4).map(|j| format!("m{k}x{j}@remote.example")).collect();
        let mut args = vec!["roster", "add", "dora"];
        args.extend(contacts.iter().map(String::as_str));
        c.ctl(k % 2, &args).ok();
    }
    c.start_node(2);
    c.wait_healthy(2, Duration::from_secs(30));
    assert_eq!(roster(&c, 2, "dora").len(), 120, "node 3 did not catch up");

    // wipe node 3 and re-add it: the leader has purged the log, so only a snapshot helps
    c.ctl(0, &["cluster", "remove-node", "3"]).ok();
    c.kill(2);
    c.wipe(2);
    for k in 0..30 {
        c.ctl(
            0,
            &["roster", "add", "dora", &format!("late{k}@remote.example")],
        )
        .ok();
    }
    let leader = c.wait_leader(Duration::from_secs(5));
    let built = metric(&c.metrics(leader), "presenced_raft_snapshots_built_total").unwrap_or(0.0);
    assert!(built >= 1.0, "the leader built no snapshot");
    c.start_node(2);
    c.wait_listening(2);
    let addr = c.nodes[2].cluster_addr();
    c.ctl(1, &["cluster", "add-node", "3", &addr]).ok();
    c.wait_healthy(2, Duration::from_secs(30));
    assert_eq!(
        roster(&c, 2, "dora").len(),
        150,
        "wiped node did not catch up"
    );
    let installed =
        metric(&c.metrics(2), "presenced_raft_snapshots_installed_total").unwrap_or(0.0);
    assert!(installed >= 1.0, "node 3 caught up without a snapshot");
    let st = c.ctl_json(2, &["cluster", "status"]);
    let voters = st["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["membership"] == "voter")
        .count();
    assert_eq!(voters, 3);
}

#[test]
fn membership_changes_are_one_at_a_time_and_checked() {
    let c = Cluster::start(3);
    // an existing voter, an unknown node, the id 0
    let addr = c.nodes[1].cluster_addr();
    let o = c.ctl(0, &["cluster", "add-node", "2", &addr]);
    assert_eq!(o.code, 4, "{}", o.stderr);
    assert!(o.stderr.contains("already a voter"), "{}", o.stderr);
    let o = c.ctl(0, &["cluster", "remove-node", "9"]);
    assert_eq!(o.code, 3, "{}", o.stderr);
    // a second change while one (adding a node that never answers) is running is refused
    let bins = c.ctl_runner();
    let a0 = c.nodes[0].admin_addr();
    let slow = std::thread::spawn(move || {
        bins.run(
            &a0,
            presenced_e2e::SECRET,
            &["cluster", "add-node", "7", "127.0.0.1:1"],
        )
    });
    std::thread::sleep(Duration::from_millis(700));
    let o = c.ctl(1, &["cluster", "remove-node", "3"]);
    assert_eq!(o.code, 4, "stdout={} stderr={}", o.stdout, o.stderr);
    assert!(o.stderr.contains("in progress"), "{}", o.stderr);
    drop(slow); // it gives up after a minute on its own; the cluster is torn down first
}
