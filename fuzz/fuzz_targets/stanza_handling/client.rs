//! The harness's client side for `stanza_handling`: it negotiates as a real client
//! (SCRAM-SHA-256, bind), sends the input, and reads back what the server wrote.

use super::*;

pub(crate) fn hmac256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

/// The SCRAM-SHA-256 client-final message (RFC 5802 §3) of `alice`/`pw` for a
/// server-first message.
pub(crate) fn client_final(client_first_bare: &str, server_first: &[u8]) -> String {
    let text = std::str::from_utf8(server_first).expect("server-first is UTF-8");
    let mut parts = text.split(',');
    let nonce = parts.next().and_then(|p| p.strip_prefix("r=")).expect("r=");
    let salt = B64
        .decode(parts.next().and_then(|p| p.strip_prefix("s=")).expect("s="))
        .expect("salt");
    let it: u32 = parts
        .next()
        .and_then(|p| p.strip_prefix("i="))
        .expect("i=")
        .parse()
        .expect("i");
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(b"pw", &salt, it, &mut salted);
    let client_key = hmac256(&salted, b"Client Key");
    let stored = sha2::Sha256::digest(&client_key);
    let without_proof = format!("c=biws,r={nonce}");
    let auth_message = format!("{client_first_bare},{text},{without_proof}");
    let sig = hmac256(&stored, auth_message.as_bytes());
    let proof: Vec<u8> = client_key.iter().zip(sig).map(|(a, b)| a ^ b).collect();
    format!("{without_proof},p={}", B64.encode(proof))
}

const OUT_LIMITS: Limits = Limits {
    max_stanza_bytes: 1 << 30,
    max_depth: 1024,
};

pub(crate) async fn stanza<R: AsyncRead + Unpin>(r: &mut StreamReader<R>, what: &str) -> Element {
    loop {
        match r.next().await {
            Ok(Frame::Stanza(el)) => return el,
            Ok(Frame::Keepalive) => continue,
            other => panic!("negotiation: expected {what}, got {other:?}"),
        }
    }
}

pub(crate) async fn header<R: AsyncRead + Unpin>(r: &mut StreamReader<R>) {
    match r.next().await {
        Ok(Frame::Header(_)) => {}
        other => panic!("negotiation: expected the server's stream header, got {other:?}"),
    }
}

/// What the server sent after the bind result: its stanzas, whether it ended with
/// `</stream:stream>`, and how the read ended otherwise.
pub(crate) struct Output {
    pub(crate) stanzas: Vec<Element>,
    pub(crate) ended: bool,
    pub(crate) error: Option<String>,
}

/// Negotiate as alice on `tcp`, send `input` as the rest of the stream, close our
/// side, and read everything the server sends until it closes.
pub(crate) async fn client(tcp: TcpStream, input: &[u8]) -> Output {
    let _ = tcp.set_nodelay(true);
    let (rd, mut wr) = tcp.into_split();
    let mut r = StreamReader::new(rd, OUT_LIMITS);
    let nonce = format!("{:024x}", rand::random::<u128>() >> 32);
    let first_bare = format!("n=alice,r={nonce}");
    let auth = format!(
        "{HEADER}<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-256'>{}</auth>",
        B64.encode(format!("n,,{first_bare}"))
    );
    wr.write_all(auth.as_bytes()).await.expect("write");
    header(&mut r).await;
    let f = stanza(&mut r, "features").await;
    assert_eq!(f.name, "features", "negotiation: {f:?}");
    let ch = stanza(&mut r, "a SCRAM challenge").await;
    assert_eq!(ch.name, "challenge", "negotiation: {ch:?}");
    let sf = B64.decode(ch.text().trim()).expect("challenge is base64");
    let resp = format!(
        "<response xmlns='{NS_SASL}'>{}</response>",
        B64.encode(client_final(&first_bare, &sf))
    );
    wr.write_all(resp.as_bytes()).await.expect("write");
    let ok = stanza(&mut r, "SASL success").await;
    assert_eq!(ok.name, "success", "negotiation: {ok:?}");

    // The restarted stream, the bind request and the input in one go, then our end.
    let mut r = StreamReader::new(r.into_inner(), OUT_LIMITS);
    let mut rest = Vec::with_capacity(HEADER.len() + BIND.len() + input.len());
    rest.extend_from_slice(HEADER.as_bytes());
    rest.extend_from_slice(BIND.as_bytes());
    rest.extend_from_slice(input);
    let send = async move {
        // The server may close first (a stream error): what it did not read is lost.
        let _ = wr.write_all(&rest).await;
        let _ = wr.shutdown().await;
        wr
    };
    let read = async {
        header(&mut r).await;
        let f = stanza(&mut r, "features").await;
        assert_eq!(f.name, "features", "negotiation: {f:?}");
        let mut out = Output {
            stanzas: Vec::new(),
            ended: false,
            error: None,
        };
        let mut bound = false;
        for _ in 0..1_000_000 {
            match r.next().await {
                Ok(Frame::Stanza(el)) => {
                    if !bound && el.name == "iq" && el.attr("id") == Some(BIND_ID) {
                        assert_eq!(el.attr("type"), Some("result"), "bind failed: {el:?}");
                        bound = true;
                        continue;
                    }
                    assert!(bound, "a stanza before the bind result: {el:?}");
                    out.stanzas.push(el);
                }
                Ok(Frame::Keepalive) => {}
                Ok(Frame::End) => {
                    out.ended = true;
                    return out;
                }
                Ok(Frame::Header(h)) => panic!("the server sent a second stream header: {h:?}"),
                Err(e) => {
                    out.error = Some(e.to_string());
                    return out;
                }
            }
        }
        panic!("the server sent more than a million frames");
    };
    let (_wr, out) = tokio::join!(send, read);
    out
}

/// The stanzas the server read from the client after the bind request: the same
/// reader with the same limits on the same bytes (the `xml_stream` target checks that
/// how they arrive does not matter).
pub(crate) fn client_stanzas(limits: Limits, input: &[u8]) -> Vec<Element> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(HEADER.as_bytes());
    bytes.extend_from_slice(BIND.as_bytes());
    bytes.extend_from_slice(input);
    let mut r = StreamReader::new(std::io::Cursor::new(bytes), limits);
    let mut out = Vec::new();
    for _ in 0..=MAX_INPUT + 2 {
        match presenced_fuzz::block_on(r.next()) {
            Ok(Frame::Stanza(el)) => out.push(el),
            Ok(Frame::Keepalive | Frame::Header(_)) if out.is_empty() => {}
            Ok(Frame::Keepalive) => {}
            _ => break,
        }
    }
    assert!(
        !out.is_empty() && out[0].attr("id") == Some(BIND_ID),
        "the bind request reads back"
    );
    out.remove(0);
    out
}
