//! The ids the hub gives events: `#<seq>.<tag>`, e.g. `#1042.kq3vz7ma`.
//!
//! `seq` is the event's sequence number, which orders the history. `tag`
//! is 40 random bits drawn when the event is stored, kept in its record and
//! written as eight lowercase base32 characters. Together they name one
//! event of one history: when a history is wiped or replaced (a new data
//! directory, a Redis `FLUSHALL`, another `--redis-prefix`) or restored from
//! an older copy (a backup, a failover to a lagging replica), the sequence
//! numbers it hands out again come with other tags, so an id a client saw
//! before is never taken for the event that now has its number: resuming
//! from it gets a reset, not a silent skip. The chance that a reissued
//! number draws the same tag is one in 2^40.
//!
//! The history remembers the tag of every retained event and of the newest
//! one retention removed (the boundary), since resuming right after that
//! one is resuming with nothing missed. [`locate`] is that rule, shared by
//! every engine.
//!
//! Ids of earlier releases (`#<seq>`, and the bare decimal before that)
//! carry no tag; they are read as tag 0, which only events stored by those
//! releases have, so they resume where those events are still the ones
//! the history holds, and get a reset anywhere else.

use std::fmt;

use crate::log::Cursor;

/// Bits of randomness in a tag.
const TAG_BITS: u32 = 40;
const TAG_MASK: u64 = (1 << TAG_BITS) - 1;
/// Characters of a written tag (5 bits each).
const TAG_CHARS: usize = (TAG_BITS / 5) as usize;
/// RFC 4648 base32, in lower case: letters and digits only, so an id needs
/// no escaping beyond its leading `#`.
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// What a history gives [`locate`] as the tag of an event that has a
/// publisher's id: no hub id names it, not even an untagged one (whose tag
/// reads as 0), since no release issued a hub id for it.
pub const PUBLISHER_ID: u64 = u64::MAX;

/// A new event's tag: random, never 0 (0 stands for "no tag").
pub fn fresh_tag() -> u64 {
    loop {
        let tag = fastrand::u64(..) & TAG_MASK;
        if tag != 0 {
            return tag;
        }
    }
}

/// A hub id taken apart. `tag` is 0 for the untagged ids of earlier
/// releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubId {
    pub seq: u64,
    pub tag: u64,
}

impl HubId {
    /// Reads a hub id: `#<seq>.<tag>`, or the earlier `#<seq>` and `<seq>`.
    /// The sequence is canonical decimal (no sign, no leading zero) and the
    /// tag exactly eight characters of the alphabet, not all `a` (tag 0).
    /// Anything else, `#+5`, `05` or `#5.KQ3VZ7MA` included, is not a hub
    /// id: it may be a publisher's own id and is looked up as such.
    pub fn parse(id: &str) -> Option<HubId> {
        let (digits, tag) = match id.strip_prefix('#') {
            Some(rest) => match rest.split_once('.') {
                Some((digits, tag)) => (digits, Some(tag)),
                None => (rest, None),
            },
            None => (id, None),
        };
        let canonical = !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && (digits == "0" || !digits.starts_with('0'));
        if !canonical {
            return None;
        }
        let seq = digits.parse().ok()?;
        let tag = match tag {
            Some(text) => parse_tag(text)?,
            None => 0,
        };
        Some(HubId { seq, tag })
    }
}

impl fmt::Display for HubId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.seq)?;
        if self.tag == 0 {
            return Ok(());
        }
        let mut text = [0u8; TAG_CHARS];
        for (i, c) in text.iter_mut().enumerate() {
            let shift = TAG_BITS - 5 * (i as u32 + 1);
            *c = ALPHABET[((self.tag >> shift) & 31) as usize];
        }
        // The alphabet is ASCII.
        let text = std::str::from_utf8(&text).map_err(|_| fmt::Error)?;
        write!(f, ".{text}")
    }
}

fn parse_tag(text: &str) -> Option<u64> {
    if text.len() != TAG_CHARS {
        return None;
    }
    let mut tag = 0u64;
    for b in text.bytes() {
        let value = ALPHABET.iter().position(|&a| a == b)?;
        tag = (tag << 5) | value as u64;
    }
    (tag != 0).then_some(tag)
}

/// What a history knows of the span a hub id may point into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// The oldest retained sequence number (`next` when none is).
    pub first: u64,
    /// The next sequence number to be issued.
    pub next: u64,
    /// The tag of the newest event retention removed, the one right before
    /// `first` (0 when none was, or it had no tag; [`PUBLISHER_ID`] when it
    /// had a publisher's id).
    pub boundary_tag: u64,
}

