//! The real presencectl binary against a real 3-node cluster (presenced processes on
//! loopback, started by the end-to-end harness): a 100,000-row roster import, a bad row
//! deep in a file of that size, Ctrl-C and re-runs, and user import with generated
//! passwords.
//!
//! `cargo nextest run -p presencectl` builds only this package's binaries, so the node
//! binary is built here first (a no-op when it is up to date).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use presenced_e2e::{Cluster, Out, SECRET};
use serde_json::Value;

/// Users of the roster test (few: accounts cost a PBKDF2 each, slow in a debug
/// build), and the contacts each one adds: LOCAL other users (each add also lists the
/// adder on the contact's side) and as many in another domain, 200 rows per user.
const USERS: usize = 500;
const LOCAL: usize = 100;
/// Items each user ends with: its local and remote contacts, and its local adders.
const ITEMS: u64 = 3 * LOCAL as u64;

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
    let t = Instant::now();
    c.ctl(0, &["user", "import", &f]).ok();
    eprintln!("{USERS} accounts in {:?}", t.elapsed());
    c.ctl(0, &["settings", "set", "max_contact_list_size", "500"])
        .ok();

    // User i adds u(i+1) .. u(i+LOCAL) and LOCAL contacts in another domain.
    let mut rows = String::from("user,contact,name,group\n");
    for i in 0..USERS {
        for k in 1..=LOCAL {
            let j = (i + k) % USERS;
            rows.push_str(&format!("u{i},u{j},User {j},Team{}\n", k % 3));
            rows.push_str(&format!("u{i},c{k}@remote.example,Far {k},\n"));
        }
    }
    assert_eq!(rows.lines().count(), 1 + 100_000);

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

    // The good file, interrupted with Ctrl-C (SIGINT) once the first rows are in: the
    // call in flight finishes, the summary so far is printed, exit 130.
    let f = write(&c, "contacts.csv", &rows);
    let t = Instant::now();
    let child = Command::new(c.bin("presencectl"))
        .args(["--node", &c.nodes[0].admin_addr(), "--secret", SECRET])
        .args(&c.ctl_runner().tls_args)
        .args(["--json", "roster", "import", &f, "--chunk", "500"])
        .env_remove("PRESENCECTL_NODE")
        .env_remove("PRESENCED_SECRET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn presencectl");
    while c.ctl_json(1, &["roster", "show", "u0"])["items"]
        .as_array()
        .is_none_or(Vec::is_empty)
    {
        assert!(t.elapsed() < Duration::from_secs(60), "no row arrived");
        std::thread::sleep(Duration::from_millis(100));
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(kill.success());
    let o = child.wait_with_output().expect("wait presencectl");
    let (code, stderr) = (o.status.code(), String::from_utf8_lossy(&o.stderr));
    assert_eq!(code, Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    let v: Value = serde_json::from_slice(&o.stdout).expect("JSON summary");
    let first = v["added"].as_u64().unwrap();
    assert!(first > 0 && first < 100_000, "{v}");
    assert_eq!(v["sent"], first, "{v}");
    eprintln!("interrupted after {first} rows, {:?}", t.elapsed());

    // Run again: the rest is added, what the first run added is unchanged.
    let t = Instant::now();
    let o = c.ctl(0, &["roster", "import", &f]);
    let took = t.elapsed();
    assert_eq!(o.code, 0, "{}", show(&o));
    assert_eq!(
        o.stdout,
        format!(
            "imported: {} added, {first} unchanged, 0 refused\n",
            100_000 - first
        )
    );
    eprintln!("imported 100000 rows in {took:?}");
    let t = Instant::now();
    for i in [0, 2] {
        let counts = contact_counts(&c, i);
        assert_eq!(counts.len(), USERS);
        assert!(
            counts.values().all(|&n| n == ITEMS),
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
    let versions: Vec<u64> = ["u0", "u250", "u499"]
        .iter()
        .map(|u| roster_version(&c, u))
        .collect();
    eprintln!("counts checked in {:?}", t.elapsed());

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
    assert!(counts.values().all(|&n| n == ITEMS), "{counts:?}");
    let again: Vec<u64> = ["u0", "u250", "u499"]
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
