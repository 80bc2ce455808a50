//! The committed seeds of `stanza_handling` (written with `scripts/fuzz --seeds`).

/// What a client sends once bound, one feature at a time and as whole sessions
/// (`tools/stanzas_from_tests.py` adds the stanzas the tests send, as `test-*`).
pub(crate) fn seeds() -> Vec<Vec<u8>> {
    const ROSTER: &str = "jabber:iq:roster";
    let stanzas: Vec<String> = vec![
        // presence: initial, show/status/priority, directed, unavailable, probe, errors
        "<presence/>".into(),
        "<presence><show>away</show><status>out</status><priority>5</priority></presence>".into(),
        "<presence><show>dnd</show><priority>-1</priority><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='n' ver='v'/></presence>".into(),
        "<presence><show>bogus</show></presence>".into(),
        "<presence><priority>300</priority></presence>".into(),
        "<presence to='bob@example.test/phone'><show>chat</show></presence>".into(),
        "<presence to='zz@example.test/barrier'/>".into(),
        "<presence type='unavailable'><status>bye</status></presence>".into(),
        "<presence type='probe' to='bob@example.test'/>".into(),
        "<presence type='probe'/>".into(),
        "<presence type='error' to='bob@example.test'/>".into(),
        "<presence type='bogus' to='bob@example.test'/>".into(),
        "<presence to='not a jid@@'/>".into(),
        // subscriptions (Raft writes, then the harness resets)
        "<presence type='subscribe' to='carol@example.test'/>".into(),
        "<presence type='subscribed' to='carol@example.test'/>".into(),
        "<presence type='unsubscribe' to='bob@example.test'/>".into(),
        "<presence type='unsubscribed' to='bob@example.test'/>".into(),
        "<presence type='subscribe' to='zz@example.test'/>".into(),
        "<presence type='subscribe' to='friend@other.test'/>".into(),
        "<presence type='subscribe' to='nobody@example.test'/>".into(),
        // messages: to bob bare and full, to an offline user, to oneself, elsewhere
        "<message to='bob@example.test' type='chat' id='m1'><body>hi</body><active xmlns='http://jabber.org/protocol/chatstates'/></message>".into(),
        "<message to='bob@example.test/phone' type='normal'><subject>s</subject><body>b</body><thread>t</thread></message>".into(),
        "<message to='bob@example.test/laptop' type='chat'><body>to a resource that is not there</body></message>".into(),
        "<message to='bob@example.test' type='headline'><body>h</body></message>".into(),
        "<message to='bob@example.test' type='groupchat'><body>g</body></message>".into(),
        "<message to='bob@example.test' type='error'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>".into(),
        "<message to='carol@example.test' type='chat'><body>for later</body></message>".into(),
        "<message to='zz@example.test'><body>queued</body></message>".into(),
        "<message to='zz@example.test/barrier'><body>direct</body></message>".into(),
        "<message to='alice@example.test'><body>to myself</body></message>".into(),
        "<message to='nobody@example.test'><body>x</body></message>".into(),
        "<message to='friend@other.test'><body>x</body></message>".into(),
        "<message to='example.test'><body>to the server</body></message>".into(),
        "<message><body>no to</body></message>".into(),
        "<message to='bob@example.test' type='chat'><body xml:lang='de'>Hallo</body><body>Hello</body><request xmlns='urn:xmpp:receipts'/><no-store xmlns='urn:xmpp:hints'/></message>".into(),
        "<message to='example.test'><addresses xmlns='http://jabber.org/protocol/address'><address type='to' jid='bob@example.test'/><address type='cc' jid='carol@example.test'/><address type='bcc' jid='zz@example.test/barrier'/></addresses><body>multicast</body></message>".into(),
        "<message to='example.test'><addresses xmlns='http://jabber.org/protocol/address'><address type='to' jid='@@'/></addresses><body>x</body></message>".into(),
        // iq to the server, to the own account, to bob's account, routed to endpoints
        format!("<iq type='get' id='r1'><query xmlns='{ROSTER}'/></iq>"),
        format!("<iq type='get' id='r2'><query xmlns='{ROSTER}' ver='2'/></iq>"),
        format!("<iq type='set' id='r3'><query xmlns='{ROSTER}'><item jid='carol@example.test' name='Carol'><group>Friends</group><group>Work</group></item></query></iq>"),
        format!("<iq type='set' id='r4'><query xmlns='{ROSTER}'><item jid='bob@example.test' subscription='remove'/></query></iq>"),
        format!("<iq type='set' id='r5'><query xmlns='{ROSTER}'><item jid='friend@other.test'/></query></iq>"),
        format!("<iq type='set' id='r6'><query xmlns='{ROSTER}'><item jid='bob@example.test'><group>A</group><group>A</group></item></query></iq>"),
        format!("<iq type='set' id='r7'><query xmlns='{ROSTER}'><item jid='bob@example.test'/><item jid='carol@example.test'/></query></iq>"),
        format!("<iq type='set' id='r8'><query xmlns='{ROSTER}'><item/></query></iq>"),
        format!("<iq type='set' id='r9' to='bob@example.test'><query xmlns='{ROSTER}'/></iq>"),
        "<iq type='get' id='d1' to='example.test'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>".into(),
        "<iq type='get' id='d2' to='example.test'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>".into(),
        "<iq type='get' id='d3' to='bob@example.test'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>".into(),
        "<iq type='get' id='d4' to='carol@example.test'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>".into(),
        "<iq type='get' id='d5' to='alice@example.test'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>".into(),
        "<iq type='get' id='p1' to='example.test'><ping xmlns='urn:xmpp:ping'/></iq>".into(),
        "<iq type='get' id='p2'><ping xmlns='urn:xmpp:ping'/></iq>".into(),
        "<iq type='get' id='v1' to='example.test'><query xmlns='jabber:iq:version'/></iq>".into(),
        "<iq type='set' id='v2' to='example.test'><query xmlns='jabber:iq:version'/></iq>".into(),
        "<iq type='set' id='s1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>".into(),
        "<iq type='set' id='b2'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>again</resource></bind></iq>".into(),
        "<iq type='get' id='q1' to='bob@example.test/phone'><query xmlns='jabber:iq:version'/></iq>".into(),
        "<iq type='get' id='q2' to='bob@example.test/laptop'><ping xmlns='urn:xmpp:ping'/></iq>".into(),
        "<iq type='get' id='q3' to='zz@example.test/barrier'><ping xmlns='urn:xmpp:ping'/></iq>".into(),
        "<iq type='get' id='q4' to='alice@example.test/fuzz'><ping xmlns='urn:xmpp:ping'/></iq>".into(),
        "<iq type='get' id='q5' to='friend@other.test/x'><ping xmlns='urn:xmpp:ping'/></iq>".into(),
        "<iq type='result' id='q6' to='bob@example.test/phone'/>".into(),
        "<iq type='error' id='q7' to='bob@example.test/phone'><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>".into(),
        "<iq type='result' id='push-3'/>".into(),
        "<iq type='get' id='u1'><query xmlns='urn:example:unknown'/></iq>".into(),
        "<iq type='get' id='u2'><a xmlns='urn:x'/><b xmlns='urn:x'/></iq>".into(),
        "<iq type='get' id='u3'/>".into(),
        "<iq type='get'><ping xmlns='urn:xmpp:ping'/></iq>".into(),
        "<iq type='bogus' id='u4'><ping xmlns='urn:xmpp:ping'/></iq>".into(),
        "<iq type='result'/>".into(),
        "<iq type='get' id='u5' to='@@'><ping xmlns='urn:xmpp:ping'/></iq>".into(),
        // from: the session's own addresses pass, others end the stream
        "<message from='alice@example.test/fuzz' to='bob@example.test'><body>f</body></message>".into(),
        "<message from='alice@example.test' to='bob@example.test'><body>f</body></message>".into(),
        "<message from='ALICE@example.test/fuzz' to='bob@example.test'><body>f</body></message>".into(),
        "<message from='bob@example.test/phone' to='bob@example.test'><body>spoofed</body></message>".into(),
        "<presence from='alice@example.test/other'/>".into(),
        "<iq type='get' id='f1' from='example.test'><ping xmlns='urn:xmpp:ping'/></iq>".into(),
        // stream management (XEP-0198): acknowledgements, a count too high
        "<enable xmlns='urn:xmpp:sm:3'/>".into(),
        "<enable xmlns='urn:xmpp:sm:3'/><message to='bob@example.test'><body>acked?</body></message><r xmlns='urn:xmpp:sm:3'/>".into(),
        "<enable xmlns='urn:xmpp:sm:3'/><message to='alice@example.test'><body>me</body></message><r xmlns='urn:xmpp:sm:3'/><a xmlns='urn:xmpp:sm:3' h='1'/>".into(),
        "<enable xmlns='urn:xmpp:sm:3'/><a xmlns='urn:xmpp:sm:3' h='7'/>".into(),
        "<enable xmlns='urn:xmpp:sm:3' resume='true'/><enable xmlns='urn:xmpp:sm:3'/><resume xmlns='urn:xmpp:sm:3' previd='x' h='0'/>".into(),
        "<r xmlns='urn:xmpp:sm:3'/><a xmlns='urn:xmpp:sm:3' h='0'/><x xmlns='urn:xmpp:sm:3'/>".into(),
        // what ends the stream
        "<foo/>".into(),
        "<message xmlns='jabber:server' to='bob@example.test'><body>x</body></message>".into(),
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='example.test' version='1.0'>".into(),
        "<message><body>unfinished".into(),
        // Found by fuzzing: a stream error quoting a control character the client sent
        // (xml/mod.rs, `characters_xml_forbids_are_never_written`).
        "<message to='bob@example.test'><body>hi</body></mes\u{1}\0\0\0>".into(),
        // Found by fuzzing: a message to one of alice's own resources that is not
        // there reaches her other resources with its `to` as written (the target's
        // property, not the server, was wrong).
        "<message to='alice@example.test/phone'/><message to='alice@example.test/phone' type='chat'><body>me</body></message>".into(),
        "</stream:stream>".into(),
        " \n ".into(),
    ];
    let mut out: Vec<Vec<u8>> = stanzas.iter().map(|s| s.as_bytes().to_vec()).collect();
    // Each after initial presence, so the session is available and sees bob.
    out.extend(
        stanzas
            .iter()
            .map(|s| format!("<presence/>{s}").into_bytes()),
    );
    // Whole sessions: roster and chat, subscriptions, routed iqs, multicast, spoofing.
    let sessions = [
        format!(
            "<presence/><iq type='get' id='r1'><query xmlns='{ROSTER}' ver='1'/></iq>\
             <message to='bob@example.test' type='chat'><body>hi</body></message>\
             <presence><show>xa</show></presence><presence type='probe' to='bob@example.test'/>\
             <presence type='unavailable'/></stream:stream>"
        ),
        format!(
            "<presence/><iq type='set' id='r4'><query xmlns='{ROSTER}'><item jid='bob@example.test' subscription='remove'/></query></iq>\
             <iq type='get' id='r1'><query xmlns='{ROSTER}'/></iq>\
             <message to='bob@example.test'><body>still there?</body></message></stream:stream>"
        ),
        "<presence/><presence type='subscribed' to='carol@example.test'/>\
         <presence type='subscribe' to='carol@example.test'/>\
         <presence type='unsubscribe' to='bob@example.test'/>\
         <presence type='unsubscribed' to='bob@example.test'/>\
         <presence type='subscribe' to='bob@example.test'/>"
            .to_string(),
        "<presence/><iq type='get' id='q1' to='bob@example.test/phone'><query xmlns='jabber:iq:version'/></iq>\
         <iq type='get' id='q2' to='bob@example.test/laptop'><ping xmlns='urn:xmpp:ping'/></iq>\
         <iq type='get' id='q4' to='alice@example.test/fuzz'><ping xmlns='urn:xmpp:ping'/></iq>\
         <iq type='result' id='q6' to='bob@example.test/phone'/>\
         <iq type='get' id='d3' to='bob@example.test'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
            .to_string(),
        "<presence/><message to='example.test'><addresses xmlns='http://jabber.org/protocol/address'>\
         <address type='to' jid='bob@example.test'/><address type='cc' jid='carol@example.test'/>\
         </addresses><body>all</body></message><presence to='bob@example.test/phone'/>\
         <message to='alice@example.test'><body>me</body></message><presence type='probe'/>"
            .to_string(),
        "<presence/><message from='alice@example.test' to='bob@example.test'><body>ok</body></message>\
         <iq type='get' id='p1' from='alice@example.test/fuzz'><ping xmlns='urn:xmpp:ping'/></iq>\
         <message from='bob@example.test/phone' to='bob@example.test'><body>spoofed</body></message>\
         <iq type='get' id='p2'><ping xmlns='urn:xmpp:ping'/></iq>"
            .to_string(),
    ];
    out.extend(sessions.into_iter().map(String::into_bytes));
    out
}
