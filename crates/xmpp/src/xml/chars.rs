//! What XML 1.0 allows in a document: characters and names. The reader refuses
//! anything else, so it is never relayed to other clients.

use super::XmlError;

/// XML 1.0's `Char` production: what may appear in a document at all, raw or as a
/// character reference. Anything else would be relayed to other clients, whose
/// parsers would end their streams over it.
pub(super) fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// XML 1.0's `Name` production (quick-xml takes any bytes up to a blank, `/` or `>`
/// as a name, `<b'>` included, which would go out verbatim).
pub(super) fn xml_name(s: &str) -> bool {
    fn start(c: char) -> bool {
        matches!(c, ':' | 'A'..='Z' | '_' | 'a'..='z' | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}'
            | '\u{F8}'..='\u{2FF}' | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}'
            | '\u{200C}'..='\u{200D}' | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}'
            | '\u{3001}'..='\u{D7FF}' | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}'
            | '\u{10000}'..='\u{EFFFF}')
    }
    let mut cs = s.chars();
    cs.next().is_some_and(start)
        && cs.all(|c| {
            start(c)
                || matches!(c, '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
        })
}

pub(super) fn xml_chars(s: &str) -> Result<(), XmlError> {
    match s.chars().find(|&c| !xml_char(c)) {
        None => Ok(()),
        Some(c) => Err(XmlError::NotWellFormed(format!(
            "character U+{:04X} is not allowed in XML",
            u32::from(c)
        ))),
    }
}
