//! The real presencectl binary against a real 3-node cluster (presenced processes on
//! loopback, started by the end-to-end harness): a 100,000-row roster import, a bad row
//! deep in a file of that size, re-runs, and user import with generated passwords.
//!
//! `cargo nextest run -p presencectl` builds only this package's binaries, so the node
//! binary is built here first (a no-op when it is up to date).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use presenced_e2e::{Cluster, Out};
use serde_json::Value;

/// Users of the roster test, and contacts each one adds (every add also lists the
/// adder on the contact's side, so each user ends with twice as many items).
const USERS: usize = 1_000;
const CONTACTS: usize = 100;

fn build_node_binary() {
    let exe = std::env::current_exe().expect("current exe");
    let release = exe
        .ancestors()
        .nth(2)
        .and_then(Path::file_name)
        .is_some_and(|p| p == "release");
    let mut c = Command::new(env!("CARGO"));
    c.args(["build", "-q", "-p", "presenced", "--bin", "presenced"]);
    if release {
        c.arg("--release");
    }
    let status = c.status().expect("run cargo build");
    assert!(status.success(), "cargo build -p presenced failed");
}

fn cluster() -> Cluster {
    let t = Instant::now();
    build_node_binary();
    eprintln!("node binary ready in {:?}", t.elapsed());
    let t = Instant::now();
    let c = Cluster::start(3);
    eprintln!("cluster up in {:?}", t.elapsed());
    c
}

fn write(c: &Cluster, name: &str, content: &str) -> String {
    let p = c.dir.path().join(name);
    std::fs::write(&p, content).expect("write csv");
    p.to_str().expect("utf-8 path").to_string()
}

