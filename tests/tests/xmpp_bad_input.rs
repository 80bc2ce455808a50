//! Bad input from XMPP clients: each violation ends that one stream with the matching
//! stream error (RFC 6120 §4.9.3), and the node keeps serving everyone else.

use std::time::Duration;

use presenced_e2e::xmpp::{Agent, jid, raw_exchange, raw_stream, stream_header};
use presenced_e2e::{Cluster, Opts, http_get, metric};
use serde_json::json;

const PW: &str = "secret-pw-1";
const T: Duration = Duration::from_secs(10);

fn stream_error(reply: &str) -> Option<String> {
    let at = reply.find("<stream:error>")?;
    let rest = &reply[at + "<stream:error><".len()..];
    let end = rest.find([' ', '/', '>'])?;
    Some(rest[..end].to_string())
}

#[test]
fn each_violation_ends_only_its_own_stream() {
    let c = Cluster::start_with(
        3,
        Opts {
            extra: "[xmpp]\nauth_timeout_secs = 3\n".into(),
            ..Opts::default()
        },
    );
    for u in ["alice", "bob"] {
        c.ctl(0, &["user", "add", u, "--password", PW]).ok();
    }
    c.ctl(0, &["roster", "add", "alice", "bob"]).ok();
    // A working pair on the node that gets all the bad input.
    let mut alice = Agent::login(&c, 0, "alice", "a", PW);
    let mut bob = Agent::login(&c, 0, "bob", "b", PW);
    alice.available();
    bob.available();
    alice.expect_available("bob@example.test/b", T);

    let port = c.nodes[0].xmpp;
    let laughs = "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>\
        <!ENTITY lol2 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>\
        <!ENTITY lol3 '&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;'>]>\
        <stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' \
        to='example.test' version='1.0'><message><body>&lol3;</body></message>";
    let cases: Vec<(&str, String, &str)> = vec![
        ("malformed XML", format!("{}<message><body>x</mess>", stream_header()), "not-well-formed"),
        ("billion laughs", laughs.to_string(), "restricted-xml"),
        ("undeclared entity", format!("{}<message><body>&xxe;</body></message>", stream_header()), "restricted-xml"),
        ("comment", format!("{}<!-- hello -->", stream_header()), "restricted-xml"),
        (
            "oversized stanza",
            format!("{}<message><body>{}</body></message>", stream_header(), "A".repeat(70 * 1024)),
            "policy-violation",
        ),
        ("deep nesting", format!("{}<message>{}", stream_header(), "<x>".repeat(200)), "policy-violation"),
        (
            "stanza before auth",
            format!("{}<message to='bob@example.test'><body>hi</body></message>", stream_header()),
            "not-authorized",
        ),
        (
            "SASL before STARTTLS",
            format!(
                "{}<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHNlY3JldC1wdy0x</auth>",
                stream_header()
            ),
            "not-authorized",
        ),
        (
            "wrong host",
            "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='elsewhere.example' version='1.0'>".to_string(),
            "host-unknown",
        ),
        (
            "wrong namespace",
            "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' to='example.test' version='1.0'>".to_string(),
            "invalid-namespace",
        ),
        ("silence after the header", stream_header(), "connection-timeout"),
        ("text instead of a stream", "GET / HTTP/1.1\r\n<html>".to_string(), "bad-format"),
    ];
    for (what, input, want) in &cases {
        let reply = if input.starts_with("<?xml")
            || input.starts_with("<stream")
            || input.starts_with("GET")
        {
            raw_exchange(port, input)
        } else {
            raw_stream(port, input)
        };
        let got = stream_error(&reply);
        assert_eq!(
            got.as_deref(),
            Some(*want),
            "{what}: server said {reply:.600}"
        );
        assert!(
            reply.ends_with("</stream:stream>"),
            "{what}: stream not closed: {reply:.300}"
        );
    }

    // A wrong password: a SASL failure, not a session.
    let mut mallory = Agent::spawn("mallory");
    mallory.connect(&c, 0, "alice", "m", "wrong-password", json!({}));
    mallory.expect("failed auth", T, |e| e["ev"] == "failed_auth");
    drop(mallory);

    // An authenticated client claiming someone else's address.
    let mut eve = Agent::login(&c, 0, "bob", "eve", PW);
    eve.send(json!({"cmd": "raw", "xml":
        "<message from='alice@example.test/a' to='bob@example.test/b' type='chat'><body>spoofed</body></message>"}));
    let e = eve.expect("invalid-from", T, |e| e["ev"] == "stream_error");
    assert_eq!(e["condition"], "invalid-from", "{e}");
    bob.expect_none("the spoofed message", Duration::from_millis(500), |e| {
        e["body"] == "spoofed"
    });

    // Everyone else is still served, on this node and across nodes.
    alice.chat(&jid("bob"), "still here?");
    bob.expect_body("still here?", T);
    let mut carol_view = Agent::login(&c, 1, "alice", "other-node", PW);
    carol_view.available();
    carol_view.expect_available("bob@example.test/b", T);
    assert_eq!(http_get(c.nodes[0].http, "/health").map(|r| r.0), Some(200));
    let m = c.metrics(0);
    let errors = m
        .lines()
        .filter(|l| l.starts_with("presenced_xmpp_stream_errors_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    assert!(
        errors >= cases.len() as f64,
        "stream errors counted: {errors}\n{m}"
    );
    assert!(metric(&m, "presenced_xmpp_auth_total{result=\"failed\"}").unwrap_or(0.0) >= 1.0);
}
