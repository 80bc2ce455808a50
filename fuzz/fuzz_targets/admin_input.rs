//! The admin API's operator input, normalised by the functions `presenced-admin`
//! calls before it proposes anything (they live in `presenced-model` so that `apply`
//! can repeat the cheap half): user names, contacts (bare JIDs), domains, setting
//! keys and values, per-user policies, roster item labels.
//!
//! Input: byte 0 picks the function; the rest is its arguments, separated by 0xFF
//! (never part of UTF-8), each taken as UTF-8 (as a gRPC string field is).
//! Properties, beyond "no panic": what normalisation accepts, the state machine's
//! validation accepts too (else a request the admin took is refused by `apply`);
//! normalising twice changes nothing; a parsed setting or policy value printed and
//! parsed again is the same value, and `Settings::set` agrees with `parse_value`.
#![no_main]

use presenced_fuzz::{bounded, fields};
use presenced_model::names;
use presenced_model::settings::{self, Override, PolicyKey, Settings};

const MAX_INPUT: usize = 8 * 1024;
const DOMAIN: &str = "example.test";

fn user(s: &str) {
    if let Ok(u) = names::normalize_user(s, DOMAIN) {
        assert!(
            names::validate_user(&u).is_ok(),
            "normalised user {u:?} (from {s:?}) fails validation"
        );
        assert_eq!(
            names::normalize_user(&u, DOMAIN).as_deref(),
            Ok(u.as_str()),
            "not idempotent"
        );
    }
}

fn contact(s: &str) {
    if let Ok(c) = names::normalize_contact(s, DOMAIN) {
        assert!(
            names::validate_bare_jid(&c).is_ok(),
            "normalised contact {c:?} (from {s:?}) fails validation"
        );
        assert_eq!(
            names::normalize_contact(&c, DOMAIN).as_deref(),
            Ok(c.as_str()),
            "not idempotent"
        );
    }
}

fn domain(s: &str) {
    if let Ok(d) = names::normalize_domain(s) {
        assert!(
            names::validate_domain(&d).is_ok(),
            "normalised domain {d:?} (from {s:?}) fails validation"
        );
        assert_eq!(
            names::normalize_domain(&d).as_deref(),
            Ok(d.as_str()),
            "not idempotent"
        );
    }
}

fn setting(key: &str, value: &str) {
    let Ok(def) = settings::resolve_key(key) else {
        assert!(Settings::default().set(key, value).is_err());
        return;
    };
    assert!(
        std::ptr::eq(
            settings::resolve_key(def.key).expect("canonical key resolves"),
            def
        ),
        "canonical key {} resolves elsewhere",
        def.key
    );
    let parsed = settings::parse_value(def, value);
    let mut s = Settings::default();
    match (&parsed, s.set(key, value)) {
        (Ok(v), Ok((k, v2))) => {
            assert_eq!(k, def.key);
            assert_eq!(*v, v2);
            assert_eq!(s.get(def.key), Some(*v), "set then get differs");
            let printed = v.to_string();
            assert_eq!(
                settings::parse_value(def, &printed),
                Ok(*v),
                "{printed:?} does not parse back"
            );
        }
        (Err(_), Err(_)) => {}
        (a, b) => panic!("parse_value {a:?} and Settings::set {b:?} disagree"),
    }
}

fn policy(key: &str, value: &str) {
    if let Ok(k) = PolicyKey::parse(key) {
        assert_eq!(PolicyKey::parse(k.as_str()), Ok(k));
    }
    if let Ok(v) = Override::parse(value) {
        assert_eq!(Override::parse(&v.to_string()), Ok(v));
    }
}

fn labels(name: &str, groups: &[String]) {
    let name = (!name.is_empty()).then_some(name);
    if let Ok((n, g)) = names::validate_item_labels(name, groups) {
        let g2: Vec<String> = g.iter().cloned().collect();
        assert_eq!(
            names::validate_item_labels(n.as_deref(), &g2).ok(),
            Some((n.clone(), g.clone())),
            "labels not idempotent"
        );
    }
}

libfuzzer_sys::fuzz_target!(
    init: {
        presenced_fuzz::write_seeds_and_exit_if_asked(seeds);
    },
    |data: &[u8]| {
        let Some(data) = bounded(data, MAX_INPUT) else { return };
        let Some((&sel, rest)) = data.split_first() else { return };
        let args: Vec<&str> = fields(rest).filter_map(|f| std::str::from_utf8(f).ok()).collect();
        let arg = |i: usize| args.get(i).copied().unwrap_or("");
        match sel % 6 {
            0 => user(arg(0)),
            1 => contact(arg(0)),
            2 => domain(arg(0)),
            3 => setting(arg(0), arg(1)),
            4 => policy(arg(0), arg(1)),
            _ => labels(arg(0), &args.iter().skip(1).map(|s| s.to_string()).collect::<Vec<_>>()),
        }
    }
);

/// What operators type (README, docs/settings.md) and a few near misses.
fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut add = |sel: u8, args: &[&str]| {
        let mut s = vec![sel];
        for (i, a) in args.iter().enumerate() {
            if i > 0 {
                s.push(0xff);
            }
            s.extend_from_slice(a.as_bytes());
        }
        out.push(s);
    };
    for u in [
        "alice",
        "Alice",
        " bob ",
        "ÄRGER",
        "a b",
        "x@y",
        "ﬀ",
        "\u{212B}ngstr\u{F6}m",
    ] {
        add(0, &[u]);
    }
    for c in [
        "bob",
        "Bob@Example.TEST",
        "carol@other.example.",
        "@x",
        "a@b/c",
        "a@b@c",
        "dave@xn--bcher-kva.example",
    ] {
        add(1, &[c]);
    }
    for d in ["Example.TEST", "example.test.", "bücher.example", "a/b", ""] {
        add(2, &[d]);
    }
    for (k, v) in [
        ("max_contact_list_size", "300"),
        ("presence.max_contact_list_size", "unlimited"),
        ("availability_sharing", "off"),
        ("adhoc_subscriptions.enabled", "yes"),
        ("enabled", "on"),
        ("max_per_user", "5"),
        ("messaging.broadcast_max_recipients", "100000"),
        ("expiry_secs", " 42 "),
    ] {
        add(3, &[k, v]);
    }
    for (k, v) in [
        ("availability_sharing", "inherit"),
        ("presence.view_without_approval", "Off"),
    ] {
        add(4, &[k, v]);
    }
    add(5, &["Bob as alice calls him", "Team", " Team ", "Friends"]);
    out
}
