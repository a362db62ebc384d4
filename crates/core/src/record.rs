//! The stored form of an event: the one record format that every durable
//! engine writes and every node of a cluster reads back (the embedded
//! engine's `events` table, the `r` field of each Redis Stream entry).
//!
//! A record is a format byte ([`FORMAT`]), then JSON with what is needed to
//! rebuild the [`Event`]: the publisher-supplied id, or for a hub id its tag
//! (the sequence number, the id's other part, is kept by the engine beside
//! the record; see [`crate::id`]), the target, type, data, retry, privacy
//! and time. Records of releases that drew no tags have none, and their
//! events keep the untagged ids those releases handed out. Decoding rebuilds the event with
//! [`Event::new`], so its frame is encoded exactly as at publish time. A
//! record of another format is refused, never guessed at: a history written
//! by another version of pushwire fails as unavailable rather than serve
//! events it may misread. Encoding is plain serialisation; this module does
//! no IO.

use serde::{Deserialize, Serialize};

use crate::event::{Draft, Event, Target};
use crate::log::StoreError;

/// The first byte of every record (and the `format` the embedded engine
/// keeps in its `meta` table).
pub const FORMAT: u8 = 1;

/// The stored form of an event, as written.
#[derive(Serialize)]
struct RecordOut<'a> {
    /// Only a publisher-supplied id; a hub id is the sequence number.
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    to: &'a Target,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'a str>,
    data: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    private: bool,
    time: u64,
    #[serde(skip_serializing_if = "is_zero")]
    tag: u64,
}

fn is_zero(tag: &u64) -> bool {
    *tag == 0
}

/// The stored form of an event, as read back.
#[derive(Deserialize)]
struct RecordIn {
    #[serde(default)]
    id: Option<String>,
    to: Target,
    #[serde(default)]
    event: Option<String>,
    data: String,
    #[serde(default)]
    retry: Option<u64>,
    #[serde(default)]
    private: bool,
    time: u64,
    #[serde(default)]
    tag: u64,
}

/// The parts of a record retention needs.
#[derive(Debug, Deserialize)]
pub struct RecordKey {
    /// The publisher-supplied id, if the event had one.
    #[serde(default)]
    pub id: Option<String>,
    /// Milliseconds since the Unix epoch when the hub accepted the event.
    pub time: u64,
    /// The tag of its hub id (0 for none): what the history keeps of the
    /// newest event it removed.
    #[serde(default)]
    pub tag: u64,
}

impl RecordKey {
    /// The event's tag as [`crate::id::locate`] compares it (see
    /// [`Event::hub_tag`]).
    pub fn hub_tag(&self) -> u64 {
        match self.id {
            Some(_) => crate::id::PUBLISHER_ID,
            None => self.tag,
        }
    }
}

/// The record of an event (shared by the engines, so every engine and
/// every node reads one format). `supplied_id` says whether the event's id
/// came from its publisher.
pub fn encode(event: &Event, supplied_id: bool) -> Result<Vec<u8>, StoreError> {
    let record = RecordOut {
        id: supplied_id.then_some(&*event.id),
        to: &event.target,
        event: event.event.as_deref(),
        data: &event.data,
        retry: event.retry,
        private: event.private,
        time: event.time,
        tag: if supplied_id { 0 } else { event.tag },
    };
    let mut bytes = Vec::with_capacity(event.data.len() + 64);
    bytes.push(FORMAT);
    serde_json::to_writer(&mut bytes, &record)
        .map_err(|e| StoreError::Unavailable(format!("cannot encode an event: {e}")))?;
    Ok(bytes)
}

fn record_json(seq: u64, bytes: &[u8]) -> Result<&[u8], StoreError> {
    match bytes.split_first() {
        Some((&FORMAT, json)) => Ok(json),
        _ => Err(StoreError::Unavailable(format!(
            "stored event {seq} has an unknown format"
        ))),
    }
}

