//! Opening the history file and reading back where it stands, at start
//! and when the writer reopens the file after a disk fault.
//!
//! A file that is there is only ever opened: never deleted, truncated,
//! initialised or recreated. One that cannot be opened (unreadable, not a
//! history file, corrupt, in another format, in use by another process) is
//! an error naming the file, and the hub refuses to start rather than
//! discard stored history. Every page's checksum is verified at open, so
//! damage done while the hub was stopped is refused at start rather than
//! found (or panicked on) by a read later.
//!
//! Recovery continues the sequence after every number that may have been
//! issued: the stored `next_seq`, the newest stored event, and with
//! `--fsync interval` or `never` the `reserved_seq` that forced commits
//! wrote ahead (commits that were not forced may have been lost in a crash
//! after their ids were seen by clients). The reservation is consumed by
//! the recovery; the writer makes a new one before it issues more.

use std::io::ErrorKind;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;

use redb::{Database, DatabaseError, ReadableTable, ReadableTableMetadata, StorageError};

use pushwire_core::event::Event;
use pushwire_core::log::StoreError;
use pushwire_core::record::{decode, decode_key, FORMAT};

use super::journal::{Journal, JournalError};
use super::{
    EVENTS, IDS, META, META_BOUNDARY_TAG, META_FORMAT, META_JOURNAL_EPOCH, META_NEXT_SEQ,
    META_RESERVED,
};

/// Memory the database may use to cache pages.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Opens the history file with the engine's settings. `open` never
/// initialises anything: a file that is there and is not a database stays as
/// it is; only a missing or empty file is created. A panic of the engine
/// (a file damaged in a way it does not expect) is caught and returned.
pub(super) fn open_file(
    path: &Path,
    existing: bool,
) -> std::thread::Result<Result<Database, DatabaseError>> {
    let mut builder = Database::builder();
    // Verify every page's checksum at open, not only after a crash: a file
    // damaged while the hub was stopped is refused at start rather than
    // failing (or panicking) on reads later. It reads the file once.
    builder
        .set_cache_size(CACHE_BYTES)
        .set_check_integrity_on_open(true);
    catch_unwind(AssertUnwindSafe(|| {
        if existing {
            builder.open(path)
        } else {
            builder.create(path)
        }
    }))
}

pub(super) fn describe_open_error(error: DatabaseError) -> String {
    match error {
        DatabaseError::UpgradeRequired(version) => format!(
            "the file is in an older database format ({version}) that this version cannot open"
        ),
        DatabaseError::Storage(StorageError::Corrupted(detail)) => {
            format!("the file is not a readable history database or is corrupt ({detail})")
        }
        DatabaseError::Storage(StorageError::Io(e)) if e.kind() == ErrorKind::PermissionDenied => {
            format!("permission denied ({e})")
        }
        other => format!("the file cannot be opened as a history database ({other})"),
    }
}

/// Where a history stands when it is opened.
pub(super) struct Recovered {
    pub(super) next_seq: u64,
    pub(super) first_seq: u64,
    pub(super) count: u64,
    pub(super) last: Option<Arc<Event>>,
    /// The tag of the newest event retention removed (0: none, or untagged).
    pub(super) boundary_tag: u64,
    /// The journal's frames of this epoch may hold events the file lacks
    /// (`journal.rs`).
    pub(super) journal_epoch: u64,
}

/// Why the history could not be read back at open.
#[derive(Debug, thiserror::Error)]
pub(super) enum RecoverError {
    #[error("{0}")]
    Storage(redb::Error),
    #[error("{}", format_mismatch(*.0))]
    Format(u64),
    #[error("{0}")]
    Record(StoreError),
    #[error("the journal {} {source}", path.display())]
    Journal {
        path: std::path::PathBuf,
        source: JournalError,
    },
}

/// What a history of another format means for the operator: a newer one
/// needs the newer binary back (a downgrade cannot read it), an older one
/// the older binary (this one converts nothing).
fn format_mismatch(found: u64) -> String {
    let this = FORMAT;
    if found > u64::from(this) {
        format!(
            "the history is in format {found}, written by a newer pushwire; this version reads \
             format {this} and cannot downgrade it: run the newer version again"
        )
    } else {
        format!(
            "the history is in format {found}, written by an older pushwire that this version \
             (format {this}) does not convert: run that version, or drain its clients first"
        )
    }
}

fn storage(error: impl Into<redb::Error>) -> RecoverError {
    RecoverError::Storage(error.into())
}