/// Contacts per user, from `user list` on node `i`.
fn contact_counts(c: &Cluster, i: usize) -> BTreeMap<String, u64> {
    let v = c.ctl_json(i, &["user", "list"]);
    let users = v["users"].as_array().cloned().unwrap_or_default();
    users
        .iter()
        .map(|u| {
            (
                u["name"].as_str().unwrap_or_default().to_string(),
                u["contacts"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect()
}

fn roster_version(c: &Cluster, user: &str) -> u64 {
    c.ctl_json(0, &["roster", "show", user])["version"]
        .as_u64()
        .unwrap_or(0)
}

fn show(o: &Out) -> String {
    format!(
        "exit {}\nstdout: {}\nstderr: {}",
        o.code, o.stdout, o.stderr
    )
}

#[test]
fn roster_import_of_100k_rows_bad_row_and_rerun() {
    let c = cluster();
    let users: String = (0..USERS).map(|i| format!("u{i},pw-{i}\n")).collect();
    let f = write(&c, "users.csv", &users);
    c.ctl(0, &["user", "import", &f]).ok();

    // user i adds u(i+1) .. u(i+CONTACTS): in the end everyone has CONTACTS items of
    // their own and CONTACTS from the users that added them.
    let mut rows = String::from("user,contact,name,group\n");
    for i in 0..USERS {
        for k in 1..=CONTACTS {
            let j = (i + k) % USERS;
            rows.push_str(&format!("u{i},u{j},User {j},Team{}\n", k % 3));
        }
    }
    assert_eq!(rows.lines().count(), 1 + USERS * CONTACTS);

    // A bad row at line 99,999: named, and nothing is sent.
    let mut bad: Vec<&str> = rows.lines().collect();
    bad[99_998] = "u7,";
    let bad = bad.join("\n") + "\n";
    let f = write(&c, "contacts-bad.csv", &bad);
    let t = Instant::now();
    let o = c.ctl(0, &["roster", "import", &f]);
    eprintln!("bad file refused in {:?}", t.elapsed());
    assert_eq!(o.code, 2, "{}", show(&o));
    assert_eq!(
        o.stderr,
        format!("error: {f} line 99999: empty contact field\n")
    );
    assert!(o.stdout.is_empty(), "{}", show(&o));
    let counts = contact_counts(&c, 0);
    assert_eq!(counts.len(), USERS);
    assert!(counts.values().all(|&n| n == 0), "{counts:?}");

    // The good file: every row added, on every node.
    let f = write(&c, "contacts.csv", &rows);
    let t = Instant::now();
    let o = c.ctl(0, &["roster", "import", &f]);
    let took = t.elapsed();
    assert_eq!(o.code, 0, "{}", show(&o));
    assert_eq!(o.stdout, "imported: 100000 added, 0 refused\n");
    eprintln!("imported {} rows in {took:?}", USERS * CONTACTS);
    for i in [0, 2] {
        let counts = contact_counts(&c, i);
        assert_eq!(counts.len(), USERS);
        assert!(
            counts.values().all(|&n| n == 2 * CONTACTS as u64),
            "node {}: {counts:?}",
            i + 1
        );
    }
    let items = c.ctl_json(0, &["roster", "show", "u0"]);
    let u1 = items["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["jid"] == "u1@example.test")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(u1["name"], "User 1", "{u1}");
    assert_eq!(u1["groups"][0], "Team1", "{u1}");
    let versions: Vec<u64> = ["u0", "u500", "u999"]
        .iter()
        .map(|u| roster_version(&c, u))
        .collect();

    // Re-run (through another node, as JSON): nothing is added twice, nothing changes.
    let t = Instant::now();
    let o = c.ctl(1, &["--json", "roster", "import", &f]);
    eprintln!("re-run in {:?}", t.elapsed());
    assert_eq!(o.code, 0, "{}", show(&o));
    let v = o.json();
    assert_eq!(
        (&v["added"], &v["unchanged"], &v["refused_count"]),
        (&Value::from(0), &Value::from(100_000), &Value::from(0)),
        "{v}"
    );
    let counts = contact_counts(&c, 0);
    assert!(
        counts.values().all(|&n| n == 2 * CONTACTS as u64),
        "{counts:?}"
    );
    let again: Vec<u64> = ["u0", "u500", "u999"]
        .iter()
        .map(|u| roster_version(&c, u))
        .collect();
    assert_eq!(versions, again, "a re-run changed rosters");
}

#[test]
fn user_import_with_and_without_passwords() {
    let c = cluster();
    let mut csv = String::from("user,password\n# half of them get a generated password\n");
    for i in 0..300 {
        if i % 2 == 0 {
            csv.push_str(&format!("p{i},pw-{i}\n"));
        } else {
            csv.push_str(&format!("g{i}\n"));
        }
    }
    let f = write(&c, "accounts.csv", &csv);
    let pw = c.dir.path().join("passwords.csv");
    let pw_s = pw.to_str().unwrap().to_string();

    // Rows without a password and nowhere to put the generated ones: nothing is sent.
    let o = c.ctl(0, &["user", "import", &f]);
    assert_eq!(o.code, 2, "{}", show(&o));
    assert!(o.stderr.contains("--passwords-out"), "{}", show(&o));
    assert!(contact_counts(&c, 0).is_empty());

    let o = c.ctl(0, &["user", "import", &f, "--passwords-out", &pw_s]);
    assert_eq!(o.code, 0, "{}", show(&o));
    assert!(
        o.stdout.starts_with("imported: 300 added, 0 refused\n"),
        "{}",
        show(&o)
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&pw).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let written = std::fs::read_to_string(&pw).unwrap();
    let lines: Vec<&str> = written.lines().collect();
    assert_eq!(lines[0], "user,password");
    assert_eq!(lines.len(), 1 + 150);
    for (n, line) in lines[1..].iter().enumerate() {
        let (user, password) = line.split_once(',').unwrap();
        assert_eq!(user, format!("g{}", 2 * n + 1));
        assert!(password.len() >= 16, "{line}");
        assert!(!o.stdout.contains(password) && !o.stderr.contains(password));
    }
    let accounts = contact_counts(&c, 2);
    assert_eq!(accounts.len(), 300);
    assert!(accounts.contains_key("p0") && accounts.contains_key("g299"));

    // Re-run: every account exists; none changes, the passwords file stays as it was.
    let o = c.ctl(
        1,
        &["--json", "user", "import", &f, "--passwords-out", &pw_s],
    );
    assert_eq!(o.code, 4, "{}", show(&o));
    let v = o.json();
    assert_eq!(v["added"], 0);
    assert_eq!(v["refused_by_code"]["user_exists"], 300, "{v}");
    assert_eq!(v["refused"][0]["user"], "p0");
    assert_eq!(std::fs::read_to_string(&pw).unwrap(), written);
}
