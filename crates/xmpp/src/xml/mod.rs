//! A small element tree for stanzas, the XMPP stream reader built on quick-xml, and
//! serialisation with escaping.
//!
//! The reader enforces RFC 6120 §11's restricted XML (no DTD, comments, processing
//! instructions or entity references beyond the five predefined ones), a byte budget
//! per stanza and a nesting depth limit. It is not cancel-safe: one task owns it.

mod chars;
mod fragment;
mod lean_buf;
mod reader;

use std::fmt::Write as _;

pub use fragment::check_fragment;
pub use reader::{Frame, Limits, StreamError, StreamHeader, StreamReader, XmlError};

pub const NS_STREAM: &str = "http://etherx.jabber.org/streams";
pub const NS_CLIENT: &str = "jabber:client";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    El(Element),
    Text(String),
    /// A complete, namespace-declared element already serialised (an extension the
    /// core carried opaquely); written verbatim. Only [`check_fragment`]ed text goes
    /// here.
    Raw(String),
}

/// An XML element: local name, namespace, attributes (qualified names as written) and
/// children.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub ns: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Node>,
}

impl Element {
    pub fn new(name: &str, ns: &str) -> Self {
        Element {
            name: name.into(),
            ns: ns.into(),
            ..Default::default()
        }
    }

    pub fn attr(&self, k: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(a, _)| a == k)
            .map(|(_, v)| v.as_str())
    }

    pub fn set_attr(&mut self, k: &str, v: impl Into<String>) {
        let v = v.into();
        match self.attrs.iter_mut().find(|(a, _)| a == k) {
            Some(slot) => slot.1 = v,
            None => self.attrs.push((k.into(), v)),
        }
    }

    /// Builder: with an attribute (skipped when `None`).
    pub fn with_attr(mut self, k: &str, v: impl AttrValue) -> Self {
        if let Some(v) = v.into_attr() {
            self.set_attr(k, v);
        }
        self
    }

    pub fn with_child(mut self, c: Element) -> Self {
        self.children.push(Node::El(c));
        self
    }

    pub fn with_text(mut self, t: impl Into<String>) -> Self {
        self.children.push(Node::Text(t.into()));
        self
    }

    pub fn push(&mut self, c: Element) {
        self.children.push(Node::El(c));
    }

    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|c| match c {
            Node::El(e) => Some(e),
            Node::Text(_) | Node::Raw(_) => None,
        })
    }

    pub fn child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.elements().find(|e| e.name == name && e.ns == ns)
    }

    /// Concatenated text children.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for c in &self.children {
            if let Node::Text(t) = c {
                s.push_str(t);
            }
        }
        s
    }

    /// Text of a child in the same namespace as `self`.
    pub fn child_text(&self, name: &str) -> Option<String> {
        self.child(name, &self.ns.clone()).map(|c| c.text())
    }

    /// Serialise; `xmlns` is written where the namespace differs from the parent's.
    pub fn write_to(&self, out: &mut String, parent_ns: &str) {
        out.push('<');
        out.push_str(&self.name);
        if self.ns != parent_ns {
            out.push_str(" xmlns='");
            escape_attr_into(out, &self.ns);
            out.push('\'');
        }
        for (k, v) in &self.attrs {
            let _ = write!(out, " {k}='");
            escape_attr_into(out, v);
            out.push('\'');
        }
        if self.children.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        for c in &self.children {
            match c {
                Node::El(e) => e.write_to(out, &self.ns),
                Node::Text(t) => escape_into(out, t),
                Node::Raw(r) => out.push_str(r),
            }
        }
        out.push_str("</");
        out.push_str(&self.name);
        out.push('>');
    }

    /// Serialise standing alone (its namespace declared), dropping attributes whose
    /// prefix would need a declaration this element does not carry: what the core
    /// stores and relays as an opaque extension.
    pub fn to_fragment(&self) -> String {
        fn clean(e: &Element) -> Element {
            Element {
                name: e.name.clone(),
                ns: e.ns.clone(),
                attrs: e
                    .attrs
                    .iter()
                    .filter(|(k, _)| !k.contains(':') || k.starts_with("xml:"))
                    .cloned()
                    .collect(),
                children: e
                    .children
                    .iter()
                    .map(|c| match c {
                        Node::El(x) => Node::El(clean(x)),
                        other => other.clone(),
                    })
                    .collect(),
            }
        }
        let mut s = String::with_capacity(64);
        clean(self).write_to(&mut s, "");
        s
    }

    pub fn push_raw(&mut self, xml: String) {
        self.children.push(Node::Raw(xml));
    }

    /// Serialise as a stanza of a `jabber:client` stream.
    pub fn to_stanza(&self) -> String {
        let mut s = String::with_capacity(256);
        self.write_to(&mut s, NS_CLIENT);
        s
    }
}