/// Where a hub id points: after its event when this history issued it for
/// the event it holds under that number (or for the boundary, the newest
/// event retention removed); otherwise nowhere the history can promise
/// continuity from. `stored_tag` reads the tag of a retained event
/// ([`PUBLISHER_ID`] for one with a publisher's id).
pub fn locate<E>(
    id: HubId,
    span: Span,
    stored_tag: impl FnOnce(u64) -> Result<Option<u64>, E>,
) -> Result<Cursor, E> {
    let issued_here = if id.seq >= span.next {
        false
    } else if id.seq >= span.first {
        stored_tag(id.seq)? == Some(id.tag)
    } else {
        id.seq.saturating_add(1) == span.first && id.tag == span.boundary_tag
    };
    Ok(if issued_here {
        Cursor::After(id.seq)
    } else {
        Cursor::Unknown
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::convert::Infallible;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn ids_of_this_and_earlier_releases_parse() {
        assert_eq!(HubId::parse("#0"), Some(HubId { seq: 0, tag: 0 }));
        assert_eq!(HubId::parse("#42"), Some(HubId { seq: 42, tag: 0 }));
        assert_eq!(HubId::parse("42"), Some(HubId { seq: 42, tag: 0 }));
        assert_eq!(
            HubId::parse("#42.aaaaaaab"),
            Some(HubId { seq: 42, tag: 1 })
        );
        assert_eq!(
            HubId::parse("#18446744073709551615.77777777"),
            Some(HubId {
                seq: u64::MAX,
                tag: TAG_MASK
            })
        );
    }

    #[test]
    fn anything_else_is_not_a_hub_id() {
        for not_ours in [
            "",
            "#",
            "##5",
            "#+5",
            "#05",
            "# 5",
            "#5#",
            "+5",
            "-5",
            "05",
            "00",
            " 5",
            "5 ",
            "5a",
            "18446744073709551616",
            "5.abcdefgh",
            "#5.",
            "#.abcdefgh",
            "#5.aaaaaaaa",
            "#5.abcdefg",
            "#5.abcdefghi",
            "#5.ABCDEFGH",
            "#5.abcdefg1",
            "#5.abcdefg8",
            "#5.abcd.efg",
            "#05.abcdefgh",
        ] {
            assert_eq!(HubId::parse(not_ours), None, "{not_ours:?}");
        }
    }

    #[test]
    fn fresh_tags_are_never_zero_and_fit_their_bits() {
        for _ in 0..10_000 {
            let tag = fresh_tag();
            assert!(tag != 0 && tag <= TAG_MASK);
        }
    }

    proptest! {
        #[test]
        fn written_ids_parse_back(seq in any::<u64>(), tag in 0..=TAG_MASK) {
            let id = HubId { seq, tag };
            let text = id.to_string();
            prop_assert_eq!(HubId::parse(&text), Some(id));
            prop_assert!(text.len() <= 1 + 20 + 1 + TAG_CHARS);
        }
    }

    fn at(seq: u64, tag: u64) -> HubId {
        HubId { seq, tag }
    }

    fn locate_in(id: HubId, span: Span, stored: &[(u64, u64)]) -> Cursor {
        locate(id, span, |seq| {
            Ok::<_, Infallible>(stored.iter().find(|(s, _)| *s == seq).map(|(_, t)| *t))
        })
        .unwrap()
    }

    #[test]
    fn only_the_event_this_history_holds_under_a_number_is_resumed_after() {
        // Events 4..=6 retained, 3 was the newest trimmed (tag 33).
        let span = Span {
            first: 4,
            next: 7,
            boundary_tag: 33,
        };
        let stored = [(4, 44), (5, 55), (6, 66)];
        assert_eq!(locate_in(at(5, 55), span, &stored), Cursor::After(5));
        assert_eq!(locate_in(at(3, 33), span, &stored), Cursor::After(3));
        // The same numbers with other tags: another history's events, or
        // this one's before it was restored from an older copy.
        assert_eq!(locate_in(at(5, 56), span, &stored), Cursor::Unknown);
        assert_eq!(locate_in(at(3, 34), span, &stored), Cursor::Unknown);
        // An untagged id of an earlier release does not name a tagged event.
        assert_eq!(locate_in(at(5, 0), span, &stored), Cursor::Unknown);
        // Nor any hub id an event that has a publisher's id.
        let own = [(4, PUBLISHER_ID)];
        let before_own = Span {
            boundary_tag: PUBLISHER_ID,
            ..span
        };
        assert_eq!(locate_in(at(4, 0), span, &own), Cursor::Unknown);
        assert_eq!(locate_in(at(3, 0), before_own, &own), Cursor::Unknown);
        // Trimmed beyond the boundary, or never issued.
        assert_eq!(locate_in(at(2, 22), span, &stored), Cursor::Unknown);
        assert_eq!(locate_in(at(7, 77), span, &stored), Cursor::Unknown);
    }

    #[test]
    fn untagged_ids_resume_over_what_earlier_releases_stored() {
        let span = Span {
            first: 1,
            next: 4,
            boundary_tag: 0,
        };
        let stored = [(1, 0), (2, 0), (3, 99)];
        assert_eq!(locate_in(at(2, 0), span, &stored), Cursor::After(2));
        assert_eq!(locate_in(at(0, 0), span, &stored), Cursor::After(0));
        assert_eq!(locate_in(at(3, 0), span, &stored), Cursor::Unknown);
    }
}
