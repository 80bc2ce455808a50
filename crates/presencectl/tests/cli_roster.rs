//! The real presencectl binary against the fake admin service: roster commands and
//! roster import (chunking, file order, bad rows).

mod common;

use common::*;

use presenced_proto::admin::ContactEntry;

#[test]
fn roster_commands() {
    let s = serve(Fake::default());
    let o = run(&s, &["roster", "show", "alice"]);
    assert_eq!(o.code, 0);
    assert!(
        o.stdout.starts_with("roster of alice (version 7)\n"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("Friends, Work"), "{}", o.stdout);
    assert!(
        o.stdout.ends_with("pending inbound: carol@example.test\n"),
        "{}",
        o.stdout
    );

    let o = run(
        &s,
        &[
            "roster", "add", "alice", "bob", "carol", "--group", "Friends",
        ],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(o.stdout, "added 2, refused 0\n");
    let call = s.rec.lock().unwrap().roster_calls.last().cloned().unwrap();
    assert_eq!(call.len(), 2);
    assert_eq!(call[1].group, "Friends");

    let o = run(&s, &["roster", "add", "alice", "full1"]);
    assert_eq!(o.code, 4);
    assert_eq!(
        o.stderr,
        "error: alice@example.test is at the maximum contact-list size (200)\n"
    );
    assert!(
        o.stdout
            .contains("  alice -> full1: alice@example.test is at"),
        "{}",
        o.stdout
    );

    let o = run(&s, &["--json", "roster", "add", "alice", "bob", "full2"]);
    assert_eq!(o.code, 4);
    let v = o.json();
    assert_eq!(v["added"][0]["contact"], "bob");
    assert_eq!(v["refused"][0]["code"], "contact_list_full");
    assert_eq!(v["exit"], 4);

    let o = run(&s, &["roster", "remove", "alice", "bob"]);
    assert_eq!(o.code, 3);
}

#[test]
fn roster_import_chunks_in_file_order() {
    let s = serve(Fake::default());
    let mut csv = String::from("user,contact,name,group\n# generated\n");
    for i in 0..12_345 {
        let contact = if i % 3000 == 2999 {
            format!("full{i}")
        } else {
            format!("c{i}")
        };
        csv.push_str(&format!("u{},{contact},Name {i}\n", i % 5));
        if i == 10 {
            csv.push('\n');
        }
    }
    let file = temp_file("import.csv", &csv);
    let o = run(
        &s,
        &[
            "roster",
            "import",
            file.to_str().unwrap(),
            "--chunk",
            "5000",
        ],
    );
    assert_eq!(o.code, 4, "{}", o.stderr);
    assert!(
        o.stdout.starts_with(
            "imported: 12341 added, 4 refused\n  contact_list_full: 4 (u4 -> full2999: "
        ),
        "{}",
        o.stdout
    );
    let calls = s.rec.lock().unwrap().roster_calls.clone();
    assert_eq!(
        calls.iter().map(Vec::len).collect::<Vec<_>>(),
        [5_000, 5_000, 2_345]
    );
    let flat: Vec<ContactEntry> = calls.into_iter().flatten().collect();
    for (i, e) in flat.iter().enumerate() {
        assert!(
            e.contact.ends_with(&format!("{i}")) && e.name == format!("Name {i}"),
            "entry {i}: {e:?}"
        );
    }

    // From stdin, JSON.
    let o = run_in(
        &s,
        &["--json", "roster", "import", "-"],
        Some("alice,bob\nalice,full1\n"),
    );
    assert_eq!(o.code, 4);
    let v = o.json();
    assert_eq!(v["added"], 1);
    assert_eq!(v["refused"][0]["contact"], "full1");

    // Contacts already in place are unchanged, not refused: exit 0.
    let o = run_in(
        &s,
        &["roster", "import", "-"],
        Some("alice,same1\nalice,bob\n"),
    );
    assert_eq!(
        (o.code, o.stdout.as_str()),
        (0, "imported: 1 added, 1 unchanged, 0 refused\n")
    );
    let o = run(&s, &["roster", "add", "alice", "same2"]);
    assert_eq!(
        (o.code, o.stdout.as_str()),
        (0, "added 0, unchanged 1, refused 0\n")
    );

    // All good: exit 0.
    let o = run_in(&s, &["roster", "import", "-"], Some("alice,bob\n"));
    assert_eq!(
        (o.code, o.stdout.as_str()),
        (0, "imported: 1 added, 0 refused\n")
    );
}

#[test]
fn roster_import_bad_row_sends_nothing() {
    let s = serve(Fake::default());
    let o = run_in(
        &s,
        &["roster", "import", "-"],
        Some("alice,bob\n# c\n\nalice\n"),
    );
    assert_eq!(o.code, 2);
    assert!(
        o.stderr.starts_with("error: stdin line 4: "),
        "{}",
        o.stderr
    );
    assert!(s.rec.lock().unwrap().roster_calls.is_empty());
    let o = run(&s, &["roster", "import", "/nonexistent/roster.csv"]);
    assert_eq!(o.code, 2);
}

#[test]
fn roster_import_retries_while_unavailable() {
    let s = serve(Fake::default());
    let mut csv = String::new();
    for i in 0..2500 {
        let contact = if i == 2100 {
            "flaky1".to_string()
        } else {
            format!("c{i}")
        };
        csv.push_str(&format!("u{},{contact}\n", i % 5));
    }
    let file = temp_file("flaky.csv", &csv);
    let o = run(&s, &["roster", "import", file.to_str().unwrap()]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(o.stdout, "imported: 2500 added, 0 refused\n");
    assert_eq!(
        o.stderr
            .lines()
            .filter(|l| l
                .starts_with("warning: no leader; retry later; trying the same rows again in "))
            .count(),
        2,
        "{}",
        o.stderr
    );
    let calls = s.rec.lock().unwrap().roster_calls.clone();
    assert_eq!(
        calls.iter().map(Vec::len).collect::<Vec<_>>(),
        [2000, 500, 500, 500]
    );
    assert_eq!(calls[1], calls[3]);
}
