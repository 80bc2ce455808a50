//! SASL as the server side of presenced runs it: rsasl's SCRAM-SHA-256, SCRAM-SHA-1
//! and PLAIN with presenced's own callback (`crates/xmpp/src/sasl.rs`, included here
//! as it is) over the router's account view of a real one-node cluster (started once
//! per process, account `alice`, password `pw`). The exchange follows
//! `c2s/auth.rs`: an optional initial response, then one response per challenge.
//!
//! Input: byte 0 picks the mechanism (low bits) and whether the initial response is
//! absent (0x80); the rest is the client's messages, separated by 0xFF. In a SCRAM
//! client-final message `$N` is replaced by the nonce of the server's challenge and
//! `,p=$P` by the proof a client knowing the password would send, so the fuzzer can
//! reach every step of the exchange, success included.
//!
//! Properties, beyond "no panic": a session that authenticates names `alice`, and only
//! an exchange that knew the password authenticates (the right PLAIN password, or a
//! SCRAM proof this harness computed); an authorization identity, if given, is alice.
#![no_main]

#[allow(dead_code, unused_imports)]
#[path = "../../crates/xmpp/src/sasl.rs"]
mod sasl;

use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use presenced_fuzz::{bounded, fields};
use rsasl::mechname::Mechname;
use rsasl::prelude::{SASLConfig, SASLServer};
use sha2::Digest;

const MAX_INPUT: usize = 4096;
const PASSWORD: &str = "pw";

struct World {
    _rt: tokio::runtime::Runtime,
    _cluster: presenced_testkit::TestCluster,
    config: Arc<SASLConfig>,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let cluster = rt.block_on(async {
            let c = presenced_testkit::TestCluster::start(1).await;
            c.user("alice").await; // password "pw", 1 iteration
            c
        });
        let config = sasl::config(cluster.nodes[0].router.clone()).expect("sasl config");
        World {
            _rt: rt,
            _cluster: cluster,
            config,
        }
    })
}

enum Hash {
    Sha1,
    Sha256,
}

fn hmac(h: &Hash, key: &[u8], msg: &[u8]) -> Vec<u8> {
    match h {
        Hash::Sha1 => {
            let mut m = Hmac::<sha1::Sha1>::new_from_slice(key).expect("any key length");
            m.update(msg);
            m.finalize().into_bytes().to_vec()
        }
        Hash::Sha256 => {
            let mut m = Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
            m.update(msg);
            m.finalize().into_bytes().to_vec()
        }
    }
}

/// The ClientProof of RFC 5802 §3 for `PASSWORD`.
fn proof(h: &Hash, salt: &[u8], iterations: u32, auth_message: &[u8]) -> Vec<u8> {
    let salted = match h {
        Hash::Sha1 => {
            let mut out = [0u8; 20];
            pbkdf2::pbkdf2_hmac::<sha1::Sha1>(PASSWORD.as_bytes(), salt, iterations, &mut out);
            out.to_vec()
        }
        Hash::Sha256 => {
            let mut out = [0u8; 32];
            pbkdf2::pbkdf2_hmac::<sha2::Sha256>(PASSWORD.as_bytes(), salt, iterations, &mut out);
            out.to_vec()
        }
    };
    let client_key = hmac(h, &salted, b"Client Key");
    let stored = match h {
        Hash::Sha1 => sha1::Sha1::digest(&client_key).to_vec(),
        Hash::Sha256 => sha2::Sha256::digest(&client_key).to_vec(),
    };
    let sig = hmac(h, &stored, auth_message);
    client_key.iter().zip(sig).map(|(a, b)| a ^ b).collect()
}

/// `r=`, `s=` and `i=` of a server-first message.
fn server_first(msg: &[u8]) -> Option<(Vec<u8>, Vec<u8>, u32)> {
    let text = std::str::from_utf8(msg).ok()?;
    let mut parts = text.split(',');
    let nonce = parts.next()?.strip_prefix("r=")?;
    let salt = B64.decode(parts.next()?.strip_prefix("s=")?).ok()?;
    let it = parts.next()?.strip_prefix("i=")?.parse().ok()?;
    Some((nonce.as_bytes().to_vec(), salt, it))
}

