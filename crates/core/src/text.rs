//! Characters no identifier may carry: topics, selectors, user ids, event
//! ids and event types.
//!
//! Control characters (C0, DEL, C1) could break a frame or a log line;
//! Unicode format characters (general category `Cf`: bidirectional
//! overrides, zero-width joiners and spaces, the byte order mark, tags) are
//! invisible, so two identifiers that look the same could differ. The
//! current Mercure draft forbids both in topics, matchers, ids and types
//! ("Terminology", "Publication"); the hub applies the rule to every route,
//! so an identifier means the same whichever route it came in by. Event
//! data is not an identifier and may hold anything.

use icu_properties::props::GeneralCategory;
use icu_properties::CodePointMapData;

/// Whether `c` may not appear in an identifier.
pub fn is_forbidden(c: char) -> bool {
    c.is_control() || (!c.is_ascii() && is_format(c))
}

/// Whether `text` holds a character no identifier may carry.
pub fn has_forbidden(text: &str) -> bool {
    // ASCII text, by far the most common, needs no table look-up.
    if text.is_ascii() {
        return text.bytes().any(|b| b.is_ascii_control());
    }
    text.chars().any(is_forbidden)
}

/// Unicode general category `Cf`, from the Unicode Character Database the
/// `icu_properties` crate compiles in.
fn is_format(c: char) -> bool {
    CodePointMapData::<GeneralCategory>::new().get(c) == GeneralCategory::Format
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_invisible_format_characters_are_forbidden() {
        for c in [
            '\0',
            '\t',
            '\n',
            '\r',
            '\u{7f}',
            '\u{80}',
            '\u{9f}', // C0, DEL, C1
            '\u{ad}',
            '\u{200b}',
            '\u{200d}',
            '\u{200e}',
            '\u{202e}',
            '\u{2066}',
            '\u{feff}',
            '\u{e0001}',
            '\u{e007f}', // format characters
        ] {
            assert!(is_forbidden(c), "{:?}", c);
            assert!(has_forbidden(&format!("a{c}b")), "{:?}", c);
        }
    }

    #[test]
    fn visible_text_is_allowed() {
        for text in [
            "https://example.com/books/1",
            "用户/小明",
            "café",
            "a b",
            "ü-ß",
            "😀",
        ] {
            assert!(!has_forbidden(text), "{text}");
        }
    }
}
