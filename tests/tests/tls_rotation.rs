//! Rotation with real node processes and real clients: a node certificate, then the
//! CA (with an overlap: old and new trusted, every node re-issued, old dropped), one
//! node at a time while two slixmpp clients on different nodes keep chatting. Nothing
//! is lost, nobody reconnects, and afterwards fresh connections use the new material.

use std::process::Command;
use std::time::{Duration, Instant};

use presenced_e2e::Cluster;
use presenced_e2e::SECRET;
use presenced_e2e::tls::{metric_sum, node_status, runtime};
use presenced_e2e::xmpp::{Agent, jid};
use presenced_tls::pki;

const PW: &str = "tls-pw-1";
const T: Duration = Duration::from_secs(10);

fn ctl_cert(c: &Cluster, args: &[&str]) {
    let o = Command::new(c.bin("presencectl"))
        .arg("cert")
        .args(args)
        .output()
        .expect("presencectl cert");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn reloads(c: &Cluster, i: usize) -> f64 {
    metric_sum(
        &c.metrics(i),
        "presenced_tls_reloads_total",
        &[("outcome", "ok")],
    )
}

/// SIGHUP node `i` and wait until it reloaded.
fn reload(c: &Cluster, i: usize) {
    let before = reloads(c, i);
    c.signal(i, "HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while reloads(c, i) <= before {
        assert!(Instant::now() < deadline, "node {} did not reload", i + 1);
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_node_certificate_and_then_the_ca_roll_while_clients_chat() {
    let mut c = Cluster::with_users(&["alice", "bob"], PW, "");
    c.ctl(0, &["roster", "add", "alice", "bob"]).ok();
    let mut alice = Agent::login(&c, 0, "alice", "a", PW);
    let mut bob = Agent::login(&c, 1, "bob", "b", PW);
    alice.available();
    bob.available();
    let mut n = 0;
    let mut chat = |alice: &mut Agent, bob: &mut Agent| {
        for _ in 0..5 {
            n += 1;
            let body = format!("m{n}");
            alice.chat(&jid("bob"), &body);
            bob.expect_body(&body, T);
        }
    };
    chat(&mut alice, &mut bob);
    let ca = c.pki.ca_dir();
    let dir = |id: u64| c.pki.node_dir(id).display().to_string();

    // 1. Node 2 gets a new certificate of the same CA.
    ctl_cert(
        &c,
        &[
            "issue",
            "2",
            "--ca-dir",
            &ca.display().to_string(),
            "--out",
            &dir(2),
        ],
    );
    reload(&c, 1);
    chat(&mut alice, &mut bob);

    // 2. The CA rolls: a new one, trusted beside the old one on every node ...
    let new_ca = c.dir.path().join("new-ca");
    ctl_cert(&c, &["init-ca", "--dir", &new_ca.display().to_string()]);
    let bundle = c.dir.path().join("bundle.pem");
    let old_pem = std::fs::read_to_string(c.pki.ca_file()).unwrap();
    let new_pem = std::fs::read_to_string(new_ca.join(pki::CA_CERT)).unwrap();
    std::fs::write(&bundle, format!("{old_pem}{new_pem}")).unwrap();
    for i in 0..3 {
        pki::write_file(
            &c.pki.node_dir(i as u64 + 1).join(pki::CA_CERT),
            std::fs::read(&bundle).unwrap().as_slice(),
            false,
        )
        .unwrap();
        reload(&c, i);
        chat(&mut alice, &mut bob);
    }
    // ... every node re-issued by the new CA, one at a time ...
    for i in 0..3 {
        let id = (i + 1).to_string();
        ctl_cert(
            &c,
            &[
                "issue",
                &id,
                "--ca-dir",
                &new_ca.display().to_string(),
                "--out",
                &dir(i as u64 + 1),
                "--trust",
                &bundle.display().to_string(),
            ],
        );
        reload(&c, i);
        chat(&mut alice, &mut bob);
    }
    // ... and the old CA dropped.
    for i in 0..3 {
        pki::write_file(
            &c.pki.node_dir(i as u64 + 1).join(pki::CA_CERT),
            new_pem.as_bytes(),
            false,
        )
        .unwrap();
        reload(&c, i);
        chat(&mut alice, &mut bob);
    }
    // Nobody reconnected, nothing was lost (every message above arrived, in order).
    alice.expect_none("a disconnect", Duration::from_millis(200), |e| {
        e["ev"] == "disconnected"
    });
    bob.expect_none("a disconnect", Duration::from_millis(200), |e| {
        e["ev"] == "disconnected"
    });

    // Fresh connections use the new material: node 3 restarts and rejoins, a write
    // through it commits; a certificate of the old CA is now refused.
    c.kill(2);
    c.start_node(2);
    c.wait_healthy(2, Duration::from_secs(30));
    // The operator's presencectl trusts the new CA now too.
    let mut ctl = c.ctl_runner();
    ctl.tls_args = vec![
        "--ca".into(),
        new_ca.join(pki::CA_CERT).display().to_string(),
    ];
    let addr = c.nodes[2].admin_addr();
    ctl.run(
        &addr,
        SECRET,
        &["settings", "set", "max_contact_list_size", "321"],
    )
    .ok();
    let old = c.ctl(2, &["settings", "show"]);
    assert_eq!(
        old.code, 6,
        "a presencectl trusting only the old CA: {}",
        old.stderr
    );
    assert!(old.stderr.contains("UnknownIssuer"), "{}", old.stderr);
    let rt = runtime();
    rt.block_on(async {
        let stale = c.peer_transport(7); // issued by the old CA
        assert!(node_status(&c, 0, &stale, 1).await.is_err());
    });
    chat(&mut alice, &mut bob);
}
