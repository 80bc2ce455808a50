//! The XMPP stream reader (`presenced_xmpp::xml::StreamReader`): the bytes a client
//! sends, up to the stanzas handed to the c2s session loop.
//!
//! Input: byte 0 picks how the bytes are cut into reads; the rest is the stream.
//! Properties, beyond "no panic":
//! - the frames do not depend on how the bytes arrive (one read or many small ones);
//! - a smaller stanza budget only cuts the stream short, with policy-violation (or,
//!   where the whole stream fails at that point anyway, another error);
//! - every stanza re-serialised (`to_stanza`, what the server writes to other clients)
//!   reads back as the same element, and contains only XML 1.0 characters;
//! - every element's `to_fragment` (how the core stores an opaque extension) passes
//!   `check_fragment` (the check before it is written verbatim).
#![no_main]

use presenced_fuzz::{Chunked, block_on, bounded};
use presenced_xmpp::xml::{Element, Frame, Limits, Node, StreamReader, check_fragment};
use tokio::io::AsyncRead;

const MAX_INPUT: usize = 64 * 1024;
const OPEN: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='example.test' version='1.0'>";

#[derive(Debug, PartialEq)]
enum Got {
    Header(Option<String>, Option<String>, Option<String>, String),
    Stanza(Element),
    Keepalive,
    End,
    Error(&'static str),
}

fn frames<R: AsyncRead + Unpin>(io: R, limits: Limits) -> Vec<Got> {
    let mut r = StreamReader::new(io, limits);
    let mut out = Vec::new();
    // A stream of N bytes has at most N frames; the bound catches a reader that
    // stops consuming.
    for _ in 0..=MAX_INPUT + 2 {
        let f = block_on(r.next());
        let end = !matches!(
            f,
            Ok(Frame::Header(_) | Frame::Stanza(_) | Frame::Keepalive)
        );
        out.push(match f {
            Ok(Frame::Header(h)) => Got::Header(h.to, h.version, h.lang, h.content_ns),
            Ok(Frame::Stanza(e)) => Got::Stanza(e),
            Ok(Frame::Keepalive) => Got::Keepalive,
            Ok(Frame::End) => Got::End,
            Err(e) => Got::Error(e.condition().as_str()),
        });
        if end {
            return out;
        }
    }
    panic!("the reader produced more frames than the input has bytes");
}

/// XML 1.0's `Char` production.
fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

fn walk(e: &Element, f: &mut impl FnMut(&Element)) {
    f(e);
    for c in e.elements() {
        walk(c, f);
    }
}

fn check_stanza(el: &Element) {
    let out = el.to_stanza();
    assert!(
        out.chars().all(xml_char),
        "a stanza the server would write carries a character XML forbids: {out:?}"
    );
    let again = frames(
        std::io::Cursor::new(format!("{OPEN}{out}").into_bytes()),
        Limits {
            max_stanza_bytes: u64::MAX / 2,
            max_depth: 1024,
        },
    );
    match again.get(1) {
        Some(Got::Stanza(back)) => {
            assert_eq!(back, el, "stanza changed on a round trip through {out:?}")
        }
        other => panic!("re-serialised stanza {out:?} read back as {other:?}"),
    }
    walk(el, &mut |e| {
        let frag = e.to_fragment();
        assert!(check_fragment(&frag), "fragment refused: {frag:?}");
    });
    // Text nodes are merged as they are read: never two in a row, never empty.
    walk(el, &mut |e| {
        let mut prev_text = false;
        for c in &e.children {
            let text = matches!(c, Node::Text(_));
            assert!(!(text && prev_text), "two text nodes in a row in {out:?}");
            prev_text = text;
        }
    });
}

libfuzzer_sys::fuzz_target!(
    init: {
        presenced_fuzz::write_seeds_and_exit_if_asked(Vec::new);
    },
    |data: &[u8]| {
        let Some(data) = bounded(data, MAX_INPUT) else { return };
        let Some((&pattern, stream)) = data.split_first() else { return };
        let big = Limits { max_stanza_bytes: 1 << 30, max_depth: 16 };
        let whole = frames(std::io::Cursor::new(stream), big);
        let pieces = frames(Chunked::new(stream, u64::from(pattern).wrapping_mul(0x9E37_79B9_7F4A_7C15)), big);
        assert_eq!(whole, pieces, "frames depend on how the bytes arrive");

        let small = Limits { max_stanza_bytes: 512 + u64::from(pattern) * 8, max_depth: 16 };
        let cut = frames(std::io::Cursor::new(stream), small);
        let n = cut.len() - 1;
        assert_eq!(cut[..n], whole[..n], "a smaller budget changed earlier frames");
        // (Junk the budget cut short may fail for another reason than the whole of
        // it: both are errors there, which one is not the point.)
        let both_errors = matches!((&cut[n], &whole[n]), (Got::Error(_), Got::Error(_)));
        assert!(
            cut[n] == whole[n] || cut[n] == Got::Error("policy-violation") || both_errors,
            "a smaller budget ended the stream with {:?} instead of {:?}",
            cut[n],
            whole[n]
        );

        for g in &whole {
            if let Got::Stanza(el) = g {
                check_stanza(el);
            }
        }
    }
);
