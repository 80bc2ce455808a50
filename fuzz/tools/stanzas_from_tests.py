#!/usr/bin/env python3
"""Seed the xml_stream and stanza_handling targets with the stanzas the tests send.

Scans the Rust tests (and the XML reader's own tests) for string literals that hold
XML elements, fills `{...}` format holes with plausible JIDs, and writes one seed per
stanza (a client stream header, the stanza, the stream end) into
fuzz/seeds/xml_stream/, plus a few whole sessions. Byte 0 of each seed is the
target's chunking selector. The same stanzas go to fuzz/seeds/stanza_handling/ as
what a bound client sends (no header: the target negotiates), alone and after
initial presence. Run from anywhere; rerunning rewrites the same files.
"""
import hashlib
import pathlib
import re

top = pathlib.Path(__file__).resolve().parents[2]
out = top / "fuzz" / "seeds" / "xml_stream"
out.mkdir(parents=True, exist_ok=True)
sources = sorted(
    list((top / "tests" / "tests").glob("*.rs"))
    + list((top / "tests" / "src").glob("*.rs"))
    + list((top / "crates" / "xmpp" / "src").rglob("*.rs"))
)
OPEN = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
        "xmlns:stream='http://etherx.jabber.org/streams' to='example.test' version='1.0'>")
lit = re.compile(r'r#"(.*?)"#|"((?:[^"\\]|\\.)*)"', re.S)
holes = re.compile(r"\{[^{}]*\}")
found = set()
for src in sources:
    text = src.read_text(encoding="utf-8")
    for m in lit.finditer(text):
        s = m.group(1) if m.group(1) is not None else m.group(2)
        if m.group(2) is not None:
            try:
                s = s.encode("utf-8").decode("unicode_escape").encode("latin-1").decode("utf-8")
            except (UnicodeDecodeError, UnicodeEncodeError):
                continue
        s = holes.sub("bob@example.test", s).strip()
        if not re.match(r"<[a-zA-Z]", s) or s.startswith("<stream:stream") or s.startswith("<?xml"):
            continue
        if "<" in s[1:] or s.endswith("/>"):
            found.add(s)
sessions = [
    "<presence/><iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>"
    "<message to='bob@example.test' type='chat'><body>a &amp; b &#x263A; &lt;x&gt;</body></message> \n",
    "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>"
    "biwsbj1hbGljZSxyPWZ5a28rZDJsYmJGZ09OUnY5cWt4ZGF3TA==</auth>",
    "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
    "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>phone</resource></bind></iq>",
    "<message><body><![CDATA[<not markup>]]></body><x:y xmlns:x='urn:x' x:a='1'/></message>",
]
n = 0
for i, s in enumerate(sorted(found) + sessions):
    body = (OPEN + s + "</stream:stream>").encode("utf-8")
    for sel in (0, 0x5A):
        data = bytes([sel]) + body
        name = "test-" + hashlib.sha1(data).hexdigest()[:16]
        (out / name).write_bytes(data)
        n += 1
print(f"wrote {n} seeds ({len(found)} stanzas from the tests) to {out}")

bound = top / "fuzz" / "seeds" / "stanza_handling"
bound.mkdir(parents=True, exist_ok=True)
n = 0
for s in sorted(found) + sessions:
    for body in (s + "</stream:stream>", "<presence/>" + s):
        data = body.encode("utf-8")
        name = "test-" + hashlib.sha1(data).hexdigest()[:16]
        (bound / name).write_bytes(data)
        n += 1
print(f"wrote {n} seeds to {bound}")