/// Creates the tables if needed and reads back where the history stands.
pub(super) fn recover(db: &Database) -> Result<Recovered, RecoverError> {
    let txn = db.begin_write().map_err(storage)?;
    let recovered = {
        let events = txn.open_table(EVENTS).map_err(storage)?;
        txn.open_table(IDS).map_err(storage)?;
        let mut meta = txn.open_table(META).map_err(storage)?;
        let format = meta.get(META_FORMAT).map_err(storage)?.map(|v| v.value());
        match format {
            None => {
                meta.insert(META_FORMAT, u64::from(FORMAT))
                    .map_err(storage)?;
            }
            Some(f) if f == u64::from(FORMAT) => {}
            Some(f) => return Err(RecoverError::Format(f)),
        }
        let stored_next = meta
            .get(META_NEXT_SEQ)
            .map_err(storage)?
            .map_or(1, |v| v.value());
        let last = match events.last().map_err(storage)? {
            Some((seq, record)) => Some(Arc::new(
                decode(seq.value(), record.value()).map_err(RecoverError::Record)?,
            )),
            None => None,
        };
        // After a crash with `interval` or `never`, commits (and the
        // `next_seq` they wrote) may be lost while their ids were seen by
        // clients: continue after everything that may have been issued.
        let reserved = meta
            .remove(META_RESERVED)
            .map_err(storage)?
            .map_or(0, |v| v.value());
        let next_seq = stored_next
            .max(last.as_ref().map_or(1, |e| e.seq.saturating_add(1)))
            .max(reserved)
            .max(1);
        let first_seq = events
            .first()
            .map_err(storage)?
            .map_or(next_seq, |(seq, _)| seq.value());
        let count = events.len().map_err(storage)?;
        let boundary_tag = meta
            .get(META_BOUNDARY_TAG)
            .map_err(storage)?
            .map_or(0, |v| v.value());
        let journal_epoch = meta
            .get(META_JOURNAL_EPOCH)
            .map_err(storage)?
            .map_or(0, |v| v.value());
        meta.insert(META_NEXT_SEQ, next_seq).map_err(storage)?;
        Recovered {
            next_seq,
            first_seq,
            count,
            last,
            boundary_tag,
            journal_epoch,
        }
    };
    txn.commit().map_err(storage)?;
    Ok(recovered)
}

/// Brings the file up to date with `journal` and starts a new epoch there
/// (`journal.rs`): the events of its current epoch that the file lacks are
/// written into it, in one forced commit. `end`: where the writer knows its
/// last acknowledged frame ends (after a disk fault), or `None` at open.
pub(super) fn recover_journal(
    db: &Database,
    journal: &mut Journal,
    recovered: Recovered,
    end: Option<u64>,
) -> Result<Recovered, RecoverError> {
    let found = journal
        .read(recovered.journal_epoch, recovered.next_seq, end)
        .map_err(|source| RecoverError::Journal {
            path: journal.path().to_owned(),
            source,
        })?;
    let epoch = recovered.journal_epoch.saturating_add(1);
    replay(db, &found.records, epoch)?;
    let recovered = recover(db)?;
    journal.restart(epoch);
    if !found.records.is_empty() {
        tracing::info!(
            path = %journal.path().display(),
            events = found.records.len(),
            bytes = found.end,
            "events recovered from the journal"
        );
    }
    Ok(recovered)
}