/// Rebuilds an event; `Event::new` encodes its frame, as at publish time.
pub fn decode(seq: u64, bytes: &[u8]) -> Result<Event, StoreError> {
    let record: RecordIn = serde_json::from_slice(record_json(seq, bytes)?)
        .map_err(|e| StoreError::Unavailable(format!("stored event {seq} is unreadable: {e}")))?;
    let draft = Draft {
        target: record.to,
        event: record.event,
        data: record.data,
        id: record.id,
        retry: record.retry,
        private: record.private,
    };
    Ok(Event::stored(seq, draft, record.time, record.tag))
}

/// Reads only what retention needs of a record, without rebuilding the
/// event.
pub fn decode_key(seq: u64, bytes: &[u8]) -> Result<RecordKey, StoreError> {
    serde_json::from_slice(record_json(seq, bytes)?)
        .map_err(|e| StoreError::Unavailable(format!("stored event {seq} is unreadable: {e}")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn full() -> Event {
        Event::new(
            1,
            Draft {
                target: Target::Topics(vec!["a".into(), "b".into()]),
                event: Some("note".into()),
                data: "line one\nline two".into(),
                id: Some("order-1".into()),
                retry: Some(2500),
                private: true,
            },
            1_700_000_000_123,
        )
    }

    #[test]
    fn a_record_round_trips_to_the_same_event_and_frame() {
        let original = full();
        let back = decode(original.seq, &encode(&original, true).unwrap()).unwrap();
        assert_eq!(back, original);
        assert_eq!(back.frame(), original.frame());
    }

    #[test]
    fn a_hub_id_is_stored_as_its_tag_and_comes_back_with_the_sequence() {
        let original = Event::stored(42, Draft::new(Target::All, "x"), 7, 1);
        let bytes = encode(&original, false).unwrap();
        assert_eq!(bytes[0], FORMAT);
        assert_eq!(&bytes[1..], br#"{"to":"all","data":"x","time":7,"tag":1}"#);
        let back = decode(42, &bytes).unwrap();
        assert_eq!(&*back.id, "#42.aaaaaaab");
        assert_eq!(back, original);
        // Read back under another sequence, the id follows that sequence.
        assert_eq!(&*decode(43, &bytes).unwrap().id, "#43.aaaaaaab");
    }

    #[test]
    fn a_record_of_an_earlier_release_keeps_its_untagged_id() {
        let bytes = [&[FORMAT][..], br#"{"to":"all","data":"x","time":7}"#].concat();
        let back = decode(42, &bytes).unwrap();
        assert_eq!((&*back.id, back.tag), ("#42", 0));
        assert_eq!(decode_key(42, &bytes).unwrap().tag, 0);
    }

    #[test]
    fn the_stored_form_is_pinned() {
        // Records outlive the binary that wrote them: a change here needs a
        // new FORMAT, not an edit of this line.
        let bytes = encode(&full(), true).unwrap();
        assert_eq!(
            String::from_utf8(bytes[1..].to_vec()).unwrap(),
            r#"{"id":"order-1","to":{"topics":["a","b"]},"event":"note","data":"line one\nline two","retry":2500,"private":true,"time":1700000000123}"#
        );
    }

    #[test]
    fn the_key_is_the_publisher_id_the_time_and_the_tag() {
        let key = decode_key(1, &encode(&full(), true).unwrap()).unwrap();
        assert_eq!(key.id.as_deref(), Some("order-1"));
        assert_eq!(key.time, 1_700_000_000_123);
        assert_eq!(key.tag, 0);
        let hub = Event::new(5, Draft::new(Target::user("u"), "x"), 9);
        let key = decode_key(5, &encode(&hub, false).unwrap()).unwrap();
        assert_eq!((key.id, key.time, key.tag), (None, 9, hub.tag));
    }

    #[test]
    fn another_format_or_damaged_json_is_refused() {
        let mut bytes = encode(&full(), true).unwrap();
        let unknown = |r: Result<Event, StoreError>| r.err().unwrap().to_string();
        assert!(unknown(decode(3, &[])).contains("stored event 3 has an unknown format"));
        bytes[0] = FORMAT + 1;
        assert!(unknown(decode(3, &bytes)).contains("unknown format"));
        assert!(decode_key(3, &bytes).is_err());
        bytes[0] = FORMAT;
        bytes.truncate(bytes.len() - 1);
        assert!(unknown(decode(3, &bytes)).contains("stored event 3 is unreadable"));
    }
}
