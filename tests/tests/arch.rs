//! The crate graph of ARCHITECTURE.md, checked against `cargo metadata`: a wrong
//! dependency edge fails here.
//!
//! adapters → router → policy/model; cluster only from router, admin, the node binary
//! and the in-process test kit;
//! openraft only in cluster; sled only in storage; no XML, JID or SIP crate in the
//! protocol-neutral core.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

/// Normal (non-dev, non-build) dependencies of every workspace package, by name.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let mut g = BTreeMap::new();
    for p in meta["packages"].as_array().unwrap() {
        let is_member = meta["workspace_members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m == &p["id"]);
        if !is_member {
            continue;
        }
        let deps = p["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["kind"].is_null())
            .map(|d| d["name"].as_str().unwrap().to_string())
            .collect();
        g.insert(p["name"].as_str().unwrap().to_string(), deps);
    }
    g
}

fn ours(g: &BTreeMap<String, BTreeSet<String>>, krate: &str) -> BTreeSet<String> {
    g[krate]
        .iter()
        .filter(|d| d.starts_with("presenced"))
        .cloned()
        .collect()
}

fn set(xs: &[&str]) -> BTreeSet<String> {
    xs.iter().map(|s| s.to_string()).collect()
}

#[test]
fn crate_graph_is_the_documented_one() {
    let g = graph();
    // Internal edges, exactly.
    let expected: &[(&str, &[&str])] = &[
        ("presenced-model", &[]),
        ("presenced-storage", &[]),
        ("presenced-proto", &[]),
        ("presenced-tls", &[]),
        ("presenced-policy", &["presenced-model"]),
        (
            "presenced-cluster",
            &[
                "presenced-model",
                "presenced-proto",
                "presenced-storage",
                "presenced-tls",
            ],
        ),
        (
            "presenced-router",
            &[
                "presenced-cluster",
                "presenced-model",
                "presenced-policy",
                "presenced-proto",
                "presenced-tls",
            ],
        ),
        ("presenced-xmpp", &["presenced-router"]),
    ];
    for (krate, deps) in expected {
        assert_eq!(
            ours(&g, krate),
            set(deps),
            "internal dependencies of {krate}"
        );
    }
    // Nothing depends on a binary, and adapters reach the cluster only via the router.
    for (krate, deps) in &g {
        for bin in [
            "presenced",
            "presencectl",
            "presenced-loadgen",
            "presenced-e2e",
            "presenced-testkit",
        ] {
            assert!(!deps.contains(bin), "{krate} depends on the binary {bin}");
        }
        if krate == "presenced-xmpp" {
            for inner in ["presenced-cluster", "presenced-policy", "presenced-model"] {
                assert!(!deps.contains(inner), "the XMPP adapter depends on {inner}");
            }
        }
    }
    let cluster_users: BTreeSet<String> = g
        .iter()
        .filter(|(_, d)| d.contains("presenced-cluster"))
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(
        cluster_users,
        set(&[
            "presenced-router",
            "presenced-admin",
            "presenced",
            "presenced-testkit"
        ]),
        "who uses the cluster crate"
    );
}

#[test]
fn third_party_crates_stay_in_their_layer() {
    let g = graph();
    let users_of = |dep: &str| -> BTreeSet<String> {
        g.iter()
            .filter(|(_, d)| d.contains(dep))
            .map(|(k, _)| k.clone())
            .collect()
    };
    assert_eq!(
        users_of("openraft"),
        set(&["presenced-cluster"]),
        "openraft"
    );
    assert_eq!(users_of("sled"), set(&["presenced-storage"]), "sled");
    for core in ["presenced-router", "presenced-policy", "presenced-model"] {
        for wire in ["quick-xml", "jid", "rsip", "minidom", "xmpp-parsers"] {
            assert!(!g[core].contains(wire), "{core} depends on {wire}");
        }
    }
}
