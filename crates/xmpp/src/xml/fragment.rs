//! Checking opaque XML fragments before they are written verbatim.

use quick_xml::events::Event;

/// Is `s` exactly one well-formed XML element with no DTD, comments or processing
/// instructions (what an opaque extension must be before it is written verbatim)?
pub fn check_fragment(s: &str) -> bool {
    let mut r = quick_xml::Reader::from_str(s);
    let mut depth = 0usize;
    let mut roots = 0usize;
    loop {
        match r.read_event() {
            Ok(Event::Start(_)) => {
                if depth == 0 {
                    roots += 1;
                }
                depth += 1;
            }
            Ok(Event::Empty(_)) => {
                if depth == 0 {
                    roots += 1;
                }
            }
            Ok(Event::End(_)) => {
                if depth == 0 {
                    return false;
                }
                depth -= 1;
            }
            Ok(Event::Text(t)) => {
                if depth == 0 && !AsRef::<str>::as_ref(&t).trim().is_empty() {
                    return false;
                }
            }
            Ok(Event::GeneralRef(g)) => {
                let name: &str = g.as_ref();
                let known =
                    matches!(name, "lt" | "gt" | "amp" | "apos" | "quot") || name.starts_with('#');
                if depth == 0 || !known {
                    return false;
                }
            }
            Ok(Event::CData(_)) => {
                if depth == 0 {
                    return false;
                }
            }
            Ok(Event::Eof) => return depth == 0 && roots == 1,
            Ok(_) | Err(_) => return false,
        }
    }
}