/// Writes the journal's events that the file lacks (`records`, in sequence
/// order, each at or after the file's `next_seq`) into it and starts
/// `epoch`, in one forced commit: from then on the journal's older frames
/// are stale.
pub(super) fn replay(
    db: &Database,
    records: &[(u64, Vec<u8>)],
    epoch: u64,
) -> Result<(), RecoverError> {
    let txn = db.begin_write().map_err(storage)?;
    {
        let mut events = txn.open_table(EVENTS).map_err(storage)?;
        let mut ids = txn.open_table(IDS).map_err(storage)?;
        let mut meta = txn.open_table(META).map_err(storage)?;
        let mut next_seq = meta
            .get(META_NEXT_SEQ)
            .map_err(storage)?
            .map_or(1, |v| v.value());
        for (seq, record) in records {
            let key = decode_key(*seq, record).map_err(RecoverError::Record)?;
            events.insert(*seq, record.as_slice()).map_err(storage)?;
            if let Some(id) = &key.id {
                ids.insert(id.as_str(), *seq).map_err(storage)?;
            }
            next_seq = next_seq.max(seq.saturating_add(1));
        }
        meta.insert(META_NEXT_SEQ, next_seq).map_err(storage)?;
        meta.insert(META_JOURNAL_EPOCH, epoch).map_err(storage)?;
    }
    txn.commit().map_err(storage)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use pushwire_core::event::{Draft, Target};
    use pushwire_core::log::{Cursor, EventLog, Fanout, Fsync};
    use redb::ReadableDatabase;

    use crate::engines::embedded::{EmbeddedLog, FILE_NAME};

    use super::*;
    use crate::engines::embedded::testing::{draft, open, retention, with_id, Seen};

    #[tokio::test]
    async fn everything_survives_a_reopen_and_sequences_continue() {
        let dir = tempfile::tempdir().unwrap();
        let seen = Arc::new(Seen::default());
        let original = Event::new(
            1,
            Draft {
                target: Target::Topics(vec!["a".into(), "b".into()]),
                event: Some("note".into()),
                data: "line one\nline two".into(),
                id: Some("order-1".into()),
                retry: Some(2500),
                private: true,
            },
            0,
        );
        let second;
        {
            let log = open(dir.path(), &seen);
            let draft = Draft {
                target: original.target.clone(),
                event: original.event.clone(),
                data: original.data.clone(),
                id: Some("order-1".into()),
                retry: original.retry,
                private: original.private,
            };
            second = log
                .append(vec![draft, Draft::new(Target::All, "two")])
                .await
                .unwrap()[1]
                .id
                .clone();
        }
        let log = open(dir.path(), &seen);
        let stored = log.read_after(0, 10).await.unwrap();
        assert_eq!(stored.len(), 2);
        assert_eq!(stored[0].frame(), original.frame());
        assert_eq!(stored[0].target, original.target);
        assert_eq!(stored[1].id, second, "the hub id, tag and all, survives");
        assert_eq!(log.last().await.unwrap().unwrap().seq, 2);
        assert_eq!(log.resolve("order-1").await.unwrap(), Cursor::After(1));
        assert_eq!(log.resolve(&second).await.unwrap(), Cursor::After(2));
        assert_eq!(log.resolve("#2").await.unwrap(), Cursor::Unknown);
        assert_eq!(log.resolve("#3").await.unwrap(), Cursor::Unknown);
        let more = log.append(vec![draft("u", "three")]).await.unwrap();
        assert_eq!(more[0].seq, 3);
        let refused = log.append(vec![with_id("order-1")]).await;
        assert!(matches!(refused, Err(StoreError::DuplicateId(_))));
    }

    /// A downgrade (a file of a newer format) and an upgrade across formats
    /// are refused with what to run, and the file's format is left as it was.
    #[tokio::test]
    async fn a_history_of_another_format_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let seen = Arc::new(Seen::default());
        drop(open(dir.path(), &seen));
        for (format, says) in [(u64::from(FORMAT) + 1, "newer"), (0, "older")] {
            {
                let db = Database::open(dir.path().join(FILE_NAME)).unwrap();
                let txn = db.begin_write().unwrap();
                txn.open_table(META)
                    .unwrap()
                    .insert(META_FORMAT, format)
                    .unwrap();
                txn.commit().unwrap();
            }
            let refused = EmbeddedLog::open(
                dir.path(),
                retention(10),
                Fsync::Always,
                seen.clone() as Arc<dyn Fanout>,
            );
            let message = refused.err().unwrap().to_string();
            assert!(message.contains(&format!("format {format}")), "{message}");
            assert!(message.contains(says), "{message}");
            // The file still says what it said: nothing was converted.
            let db = Database::open(dir.path().join(FILE_NAME)).unwrap();
            let txn = db.begin_read().unwrap();
            let stored = txn
                .open_table(META)
                .unwrap()
                .get(META_FORMAT)
                .unwrap()
                .map(|v| v.value());
            assert_eq!(stored, Some(format));
        }
    }

    #[tokio::test]
    async fn a_second_open_of_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let seen = Arc::new(Seen::default());
        let _first = open(dir.path(), &seen);
        let second = EmbeddedLog::open(
            dir.path(),
            retention(10),
            Fsync::Always,
            seen.clone() as Arc<dyn Fanout>,
        );
        let message = second.err().unwrap().to_string();
        assert!(message.contains(FILE_NAME), "{message}");
        assert!(message.contains("another"), "{message}");
    }

    /// Damage to any one page of a history is either refused at open (and
    /// the file left as it is) or harmless: never a hub that starts and
    /// then fails or lies when it reads.
    #[tokio::test]
    async fn damage_anywhere_is_refused_at_open_or_harmless() {
        let dir = tempfile::tempdir().unwrap();
        let seen = Arc::new(Seen::default());
        let mut expected = Vec::new();
        {
            let log = open(dir.path(), &seen);
            for b in 0..20 {
                let batch = (0..100).map(|i| draft("u", &format!("{b}-{i}"))).collect();
                let events = log.append(batch).await.unwrap();
                expected.extend(events.iter().map(|e| e.data.clone()));
            }
        }
        let clean = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
        let copy = tempfile::tempdir().unwrap();
        let file = copy.path().join(FILE_NAME);
        let (mut refused, mut harmless) = (0, 0);
        for page in 1..clean.len() / 4096 {
            let mut damaged = clean.clone();
            damaged[page * 4096 + 100..page * 4096 + 116].fill(0xFF);
            std::fs::write(&file, &damaged).unwrap();
            match EmbeddedLog::open(copy.path(), retention(10_000), Fsync::Always, seen.clone()) {
                Err(error) => {
                    assert!(
                        matches!(error, StoreError::Open { .. }),
                        "page {page}: {error}"
                    );
                    assert_eq!(
                        std::fs::read(&file).unwrap(),
                        damaged,
                        "page {page} rewritten"
                    );
                    refused += 1;
                }
                Ok(log) => {
                    let stored = log.read_after(0, 5000).await;
                    let data: Vec<String> = stored
                        .unwrap_or_else(|e| panic!("page {page}: opened, then {e}"))
                        .iter()
                        .map(|e| e.data.clone())
                        .collect();
                    assert!(
                        data == expected,
                        "page {page}: opened, then read other data"
                    );
                    harmless += 1;
                }
            }
        }
        assert!(
            refused > 0 && harmless > 0,
            "{refused} refused, {harmless} harmless"
        );
    }
}
