//! Entry points for the fuzz targets (`fuzz/`), behind the `fuzzing` feature (off by
//! default): one client connection served to its end, exactly as [`Xmpp::serve`]
//! serves each one it accepts, so a target can wait for a session to be over (its
//! router session dropped, its stream closed) before it checks what happened.

use tokio::net::TcpStream;

use crate::{Xmpp, c2s, xml};

/// Serve one plaintext client connection (STARTTLS offered) to its end: the caps are
/// applied as on accept (`false`: refused, nothing was served), then the stream is
/// negotiated and the session runs until it ends.
pub async fn serve_connection(xmpp: &Xmpp, tcp: TcpStream) -> bool {
    let Ok(peer) = tcp.peer_addr() else {
        return false;
    };
    let Ok(slot) = xmpp.shared.guard.admit(peer.ip()) else {
        return false;
    };
    c2s::handle(tcp, peer, xmpp.shared.clone(), false, slot).await;
    true
}

/// The reader limits of the service's client streams (from its `XmppConfig`).
pub fn limits(xmpp: &Xmpp) -> xml::Limits {
    xmpp.shared.limits()
}

/// The c2s adapter's SASL PLAIN message parser (RFC 4616 §2): authzid, authcid, password.
pub fn parse_plain(msg: &[u8]) -> Option<(String, String, String)> {
    c2s::auth::parse_plain(msg)
}

/// The text of an `<auth/>` or `<response/>` element as the c2s adapter decodes it:
/// `Ok(None)` for no response, `Ok(Some(bytes))`, or `Err` for bad base64.
#[allow(clippy::result_unit_err)]
pub fn decode_sasl(text: &str) -> Result<Option<Vec<u8>>, ()> {
    c2s::auth::decode_sasl(text)
}
