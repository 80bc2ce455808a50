//! Real TLS handshakes on loopback between material issued by `pki`: who is let in,
//! who is refused, and that a reload changes what new connections see.

use std::path::Path;
use std::sync::Arc;

use presenced_tls::{ClientAuth, Connector, Expect, Identity, Material, Paths, Transport, pki};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;
use tower_service::Service;

fn ca(dir: &Path, name: &str) {
    pki::init_ca(dir, name, pki::CA_DAYS).unwrap();
}

fn issue(ca_dir: &Path, who: Identity, out: &Path, stem: &str) -> Arc<Material> {
    let i = pki::issue(ca_dir, &who, &["127.0.0.1".into()], 30).unwrap();
    let trust = std::fs::read_to_string(ca_dir.join(pki::CA_CERT)).unwrap();
    pki::write_issued(out, stem, &i, Some(&trust)).unwrap();
    Material::load(Paths::in_dir(out, stem)).unwrap()
}

/// Serve one listener; each accepted connection echoes a byte and reports its peer.
async fn serve(
    server: &Transport,
    auth: ClientAuth,
) -> (String, tokio::sync::mpsc::Receiver<Option<Identity>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let mut inc = server.incoming(l, auth, "test");
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        while let Some(Ok(c)) = inc.next().await {
            let id = c.info.identity.clone();
            let _ = tx.send(id).await;
            tokio::spawn(async move {
                let mut c = c;
                let mut b = [0u8; 1];
                if c.read_exact(&mut b).await.is_ok() {
                    let _ = c.write_all(&b).await;
                }
            });
        }
    });
    (addr, rx)
}

async fn dial(client: Option<&Arc<Material>>, addr: &str, expect: Expect) -> Result<(), String> {
    let mut conn = Connector::new(client, expect);
    let uri: http::Uri = format!("http://{addr}").parse().unwrap();
    let io = conn.call(uri).await.map_err(|e| e.to_string())?;
    let mut io = io.into_inner();
    io.write_all(b"x").await.map_err(|e| e.to_string())?;
    let mut b = [0u8; 1];
    io.read_exact(&mut b).await.map_err(|e| e.to_string())?;
    // A plain-text dialler reads the server's TLS alert, not the echo.
    if &b != b"x" {
        return Err(format!("no echo: got {b:?}"));
    }
    Ok(())
}

#[tokio::test]
async fn nodes_of_one_ca_meet_and_everyone_else_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let (ca_a, ca_b) = (t.path().join("ca-a"), t.path().join("ca-b"));
    ca(&ca_a, "a");
    ca(&ca_b, "b");
    let n1 = issue(&ca_a, Identity::Node(1), &t.path().join("n1"), "node");
    let n2 = issue(&ca_a, Identity::Node(2), &t.path().join("n2"), "node");
    let op = issue(
        &ca_a,
        Identity::Operator("ops".into()),
        &t.path().join("op"),
        "operator",
    );
    let stranger = issue(&ca_b, Identity::Node(1), &t.path().join("x"), "node");

    let (addr, mut seen) = serve(&Transport::Mutual(n2.clone()), ClientAuth::Required).await;
    dial(Some(&n1), &addr, Expect::Node(2)).await.unwrap();
    assert_eq!(seen.recv().await.unwrap(), Some(Identity::Node(1)));

    // The server is node 2, not node 3.
    let e = dial(Some(&n1), &addr, Expect::Node(3)).await.unwrap_err();
    assert!(e.contains("expected node 3"), "{e}");
    // Another cluster's CA, either way round.
    assert!(dial(Some(&stranger), &addr, Expect::Node(2)).await.is_err());
    let (addr_x, _) = serve(&Transport::Mutual(stranger.clone()), ClientAuth::Required).await;
    assert!(dial(Some(&n1), &addr_x, Expect::Node(1)).await.is_err());
    // No certificate on a listener that requires one; no TLS at all.
    let ca_only = Material::load(Paths {
        ca: ca_a.join(pki::CA_CERT),
        cert: None,
    })
    .unwrap();
    assert!(dial(Some(&ca_only), &addr, Expect::Node(2)).await.is_err());
    assert!(dial(None, &addr, Expect::Node(2)).await.is_err());

    // The admin-style listener lets a certificate-less client in (it then needs the
    // secret) and names an operator who has a certificate.
    let (admin, mut seen) = serve(&Transport::Mutual(n2.clone()), ClientAuth::Optional).await;
    dial(Some(&ca_only), &admin, Expect::AnyNode).await.unwrap();
    assert_eq!(seen.recv().await.unwrap(), None);
    dial(Some(&op), &admin, Expect::AnyNode).await.unwrap();
    assert_eq!(
        seen.recv().await.unwrap(),
        Some(Identity::Operator("ops".into()))
    );

    // An operator certificate cannot serve as a node.
    let (addr_op, _) = serve(&Transport::Mutual(op.clone()), ClientAuth::Optional).await;
    assert!(dial(Some(&n1), &addr_op, Expect::AnyNode).await.is_err());
}

