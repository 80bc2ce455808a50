//! The real presencectl binary against the fake admin service: user import (chunks in
//! file order, generated passwords only in the --passwords-out file, bad rows, re-runs).

mod common;

use common::*;

#[test]
fn user_import_chunks_and_passwords_file() {
    let s = serve(Fake::default());
    let mut csv = String::from("user,password\n# generated\n\n");
    for i in 0..1234 {
        if i % 2 == 0 {
            csv.push_str(&format!("u{i}\n"));
        } else {
            csv.push_str(&format!("u{i},pw{i}\n"));
        }
    }
    csv.push_str("taken1,pw\n");
    let file = temp_file("users.csv", &csv);
    let pw = file.with_file_name("passwords.csv");
    let _ = std::fs::remove_file(&pw);

    // Rows without a password and no --passwords-out: refused before sending anything.
    let o = run(&s, &["user", "import", file.to_str().unwrap()]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr.contains("617 of 1235 rows have no password")
            && o.stderr.contains("--passwords-out"),
        "{}",
        o.stderr
    );
    assert!(s.rec.lock().unwrap().user_import_calls.is_empty());

    let o = run(
        &s,
        &[
            "user",
            "import",
            file.to_str().unwrap(),
            "--passwords-out",
            pw.to_str().unwrap(),
        ],
    );
    assert_eq!(o.code, 4, "{}", o.stderr);
    assert!(
        o.stdout.starts_with(
            "imported: 1234 added, 1 refused\n  user_exists: 1 (taken1: user taken1 already exists)\n\
             generated passwords of 617 new accounts written to "
        ),
        "{}",
        o.stdout
    );
    assert_eq!(o.stderr, "error: 1 of 1235 rows refused\n");
    let calls = s.rec.lock().unwrap().user_import_calls.clone();
    assert_eq!(
        calls
            .iter()
            .map(|(c, retry)| (c.len(), *retry))
            .collect::<Vec<_>>(),
        [(1000, false), (235, false)]
    );
    let calls: Vec<_> = calls.into_iter().map(|(c, _)| c).collect();
    let flat: Vec<_> = calls.into_iter().flatten().collect();
    for (i, e) in flat.iter().take(1234).enumerate() {
        assert_eq!(e.name, format!("u{i}"));
        if i % 2 == 1 {
            assert_eq!(e.password, format!("pw{i}"));
        } else {
            assert!(e.password.len() >= 16, "{e:?}");
            assert!(!o.stdout.contains(&e.password) && !o.stderr.contains(&e.password));
        }
    }
    let written = std::fs::read_to_string(&pw).unwrap();
    let lines: Vec<&str> = written.lines().collect();
    assert_eq!(lines.len(), 1 + 617);
    assert_eq!(lines[0], "user,password");
    assert_eq!(lines[1], format!("u0,{}", flat[0].password));
    assert_eq!(lines[617], format!("u1232,{}", flat[1232].password));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&pw).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    // Re-run, JSON: every account exists; nothing is added to the passwords file and no
    // password shows.
    let o = run(
        &s,
        &[
            "--json",
            "user",
            "import",
            file.to_str().unwrap(),
            "--passwords-out",
            pw.to_str().unwrap(),
        ],
    );
    assert_eq!(o.code, 4, "{}", o.stderr);
    let v = o.json();
    assert_eq!(v["added"], 0);
    assert_eq!(v["refused_count"], 1235);
    assert_eq!(v["refused_by_code"]["user_exists"], 1235);
    assert_eq!(v["generated"], 0);
    assert_eq!(v["refused"][0]["user"], "u0");
    let again = s.rec.lock().unwrap().user_import_calls.clone();
    for e in again.iter().skip(3).flat_map(|(c, _)| c) {
        assert!(!o.stdout.contains(&e.password) || e.password.starts_with("pw"));
    }
    assert_eq!(std::fs::read_to_string(&pw).unwrap(), written);
}

#[test]
fn user_import_bad_row_sends_nothing() {
    let s = serve(Fake::default());
    let o = run_in(
        &s,
        &["user", "import", "-"],
        Some("alice,pw\n# c\n\nbob,pw,extra\n"),
    );
    assert_eq!(o.code, 2);
    assert!(
        o.stderr
            .starts_with("error: stdin line 4: expected user[,password] but found 3 fields"),
        "{}",
        o.stderr
    );
    assert!(s.rec.lock().unwrap().user_import_calls.is_empty());

    // All rows with passwords: no --passwords-out needed, from stdin.
    let o = run_in(&s, &["user", "import", "-"], Some("alice,pw1\nbob,pw2\n"));
    assert_eq!(
        (o.code, o.stdout.as_str()),
        (0, "imported: 2 added, 0 refused\n")
    );

    // An existing passwords file that others may read is refused before sending.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let pw = temp_file("open-passwords.csv", "user,password\n");
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
        let o = run_in(
            &s,
            &[
                "user",
                "import",
                "-",
                "--passwords-out",
                pw.to_str().unwrap(),
            ],
            Some("carol\n"),
        );
        assert_eq!(o.code, 2, "{}", o.stderr);
        assert!(o.stderr.contains("others may read it"), "{}", o.stderr);
        assert_eq!(s.rec.lock().unwrap().user_import_calls.len(), 1);
    }
}

#[test]
fn user_import_retries_a_call_whose_answer_was_lost() {
    let s = serve(Fake::default());
    let mut csv = String::new();
    for i in 0..700 {
        csv.push_str(&format!("u{i}\n"));
    }
    csv.push_str("flaky1\n");
    let file = temp_file("flaky-users.csv", &csv);
    let pw = file.with_file_name("flaky-passwords.csv");
    let _ = std::fs::remove_file(&pw);
    let o = run(
        &s,
        &[
            "user",
            "import",
            file.to_str().unwrap(),
            "--passwords-out",
            pw.to_str().unwrap(),
            "--chunk",
            "500",
        ],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout.starts_with("imported: 701 added, 0 refused\n"),
        "{}",
        o.stdout
    );
    assert!(
        o.stderr
            .starts_with("warning: no quorum: write not committed within 5s")
            && o.stderr.contains("trying the same rows again"),
        "{}",
        o.stderr
    );
    let calls = s.rec.lock().unwrap().user_import_calls.clone();
    assert_eq!(
        calls
            .iter()
            .map(|(c, retry)| (c.len(), *retry))
            .collect::<Vec<_>>(),
        [(500, false), (201, false), (201, true)]
    );
    // The retry carried the same passwords, and every account is in the file once.
    assert_eq!(calls[1].0, calls[2].0);
    let written = std::fs::read_to_string(&pw).unwrap();
    assert_eq!(written.lines().count(), 1 + 701);
    assert!(written.ends_with(&format!("flaky1,{}\n", calls[2].0[200].password)));
}
