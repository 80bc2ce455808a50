//! SASL PLAIN as the c2s adapter reads it (`crates/xmpp/src/c2s/auth.rs`, which does
//! not hand PLAIN to rsasl): `decode_sasl` (the text of `<auth/>` or `<response/>`)
//! and `parse_plain` (RFC 4616 §2), reached through `presenced_xmpp::fuzzing`.
//!
//! Input: byte 0 picks the path: even, the rest is the decoded message; odd, the rest
//! is the element's text, decoded first.
//!
//! Properties, beyond "no panic":
//! - `parse_plain` accepts exactly what RFC 4616 §2 and its own contract describe
//!   (an independent reading here): `[authzid] NUL authcid NUL passwd`, exactly two
//!   NULs, each field UTF-8 and at most 255 bytes, authcid and passwd not empty; so a
//!   NUL never ends up inside a field, and an empty authzid is "none";
//! - what it accepts re-encodes (`authzid NUL authcid NUL passwd`) to the input;
//! - `decode_sasl`: empty (or blank) text is "no response", `=` an empty one, anything
//!   else canonical base64 (RFC 4648 §4) that encodes back to the trimmed text.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use presenced_fuzz::bounded;

use presenced_xmpp::fuzzing::{decode_sasl, parse_plain};

const MAX_INPUT: usize = 2048;

/// RFC 4616 §2, read independently: the three fields when `msg` is a PLAIN message
/// presenced must accept, `None` when it must refuse it.
fn rfc4616(msg: &[u8]) -> Option<[&str; 3]> {
    let nuls: Vec<usize> = msg
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == 0)
        .map(|(i, _)| i)
        .collect();
    let [a, b] = nuls[..] else { return None };
    let fields = [&msg[..a], &msg[a + 1..b], &msg[b + 1..]];
    let mut out = [""; 3];
    for (i, f) in fields.iter().enumerate() {
        out[i] = std::str::from_utf8(f).ok()?;
        // "MUST accept up to 255 octets": presenced takes no more.
        if f.len() > 255 {
            return None;
        }
    }
    (!out[1].is_empty() && !out[2].is_empty()).then_some(out)
}

fn check_plain(msg: &[u8]) {
    let got = parse_plain(msg);
    let want = rfc4616(msg);
    match (&got, want) {
        (Some((z, c, p)), Some([wz, wc, wp])) => {
            assert_eq!(
                (z.as_str(), c.as_str(), p.as_str()),
                (wz, wc, wp),
                "fields of {msg:?}"
            );
            assert!(
                ![z, c, p].iter().any(|f| f.contains('\0')),
                "a NUL inside a field of {msg:?}"
            );
            let again = format!("{z}\0{c}\0{p}");
            assert_eq!(
                again.as_bytes(),
                msg,
                "parsed fields do not re-encode to the message"
            );
        }
        (None, None) => {}
        (Some(f), None) => panic!("parse_plain accepted {msg:?} (as {f:?}), RFC 4616 refuses it"),
        (None, Some(f)) => panic!("parse_plain refused {msg:?}, RFC 4616 reads it as {f:?}"),
    }
}

fn check_text(text: &str) {
    let t = text.trim();
    match decode_sasl(text) {
        Ok(None) => assert!(t.is_empty(), "{text:?} read as no response"),
        Ok(Some(b)) if t == "=" => assert!(b.is_empty(), "'=' is an empty response"),
        Ok(Some(b)) => {
            assert_eq!(B64.encode(&b), t, "{text:?} is not canonical base64");
            check_plain(&b);
        }
        Err(()) => assert!(
            !t.is_empty() && t != "=" && B64.decode(t).is_err(),
            "{text:?} refused"
        ),
    }
}

libfuzzer_sys::fuzz_target!(
    init: {
        presenced_fuzz::write_seeds_and_exit_if_asked(seeds);
    },
    |data: &[u8]| {
        let Some(data) = bounded(data, MAX_INPUT) else { return };
        let Some((&sel, rest)) = data.split_first() else { return };
        if sel & 1 == 0 {
            check_plain(rest);
        } else if let Ok(text) = std::str::from_utf8(rest) {
            check_text(text);
        }
    }
);

/// RFC 4616's examples, the unit tests' messages, the limits, and each as base64.
fn seeds() -> Vec<Vec<u8>> {
    let long = "x".repeat(255);
    let longer = "x".repeat(256);
    let messages: Vec<Vec<u8>> = vec![
        b"\0tim\0tanstaaftanstaaf".to_vec(),
        b"Ursel\0Kurt\0xipj3plmq".to_vec(),
        b"\0alice\0pw".to_vec(),
        b"alice@example.test\0alice\0pw".to_vec(),
        b"bob@example.test\0alice\0pw".to_vec(),
        "\0\u{e9}l\u{e8}ve\0p\u{e4}ss w\u{f6}rd \u{1F511}"
            .as_bytes()
            .to_vec(),
        b"alice\0pw".to_vec(),
        b"\0\0pw".to_vec(),
        b"\0alice\0".to_vec(),
        b"\0a\0b\0c".to_vec(),
        b"\0a\0\xff".to_vec(),
        b"\xc3\0a\0b".to_vec(),
        b"\0\0".to_vec(),
        b"".to_vec(),
        format!("{long}\0{long}\0{long}").into_bytes(),
        format!("\0{longer}\0pw").into_bytes(),
        format!("\0alice\0{longer}").into_bytes(),
    ];
    let mut out = Vec::new();
    for m in &messages {
        let mut s = vec![0u8];
        s.extend_from_slice(m);
        out.push(s);
        let mut t = vec![1u8];
        t.extend_from_slice(B64.encode(m).as_bytes());
        out.push(t);
    }
    for text in [
        "",
        "  ",
        "=",
        "AGFsaWNlAHB3",
        " AGFsaWNlAHB3\n",
        "AGFsaWNlAHB",
        "AGFsaWNlAHB3=",
        "AGFs aWNlAHB3",
        "AGFsaWNlAHB4",
    ] {
        let mut t = vec![1u8];
        t.extend_from_slice(text.as_bytes());
        out.push(t);
    }
    out
}