#[tokio::test]
async fn a_ca_rolls_with_an_overlap_and_the_old_one_is_then_refused() {
    let t = tempfile::tempdir().unwrap();
    let (old, new) = (t.path().join("old"), t.path().join("new"));
    ca(&old, "c");
    ca(&new, "c");
    let d1 = t.path().join("n1");
    let d2 = t.path().join("n2");
    let n1 = issue(&old, Identity::Node(1), &d1, "node");
    let n2 = issue(&old, Identity::Node(2), &d2, "node");
    let (addr, _) = serve(&Transport::Mutual(n2.clone()), ClientAuth::Required).await;
    let read = |p: &Path| std::fs::read_to_string(p.join(pki::CA_CERT)).unwrap();
    let both = format!("{}{}", read(&old), read(&new));

    // Step 1: both nodes trust both CAs.
    for (d, m) in [(&d1, &n1), (&d2, &n2)] {
        pki::write_file(&d.join(pki::CA_CERT), both.as_bytes(), false).unwrap();
        m.reload().unwrap();
        assert_eq!(m.current().trusted_cas, 2);
    }
    // Step 2: node 1 gets a certificate of the new CA; node 2 still has the old one.
    let i = pki::issue(&new, &Identity::Node(1), &[], 30).unwrap();
    pki::write_issued(&d1, "node", &i, None).unwrap();
    assert!(n1.changed_on_disk());
    n1.reload().unwrap();
    dial(Some(&n1), &addr, Expect::Node(2)).await.unwrap();
    // Step 3: node 2 rolls too, and both drop the old CA.
    let i = pki::issue(&new, &Identity::Node(2), &[], 30).unwrap();
    pki::write_issued(&d2, "node", &i, Some(&read(&new))).unwrap();
    n2.reload().unwrap();
    pki::write_file(&d1.join(pki::CA_CERT), read(&new).as_bytes(), false).unwrap();
    n1.reload().unwrap();
    dial(Some(&n1), &addr, Expect::Node(2)).await.unwrap();
    // A node still holding an old-CA certificate is now refused.
    let stale = issue(&old, Identity::Node(3), &t.path().join("n3"), "node");
    assert!(dial(Some(&stale), &addr, Expect::Node(2)).await.is_err());

    // A reload that would change who this process is, or a broken file, is refused
    // and the material in use stays.
    let i = pki::issue(&new, &Identity::Node(9), &[], 30).unwrap();
    pki::write_issued(&d2, "node", &i, None).unwrap();
    let e = n2.reload().unwrap_err();
    assert!(e.contains("node 9"), "{e}");
    pki::write_file(&d2.join(pki::NODE_KEY), b"garbage", true).unwrap();
    assert!(n2.reload().is_err());
    dial(Some(&n1), &addr, Expect::Node(2)).await.unwrap();
}

#[test]
fn an_expired_or_foreign_certificate_is_refused_at_load() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    ca(&a, "a");
    ca(&b, "b");
    let i = pki::issue(&b, &Identity::Node(1), &[], 30).unwrap();
    let trust = std::fs::read_to_string(a.join(pki::CA_CERT)).unwrap();
    pki::write_issued(&t.path().join("n"), "node", &i, Some(&trust)).unwrap();
    let e = Material::load(Paths::in_dir(&t.path().join("n"), "node")).unwrap_err();
    assert!(e.contains("not valid under the trust bundle"), "{e}");
    assert!(
        pki::init_ca(&a, "a", 10)
            .unwrap_err()
            .contains("never overwritten")
    );
}