fn replace(hay: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

/// The part of a client-first message after the GS2 header (two commas in).
fn bare(first: &[u8]) -> &[u8] {
    let mut commas = 0;
    for (i, &b) in first.iter().enumerate() {
        if b == b',' {
            commas += 1;
            if commas == 2 {
                return &first[i + 1..];
            }
        }
    }
    first
}

/// The authorization identity of a GS2 header (`n,a=NAME,`), unescaped.
fn gs2_authzid(first: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(first);
    let a = text.split(',').nth(1)?.strip_prefix("a=")?;
    Some(a.replace("=2C", ",").replace("=3D", "="))
}

fn authzid_is_alice(z: &str) -> bool {
    z.is_empty()
        || z == "alice@example.test"
        || presenced_model::names::normalize_user(z, "example.test").as_deref() == Ok("alice")
}

libfuzzer_sys::fuzz_target!(
    init: {
        presenced_fuzz::write_seeds_and_exit_if_asked(seeds);
    },
    |data: &[u8]| {
        let Some(data) = bounded(data, MAX_INPUT) else { return };
        let Some((&sel, rest)) = data.split_first() else { return };
        let (mech, hash) = match sel & 0x3 {
            0 => (sasl::SCRAM_SHA256, Some(Hash::Sha256)),
            1 => (sasl::SCRAM_SHA1, Some(Hash::Sha1)),
            _ => (sasl::PLAIN, None),
        };
        let mut msgs = fields(rest).take(8);
        let first = msgs.next().unwrap_or_default().to_vec();
        let initial = (sel & 0x80 == 0).then(|| first.clone());

        let w = world();
        let name = Mechname::parse(mech.as_bytes()).expect("a known mechanism name");
        let mut session = SASLServer::<sasl::User>::new(w.config.clone())
            .start_suggested(name)
            .expect("presenced offers this mechanism");
        let mut input: Option<Vec<u8>> = initial.clone();
        let mut knew_password = false;
        let mut sent_first: Option<Vec<u8>> = initial;
        let mut challenge: Option<Vec<u8>> = None;
        let mut authenticated = None;
        let mut messages_in = 0;
        for _round in 0..8 {
            // The guard c2s/auth.rs applies before each step (rsasl 2.3.1 panics on
            // these; see `sasl::scram_message_breaks_parser`).
            if let (Some(_), Some(msg)) = (&hash, &input) {
                if sasl::scram_message_breaks_parser(messages_in == 0, msg) {
                    break;
                }
            }
            if input.is_some() {
                messages_in += 1;
            }
            let mut out = Vec::new();
            match session.step(input.as_deref(), &mut out) {
                Err(_) => break,
                Ok(s) if s.is_running() => {
                    if challenge.is_none() && !out.is_empty() {
                        challenge = Some(out);
                    }
                    let Some(next) = msgs.next() else { break };
                    let mut next = next.to_vec();
                    if sent_first.is_none() {
                        // The initial response was left out: this is the first message.
                        sent_first = Some(next.clone());
                    } else if let (Some(h), Some(sf)) = (&hash, &challenge)
                        && let Some((nonce, salt, it)) = server_first(sf)
                    {
                        next = replace(&next, b"$N", &nonce);
                        if let Some(at) = next.windows(5).position(|w| w == b",p=$P")
                            && it <= 64
                        {
                            let head = next[..at].to_vec();
                            let mut am = bare(sent_first.as_deref().unwrap_or_default()).to_vec();
                            am.push(b',');
                            am.extend_from_slice(sf);
                            am.push(b',');
                            am.extend_from_slice(&head);
                            let p = B64.encode(proof(h, &salt, it, &am));
                            let mut whole = head;
                            whole.extend_from_slice(b",p=");
                            whole.extend_from_slice(p.as_bytes());
                            whole.extend_from_slice(&next[at + 5..]);
                            next = whole;
                            knew_password = true;
                        }
                    }
                    input = Some(next);
                }
                Ok(_) => {
                    authenticated = session.validation();
                    break;
                }
            }
        }

        if std::env::var_os("PRESENCED_FUZZ_DEBUG").is_some() {
            eprintln!("{mech}: authenticated {authenticated:?}, knew the password {knew_password}");
        }
        if let Some(user) = authenticated {
            assert_eq!(user, "alice", "authenticated as an account that does not exist");
            let first = sent_first.unwrap_or_default();
            if hash.is_none() {
                let parts: Vec<&[u8]> = first.split(|&b| b == 0).collect();
                assert_eq!(parts.len(), 3, "PLAIN accepted a message of {} parts", parts.len());
                assert_eq!(
                    String::from_utf8_lossy(parts[2]),
                    PASSWORD,
                    "PLAIN accepted a wrong password"
                );
                assert!(
                    authzid_is_alice(&String::from_utf8_lossy(parts[0])),
                    "PLAIN accepted authorization as someone else: {:?}",
                    String::from_utf8_lossy(parts[0])
                );
            } else {
                assert!(knew_password, "SCRAM authenticated without the password's proof");
                if let Some(z) = gs2_authzid(&first) {
                    assert!(authzid_is_alice(&z), "SCRAM accepted authorization as {z:?}");
                }
            }
        }
    }
);

/// The exchanges a real client sends (and a few near misses).
fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (sel, h) in [(0u8, "SCRAM-SHA-256"), (1, "SCRAM-SHA-1")] {
        let _ = h;
        for user in ["alice", "Alice", "bob", "al=2Cice"] {
            for gs2 in ["n,,", "y,,", "n,a=alice@example.test,", "p=tls-unique,,"] {
                let mut s = vec![sel];
                s.extend_from_slice(format!("{gs2}n={user},r=fyko+d2lbbFgONRv9qkxdawL").as_bytes());
                s.push(0xff);
                let cb = B64.encode(gs2);
                s.extend_from_slice(format!("c={cb},r=$N,p=$P").as_bytes());
                out.push(s);
            }
        }
        let mut s = vec![sel | 0x80, 0xff];
        s.extend_from_slice(b"n,,n=alice,r=abc\xffc=biws,r=$N,p=AAAA");
        out.push(s);
    }
    for msg in [
        &b"\0alice\0pw"[..],
        b"alice@example.test\0alice\0pw",
        b"\0Alice\0pw",
        b"\0alice\0wrong",
        b"bob@example.test\0alice\0pw",
        b"\0\0",
    ] {
        let mut s = vec![2u8];
        s.extend_from_slice(msg);
        out.push(s);
    }
    out
}
