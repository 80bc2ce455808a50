//! The unbuffered stream against rustls's own buffered client (tokio-rustls).

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream as ClientStream;

use super::*;
use crate::tls::CertSource;

fn pair_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "presenced-lean-tls-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A server stream and a client stream over an in-memory pipe, handshake done.
async fn connected() -> (TlsStream<DuplexStream>, ClientStream<DuplexStream>) {
    connected_with(rustls::DEFAULT_VERSIONS).await
}

/// The same, the client offering only `versions`.
async fn connected_with(
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> (TlsStream<DuplexStream>, ClientStream<DuplexStream>) {
    let dir = pair_dir();
    let (acc, cert) =
        crate::tls::acceptor(&CertSource::SelfSigned { dir: dir.clone() }, "example.test").unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let _ = std::fs::remove_dir_all(&dir);
    // A small pipe, so large writes meet back-pressure.
    let (a, b) = duplex(8 * 1024);
    let client = TlsConnector::from(Arc::new(cfg));
    let name = ServerName::try_from("example.test").unwrap();
    let (s, c) = tokio::join!(acc.accept(a), client.connect(name, b));
    (s.unwrap(), c.unwrap())
}

fn idle_buffers(s: &TlsStream<DuplexStream>) -> [usize; 3] {
    [
        s.incoming.capacity(),
        s.plain.capacity(),
        s.outgoing.capacity(),
    ]
}

#[tokio::test]
async fn both_directions_carry_large_data_with_back_pressure() {
    let (s, c) = connected().await;
    let (mut sr, mut sw) = tokio::io::split(s);
    let (mut cr, mut cw) = tokio::io::split(c);
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let up = big.clone();
    let down = big.clone();
    let client_writes = tokio::spawn(async move {
        cw.write_all(&up).await.unwrap();
        cw.flush().await.unwrap();
        cw
    });
    let server_writes = tokio::spawn(async move {
        sw.write_all(&down).await.unwrap();
        sw.flush().await.unwrap();
        sw
    });
    let mut got = vec![0; big.len()];
    sr.read_exact(&mut got).await.unwrap();
    assert!(got == big, "the server read what the client wrote");
    let mut back = vec![0; big.len()];
    cr.read_exact(&mut back).await.unwrap();
    assert!(back == big, "the client read what the server wrote");
    let (_cw, _sw) = (client_writes.await.unwrap(), server_writes.await.unwrap());
}

#[tokio::test]
async fn an_idle_stream_holds_no_buffers() {
    let (mut s, mut c) = connected().await;
    c.write_all(b"<presence/>").await.unwrap();
    c.flush().await.unwrap();
    let mut b = [0u8; 64];
    let n = s.read(&mut b).await.unwrap();
    assert_eq!(&b[..n], b"<presence/>");
    s.write_all(b"<presence/>").await.unwrap();
    s.flush().await.unwrap();
    // Waiting for the next bytes: nothing is held.
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut rb = ReadBuf::new(&mut b);
    assert!(Pin::new(&mut s).poll_read(&mut cx, &mut rb).is_pending());
    assert_eq!(idle_buffers(&s), [0, 0, 0]);
    let n = c.read(&mut b).await.unwrap();
    assert_eq!(&b[..n], b"<presence/>");
}

#[tokio::test]
async fn a_client_key_update_is_answered_and_data_flows_on() {
    let (s, mut c) = connected().await;
    let (mut sr, mut sw) = tokio::io::split(s);
    c.get_mut().1.refresh_traffic_keys().unwrap();
    c.write_all(b"after the update").await.unwrap();
    c.flush().await.unwrap();
    let mut b = [0u8; 64];
    let n = sr.read(&mut b).await.unwrap();
    assert_eq!(&b[..n], b"after the update");
    sw.write_all(b"still here").await.unwrap();
    sw.flush().await.unwrap();
    let n = c.read(&mut b).await.unwrap();
    assert_eq!(&b[..n], b"still here");
}

#[tokio::test]
async fn a_tls_1_2_client_is_served_too() {
    let (mut s, mut c) = connected_with(&[&rustls::version::TLS12]).await;
    assert_eq!(
        c.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    c.write_all(b"<stream/>").await.unwrap();
    c.flush().await.unwrap();
    let mut b = [0u8; 16];
    let n = s.read(&mut b).await.unwrap();
    assert_eq!(&b[..n], b"<stream/>");
    s.write_all(b"ok").await.unwrap();
    s.flush().await.unwrap();
    let n = c.read(&mut b).await.unwrap();
    assert_eq!(&b[..n], b"ok");
}

#[tokio::test]
async fn close_notify_ends_both_sides_cleanly() {
    let (mut s, mut c) = connected().await;
    c.shutdown().await.unwrap();
    let mut b = [0u8; 16];
    assert_eq!(
        s.read(&mut b).await.unwrap(),
        0,
        "close_notify reads as the end"
    );
    s.write_all(b"bye").await.unwrap();
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).await.unwrap();
    assert_eq!(
        rest, b"bye",
        "the server's close_notify is a clean end, not a truncation"
    );
}

#[tokio::test]
async fn garbage_instead_of_a_client_hello_is_refused() {
    let dir = pair_dir();
    let (acc, _) =
        crate::tls::acceptor(&CertSource::SelfSigned { dir: dir.clone() }, "example.test").unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let (a, mut b) = duplex(4096);
    b.write_all(b"<stream:stream xmlns='jabber:client'>")
        .await
        .unwrap();
    let e = acc.accept(a).await.err().expect("not TLS");
    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    // A record header claiming the largest length, then silence and the end.
    let (a, mut b) = duplex(4096);
    b.write_all(&[22, 3, 1, 0xff, 0xff]).await.unwrap();
    drop(b);
    assert!(acc.accept(a).await.is_err());
}

#[tokio::test]
async fn a_broken_client_hello_is_answered_with_a_fatal_alert() {
    let dir = pair_dir();
    let (acc, _) =
        crate::tls::acceptor(&CertSource::SelfSigned { dir: dir.clone() }, "example.test").unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let (a, mut b) = duplex(4096);
    // A handshake record holding a ClientHello of one byte: it cannot be decoded.
    b.write_all(&[22, 3, 1, 0, 5, 1, 0, 0, 1, 0]).await.unwrap();
    let e = acc.accept(a).await.err().expect("refused");
    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    // What the server sent before closing: one alert record (content type 21), level
    // fatal (2), not the bare close of a socket.
    let mut got = Vec::new();
    b.read_to_end(&mut got).await.unwrap();
    assert!(got.len() >= 7, "no alert: {got:?}");
    assert_eq!((got[0], got[5]), (21, 2), "{got:?}");
}