/// What can be an attribute value (`None` leaves the attribute out).
pub trait AttrValue {
    fn into_attr(self) -> Option<String>;
}
impl AttrValue for &str {
    fn into_attr(self) -> Option<String> {
        Some(self.to_string())
    }
}
impl AttrValue for String {
    fn into_attr(self) -> Option<String> {
        Some(self)
    }
}
impl AttrValue for Option<String> {
    fn into_attr(self) -> Option<String> {
        self
    }
}

/// Escape character data. A CR is written as a reference: a reader turns a raw one
/// into a LF (XML's line-end normalisation).
pub fn escape_into(out: &mut String, s: &str) {
    escape(out, s, false);
}

/// Escape an attribute value: also tab and LF, which a reader turns into spaces.
fn escape_attr_into(out: &mut String, s: &str) {
    escape(out, s, true);
}

fn escape(out: &mut String, s: &str, attr: bool) {
    for ch in s.chars() {
        match ch {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            '\r' => out.push_str("&#xD;"),
            '\n' if attr => out.push_str("&#xA;"),
            '\t' if attr => out.push_str("&#x9;"),
            // Never a character XML forbids, whatever the text came from (an error
            // message quoting what a client sent, a note from another protocol):
            // the peer's parser would end its stream over it.
            c if !chars::xml_char(c) => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_round_trip() {
        let e = Element::new("message", NS_CLIENT)
            .with_attr("to", "a'b\"<c>&")
            .with_child(Element::new("body", NS_CLIENT).with_text("<&>"))
            .with_child(Element::new("no-store", "urn:xmpp:hints"));
        assert_eq!(
            e.to_stanza(),
            "<message to='a&apos;b&quot;&lt;c&gt;&amp;'><body>&lt;&amp;&gt;</body><no-store xmlns='urn:xmpp:hints'/></message>"
        );
    }

    /// Found by fuzzing (fuzz/fuzz_targets/stanza_handling.rs): a stream error's text
    /// quoted what the client sent (`</mes\x01>`: "expected `</message>`, but
    /// `</mes\u{1}>` was found") and was written with the control character raw, so the
    /// client's parser could not read the stream error.
    #[test]
    fn characters_xml_forbids_are_never_written() {
        let mut s = String::new();
        escape_into(&mut s, "a\u{1}b\0c\u{FFFE}d\u{1F600}");
        assert_eq!(s, "a\u{FFFD}b\u{FFFD}c\u{FFFD}d\u{1F600}");
        let e = Element::new("message", NS_CLIENT)
            .with_attr("id", "x\u{8}")
            .with_child(Element::new("body", NS_CLIENT).with_text("\u{1b}[0m"));
        assert_eq!(
            e.to_stanza(),
            "<message id='x\u{FFFD}'><body>\u{FFFD}[0m</body></message>"
        );
    }

    /// Found by fuzzing (fuzz/fuzz_targets/xml_stream.rs): line ends and tabs that a
    /// stanza carried (as references) were written raw, and a reader normalises raw
    /// ones: CR became LF in text, CR, LF and tab became spaces in attributes.
    #[test]
    fn white_space_a_reader_would_normalise_is_written_as_references() {
        let e = Element::new("message", NS_CLIENT)
            .with_attr("id", "a\nb\rc\td e")
            .with_child(Element::new("body", NS_CLIENT).with_text("x\ry\nz\t"));
        assert_eq!(
            e.to_stanza(),
            "<message id='a&#xA;b&#xD;c&#x9;d e'><body>x&#xD;y\nz\t</body></message>"
        );
    }
}
