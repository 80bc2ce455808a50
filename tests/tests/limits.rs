//! Contact-list and watcher limits through the operator CLI against a 3-node cluster.

use std::io::Write;

use presenced_e2e::Cluster;

fn contacts(c: &Cluster, node: usize, user: &str) -> usize {
    c.ctl_json(node, &["roster", "show", user])["items"]
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn roster_import_crossing_the_limit_adds_up_to_it_and_reports_the_rest() {
    let c = Cluster::start(3);
    for u in ["alice", "bob", "carol"] {
        c.ctl(0, &["user", "add", u, "--password", "pw-1234"]).ok();
    }
    // 195 contacts first (other domain, so no accounts are needed), then 6 more:
    // at the default limit of 200 only 5 fit.
    let mut csv = String::from("user,contact,name,group\n# first batch\n");
    for i in 0..195 {
        csv.push_str(&format!(
            "alice,friend{i:03}@remote.example,Friend {i},Remote\n"
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.csv");
    std::fs::write(&first, &csv).unwrap();
    let out = c
        .ctl(1, &["roster", "import", first.to_str().unwrap()])
        .ok();
    assert!(out.stdout.contains("195 added"), "{}", out.stdout);

    let second = dir.path().join("second.csv");
    let mut f = std::fs::File::create(&second).unwrap();
    for i in 0..5 {
        writeln!(f, "alice,late{i}@remote.example").unwrap();
    }
    writeln!(f, "alice,bob").unwrap(); // the sixth: a local user, refused by alice's limit
    drop(f);
    let out = c.ctl(2, &["--json", "roster", "import", second.to_str().unwrap()]);
    assert_eq!(
        out.code, 4,
        "a refusal exits 4: {} {}",
        out.stdout, out.stderr
    );
    let v = out.json();
    assert_eq!(v["added"], 5, "{v}");
    let refused = v["refused"].as_array().unwrap();
    assert_eq!(refused.len(), 1, "{v}");
    assert_eq!(refused[0]["code"], "contact_list_full");
    assert_eq!(refused[0]["contact"], "bob@example.test");
    assert!(
        refused[0]["reason"]
            .as_str()
            .unwrap()
            .contains("alice@example.test is at the maximum contact-list size (200)")
    );
    for i in 0..3 {
        assert_eq!(contacts(&c, i, "alice"), 200, "node {i}");
    }

    // Nobody can add a user who is at the limit: carol adding alice is refused with the reason.
    let out = c.ctl(0, &["roster", "add", "carol", "alice"]);
    assert_eq!(out.code, 4, "{} {}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("alice@example.test is at the maximum contact-list size (200)"),
        "{}",
        out.stderr
    );
    assert_eq!(
        out.stderr.lines().count(),
        1,
        "one-line reason: {:?}",
        out.stderr
    );
    assert_eq!(contacts(&c, 0, "carol"), 0);

    // troubleshoot lists her
    let t = c.ctl_json(1, &["troubleshoot"]);
    let f = t["findings"].as_array().unwrap();
    assert!(
        f.iter()
            .any(|x| x["subject"] == "alice@example.test" && x["problem"] == "contact_list_limit"),
        "{t}"
    );

    // unlimited lifts it at once
    c.ctl(
        1,
        &["settings", "set", "max_contact_list_size", "unlimited"],
    )
    .ok();
    c.ctl(2, &["roster", "add", "carol", "alice"]).ok();
    c.ctl(0, &["roster", "add", "alice", "one-more@remote.example"])
        .ok();
    assert_eq!(contacts(&c, 2, "alice"), 202); // + one-more, + carol's reciprocal item
}

#[test]
fn watcher_limit_is_enforced_and_can_be_lifted() {
    let c = Cluster::start(3);
    c.ctl(0, &["settings", "set", "max_watchers", "2"]).ok();
    for u in ["star", "fan1", "fan2", "fan3"] {
        c.ctl(1, &["user", "add", u, "--password", "pw-1234"]).ok();
    }
    c.ctl(0, &["roster", "add", "fan1", "star"]).ok();
    c.ctl(1, &["roster", "add", "fan2", "star"]).ok();
    let out = c.ctl(2, &["roster", "add", "fan3", "star"]);
    assert_eq!(out.code, 4, "{} {}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("star@example.test is at the maximum number of watchers (2)"),
        "{}",
        out.stderr
    );
    let users = c.ctl_json(0, &["user", "list"]);
    let star = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "star")
        .unwrap()
        .clone();
    assert_eq!(star["watchers"], 2);
    let t = c.ctl_json(2, &["troubleshoot"]);
    assert!(
        t["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["subject"] == "star@example.test" && x["problem"] == "watcher_limit"),
        "{t}"
    );
    c.ctl(1, &["settings", "set", "max_watchers", "unlimited"])
        .ok();
    c.ctl(2, &["roster", "add", "fan3", "star"]).ok();
    // removing the account takes it out of every roster
    c.ctl(0, &["user", "remove", "star"]).ok();
    for i in 0..3 {
        for fan in ["fan1", "fan2", "fan3"] {
            assert_eq!(contacts(&c, i, fan), 0, "node {i}: {fan} still lists star");
        }
    }
}
