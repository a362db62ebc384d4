//! A durable history in one embedded database file, `<data-dir>/events.redb`
//! (redb: a copy-on-write B-tree with ACID transactions; readers see a
//! snapshot and never block the writer).
//!
//! The engine does five jobs, one file each:
//! - `writer.rs`: the single writer thread. Group commit: every queued
//!   request goes into one write transaction, made durable as `--fsync`
//!   asks (with `always`, in the journal), and only then handed to the
//!   fanout and answered. It also reopens the file after a disk fault;
//! - `journal.rs`: with `--fsync always`, the append-only file
//!   `events.journal` that makes a group durable with one `fdatasync`, so
//!   that the database's own commits need not be forced but at
//!   checkpoints; and reading it back into the file at open;
//! - `head.rs`: the small in-memory head (the bounds of the retained range,
//!   the newest event, the newest few thousand events) that readers use
//!   without a transaction;
//! - `recovery.rs`: opening the file (never deleting, truncating or
//!   recreating one that is there) and reading back where the history
//!   stands, at start and after a fault;
//! - `retention.rs`: dropping the oldest events, inside the writer's commits.
//!
//! This file ties them together: [`EmbeddedLog`] and its [`EventLog`]
//! implementation, the tables below, and the reads.
//!
//! Invariants the five share: a publish is acknowledged only after its
//! commit (see `writer.rs` for what `--fsync` makes of that); the fanout
//! sees events only once they are stored, in sequence order; there is only
//! ever one writer (retention goes through the same thread); a sequence
//! number is never issued twice, not after retention, a crash or a disk
//! fault.
//!
//! Tables:
//! - `events`: sequence number → record (a format byte, then JSON with
//!   what is needed to rebuild the [`Event`]: supplied id, target, type,
//!   data, retry, time; the format of [`pushwire_core::record`], shared
//!   with the Redis engine);
//! - `ids`: publisher-supplied id → sequence number, for the retained events;
//! - `meta`: `next_seq` (kept even when retention has emptied `events`, so a
//!   sequence number is never issued twice), the record `format`, the
//!   `boundary_tag` (the tag of the newest event retention removed, so the
//!   id of that event still resumes; see `pushwire_core::id`), and with
//!   `--fsync interval` or `never` a `reserved_seq`: commits that are not
//!   forced to disk can be lost in a crash, so sequence numbers are reserved
//!   ahead in forced commits and a restart continues after the reservation;
//!   `journal_epoch`, the epoch of the journal's current frames.
//!
//! - `seen`: user → (sequence, tag) of the newest event written to the
//!   user's streams (`pushwire_core::seen`), written by the writer in a
//!   commit of its own after each group, not forced to disk by itself.
//!
//! Reads (`read_after`, `resolve`) use read transactions; `last`, the
//! bounds of the retained range and the newest few thousand events (so that
//! a client back after a short absence is replayed from memory) come from a
//! small in-memory head that the writer updates after each commit, before
//! the fanout sees the events. While the writer reopens the file after a
//! fault, reads that need the file fail as unavailable.

mod head;
mod journal;
mod recovery;
mod retention;
mod writer;

use std::fmt::Display;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use futures_util::future::{self, BoxFuture, FutureExt};
use prometheus_client::metrics::histogram::Histogram;
use redb::{Database, DatabaseError, ReadableDatabase, TableDefinition};
use tokio::sync::oneshot;

use pushwire_core::event::{Draft, Event};
use pushwire_core::id::{locate, HubId};
use pushwire_core::log::{Cursor, EventLog, Fanout, Fsync, Retained, Retention, StoreError};
use pushwire_core::metrics::PublishStages;
use pushwire_core::record::{decode, decode_key};
use pushwire_core::seen::{Seen, SeenStore};

use head::{lock, Head};
use journal::Journal;
use recovery::{describe_open_error, open_file, recover, recover_journal};
use writer::{catch_file_size_signal, Command, DbSlot, Health, Writer};

pub use writer::{MAX_GROUP, REOPEN_EVERY};

/// The file inside the data directory.
pub const FILE_NAME: &str = "events.redb";

const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const IDS: TableDefinition<&str, u64> = TableDefinition::new("ids");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// User → (sequence, tag) of their last-seen cursor.
const SEEN: TableDefinition<&str, (u64, u64)> = TableDefinition::new("seen");
const META_NEXT_SEQ: &str = "next_seq";
/// With `--fsync interval` or `never`: sequence numbers below this may have
/// been issued by commits a crash lost, so a restart continues from here.
const META_RESERVED: &str = "reserved_seq";
const META_FORMAT: &str = "format";
/// The tag of the newest event retention removed (absent: none, or untagged).
const META_BOUNDARY_TAG: &str = "boundary_tag";
/// The epoch of the journal's current frames (`journal.rs`).
const META_JOURNAL_EPOCH: &str = "journal_epoch";

/// A durable [`EventLog`]; see the module documentation.
pub struct EmbeddedLog {
    path: PathBuf,
    db: DbSlot,
    /// Whether the last write failed (readiness).
    health: Health,
    head: Arc<Mutex<Head>>,
    commands: Option<Sender<Command>>,
    writer: Option<JoinHandle<()>>,
    /// From a group stored to its publisher holding the answer.
    answered: Histogram,
}

impl EmbeddedLog {
    /// Opens (or creates) the history in `dir` and starts its writer thread.
    ///
    /// An existing file that cannot be opened (unreadable, not a history
    /// file, corrupt, in use by another process) is an error naming the
    /// file: it is never deleted, truncated or recreated.
    pub fn open(
        dir: &Path,
        retention: Retention,
        fsync: Fsync,
        fanout: Arc<dyn Fanout>,
    ) -> Result<EmbeddedLog, StoreError> {
        EmbeddedLog::open_timed(dir, retention, fsync, fanout, PublishStages::default())
    }

    /// [`EmbeddedLog::open`], observing the time of each publish's stages
    /// (queue, write, sync, answer) into `stages`.
    pub fn open_timed(
        dir: &Path,
        retention: Retention,
        fsync: Fsync,
        fanout: Arc<dyn Fanout>,
        stages: PublishStages,
    ) -> Result<EmbeddedLog, StoreError> {
        // Messages name the full path, whatever the working directory was.
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
        let dir = dir.as_path();
        let path = dir.join(FILE_NAME);
        let refuse = |reason: String| StoreError::Open {
            path: path.clone(),
            reason: format!(
                "{reason}; the hub refuses to start rather than discard stored history \
                 (restore the file from a backup, or move it aside to start with an empty \
                 history)"
            ),
        };
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
            path: dir.to_owned(),
            reason: format!("cannot create the data directory: {e}"),
        })?;
        // A directory the hub may not write to is a setup mistake, not a
        // history at risk: say that, not "refusing to discard history".
        let not_writable = |e: &dyn std::fmt::Display| StoreError::Open {
            path: path.clone(),
            reason: format!(
                "cannot create the history file: {e}; the data directory must be writable \
                 by the user the hub runs as (or choose another with --data-dir)"
            ),
        };
        let existing = match std::fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => return Err(refuse("it is a directory".to_owned())),
            Ok(meta) => meta.len() > 0,
            Err(e) if e.kind() == ErrorKind::NotFound => false,
            Err(e) => return Err(refuse(e.to_string())),
        };
        if !existing {
            if let Err(e) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
            {
                return Err(not_writable(&e));
            }
        }
        let db = match open_file(&path, existing) {
            Ok(Ok(db)) => db,
            Ok(Err(DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch)) => {
                return Err(StoreError::Open {
                    path,
                    reason: "the file is in use by another process (is another hub running \
                             on this data directory?); stop it or give each hub its own \
                             data directory"
                        .to_owned(),
                })
            }
            Ok(Err(e)) => return Err(refuse(describe_open_error(e))),
            Err(_) => {
                return Err(refuse(
                    "the file is corrupt (the database engine failed reading it)".to_owned(),
                ))
            }
        };
        let mut recovered = recover(&db).map_err(|e| refuse(e.to_string()))?;
        // With `always`, groups are made durable in the journal; whatever
        // the mode, events a journal holds that the file lacks are written
        // into the file first.
        let journal_path = dir.join(journal::FILE_NAME);
        let mut journal = Journal::open(&journal_path, matches!(fsync, Fsync::Always))
            .map_err(|e| not_writable(&format!("{}: {e}", journal_path.display())))?;
        if let Some(journal) = &mut journal {
            recovered = recover_journal(&db, journal, recovered, None)
                .map_err(|e| refuse(e.to_string()))?;
        }
        let journal = journal.filter(|_| matches!(fsync, Fsync::Always));
        catch_file_size_signal();
        tracing::info!(
            path = %path.display(),
            events = recovered.count,
            next_seq = recovered.next_seq,
            %fsync,
            "history opened"
        );
        let head = Arc::new(Mutex::new(Head::new(&recovered)));
        let db = DbSlot::new(db);
        let writer = Writer::new(
            db.clone(),
            head.clone(),
            fanout,
            retention,
            fsync,
            &recovered,
            path.clone(),
        )
        .with_journal(journal)
        .with_stages(stages.clone());
        let health = writer.health();
        let (commands, queue) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("pushwire-history".to_owned())
            .spawn(move || writer.run(queue))
            .map_err(|e| refuse(format!("cannot start the writer thread: {e}")))?;
        Ok(EmbeddedLog {
            path,
            db,
            health,
            head,
            commands: Some(commands),
            writer: Some(thread),
            answered: stages.answer,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn head(&self) -> MutexGuard<'_, Head> {
        lock(&self.head)
    }

    fn send(&self, command: Command) -> Result<(), StoreError> {
        self.commands
            .as_ref()
            .ok_or_else(writer_stopped)?
            .send(command)
            .map_err(|_| writer_stopped())
    }
}

impl Drop for EmbeddedLog {
    /// Lets the writer finish what is queued (and force it to disk), then
    /// waits for it, so the file is closed and unlocked when this returns.
    fn drop(&mut self) {
        drop(self.commands.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl SeenStore for EmbeddedLog {
    fn load<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<Option<Seen>, StoreError>> {
        let db = self.db.clone();
        let user = user.to_owned();
        blocking(move || load_seen(&*db.get()?, &user)).boxed()
    }

    fn store(&self, batch: Vec<(Arc<str>, Seen)>) -> BoxFuture<'_, Result<(), StoreError>> {
        let (reply, answer) = oneshot::channel();
        let sent = self.send(Command::Seen { batch, reply });
        async move {
            sent?;
            answer.await.map_err(|_| writer_stopped())?
        }
        .boxed()
    }
}

impl EventLog for EmbeddedLog {
    fn cursors(&self) -> Option<&dyn SeenStore> {
        Some(self)
    }

    /// Ready while the last commit (a publish, or the retention pass every
    /// second) succeeded and the file is open: after a failed write, not
    /// ready until a commit succeeds again.
    fn ready(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        let ready = self.health.check().and_then(|()| self.db.get().map(|_| ()));
        Box::pin(std::future::ready(ready))
    }

    fn append(&self, drafts: Vec<Draft>) -> BoxFuture<'_, Result<Vec<Arc<Event>>, StoreError>> {
        let (reply, answer) = oneshot::channel();
        let sent = self.send(Command::Append {
            drafts,
            reply,
            at: Instant::now(),
        });
        async move {
            sent?;
            let (events, stored) = answer.await.map_err(|_| writer_stopped())??;
            self.answered.observe(stored.elapsed().as_secs_f64());
            Ok(events)
        }
        .boxed()
    }

    fn read_after(
        &self,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Arc<Event>>, StoreError>> {
        {
            let head = self.head();
            if limit == 0 || after.saturating_add(1) >= head.next_seq {
                return future::ready(Ok(Vec::new())).boxed();
            }
            if let Some(page) = head.recent_after(after, limit) {
                return future::ready(Ok(page)).boxed();
            }
        }
        let db = self.db.clone();
        blocking(move || read_page(&*db.get()?, after, limit)).boxed()
    }

    fn resolve(&self, id: &str) -> BoxFuture<'_, Result<Cursor, StoreError>> {
        let cursor = match HubId::parse(id) {
            // Valid for the event it was issued for while that is retained,
            // or is the newest one retention removed; the tag is read from
            // the head when the event is recent, else from its record.
            Some(id) => {
                let (span, recent) = {
                    let head = self.head();
                    (head.span(), head.recent_tag(id.seq))
                };
                locate(id, span, |seq| match recent {
                    Some(tag) => Ok(Some(tag)),
                    None => self.db.get().and_then(|db| stored_tag(&db, seq)),
                })
            }
            None => self
                .db
                .get()
                .and_then(|db| lookup_id(&db, id))
                .map(|found| {
                    let first = self.head().first_seq;
                    match found {
                        Some(seq) if seq.saturating_add(1) >= first => Cursor::After(seq),
                        _ => Cursor::Unknown,
                    }
                }),
        };
        future::ready(cursor).boxed()
    }

    fn last(&self) -> BoxFuture<'_, Result<Option<Arc<Event>>, StoreError>> {
        future::ready(Ok(self.head().last.clone())).boxed()
    }

    fn retained(&self) -> BoxFuture<'_, Result<Retained, StoreError>> {
        // From the head, without a read transaction.
        let head = self.head();
        let newest = head.last.as_ref().map(|e| e.seq);
        let oldest = newest.map(|_| head.first_seq);
        future::ready(Ok(Retained::span(oldest, newest))).boxed()
    }

    fn trim(&self, now_ms: u64) -> BoxFuture<'_, Result<usize, StoreError>> {
        let (reply, answer) = oneshot::channel();
        let sent = self.send(Command::Trim { now_ms, reply });
        async move {
            sent?;
            answer.await.map_err(|_| writer_stopped())?
        }
        .boxed()
    }
}

fn writer_stopped() -> StoreError {
    StoreError::Unavailable("the history writer has stopped".to_owned())
}

fn unavailable(what: &str, error: impl Display) -> StoreError {
    StoreError::Unavailable(format!("{what}: {error}"))
}

/// Runs a read on the blocking pool (it may touch the disk).
async fn blocking<T: Send + 'static>(
    read: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => runtime
            .spawn_blocking(read)
            .await
            .map_err(|e| unavailable("history read failed", e))?,
        Err(_) => read(),
    }
}

fn read_page(db: &Database, after: u64, limit: usize) -> Result<Vec<Arc<Event>>, StoreError> {
    let failed = |e: &dyn Display| unavailable("cannot read the history", e);
    let txn = db.begin_read().map_err(|e| failed(&e))?;
    let table = txn.open_table(EVENTS).map_err(|e| failed(&e))?;
    let mut page = Vec::with_capacity(limit.min(1024));
    for entry in table
        .range(after.saturating_add(1)..)
        .map_err(|e| failed(&e))?
    {
        let (seq, record) = entry.map_err(|e| failed(&e))?;
        page.push(Arc::new(decode(seq.value(), record.value())?));
        if page.len() >= limit {
            break;
        }
    }
    Ok(page)
}

/// The tag of a stored event, read from its record.
fn stored_tag(db: &Database, seq: u64) -> Result<Option<u64>, StoreError> {
    let failed = |e: &dyn Display| unavailable("cannot read the history", e);
    let txn = db.begin_read().map_err(|e| failed(&e))?;
    let events = txn.open_table(EVENTS).map_err(|e| failed(&e))?;
    match events.get(seq).map_err(|e| failed(&e))? {
        Some(record) => Ok(Some(decode_key(seq, record.value())?.hub_tag())),
        None => Ok(None),
    }
}

fn load_seen(db: &Database, user: &str) -> Result<Option<Seen>, StoreError> {
    let failed = |e: &dyn Display| unavailable("cannot read the last-seen cursors", e);
    let txn = db.begin_read().map_err(|e| failed(&e))?;
    // No cursor was ever written: no table yet.
    let table = match txn.open_table(SEEN) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(failed(&e)),
    };
    let found = table.get(user).map_err(|e| failed(&e))?;
    Ok(found.map(|v| {
        let (seq, tag) = v.value();
        Seen { seq, tag }
    }))
}

fn lookup_id(db: &Database, id: &str) -> Result<Option<u64>, StoreError> {
    let failed = |e: &dyn Display| unavailable("cannot read the history", e);
    let txn = db.begin_read().map_err(|e| failed(&e))?;
    let ids = txn.open_table(IDS).map_err(|e| failed(&e))?;
    let seq = ids.get(id).map_err(|e| failed(&e))?.map(|s| s.value());
    Ok(seq)
}

/// What the tests of every part share: a fanout that checks it is handed
/// only stored events, and short ways to open a log and make drafts.
#[cfg(test)]
mod testing {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use pushwire_core::event::Target;

    use super::*;

    /// Records what the fanout saw and, once it knows the database, checks
    /// that every event it is handed can already be read back.
    #[derive(Default)]
    pub(super) struct Seen(
        pub(super) Mutex<Vec<u64>>,
        pub(super) std::sync::OnceLock<Arc<Database>>,
    );

    impl Fanout for Seen {
        fn deliver(&self, events: &[Arc<Event>]) {
            if let Some(db) = self.1.get() {
                for event in events {
                    let stored = read_page(db, event.seq - 1, 1).unwrap();
                    assert_eq!(stored.first().map(|e| e.seq), Some(event.seq), "not stored");
                }
            }
            self.0.lock().unwrap().extend(events.iter().map(|e| e.seq));
        }
    }

    pub(super) fn retention(max_events: usize) -> Retention {
        Retention {
            max_events,
            max_age: Duration::from_secs(3600),
        }
    }

    pub(super) fn open(dir: &Path, seen: &Arc<Seen>) -> EmbeddedLog {
        EmbeddedLog::open(dir, retention(1_000_000), Fsync::Always, seen.clone()).unwrap()
    }

    pub(super) fn draft(user: &str, data: &str) -> Draft {
        Draft::new(Target::user(user), data)
    }

    pub(super) fn with_id(id: &str) -> Draft {
        Draft {
            id: Some(id.to_owned()),
            ..draft("u", id)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::{Duration, Instant};

    use super::testing::{draft, open, retention, with_id, Seen};
    use super::*;

    #[tokio::test]
    async fn a_publisher_id_that_reads_as_a_number_resolves_to_its_own_event() {
        let dir = tempfile::tempdir().unwrap();
        let seen = Arc::new(Seen::default());
        let log = open(dir.path(), &seen);
        let mut ids = vec![String::new()];
        for i in 0..6 {
            let stored = log.append(vec![draft("u", &i.to_string())]).await.unwrap();
            ids.push(stored[0].id.to_string());
        }
        let plus = log.append(vec![with_id("+5")]).await.unwrap();
        assert_eq!(log.resolve("+5").await.unwrap(), Cursor::After(plus[0].seq));
        assert_eq!(log.resolve(&ids[5]).await.unwrap(), Cursor::After(5));
        assert_eq!(log.resolve("05").await.unwrap(), Cursor::Unknown);
    }

    /// Live subscribers, as the hub keeps them: each gets every delivered
    /// sequence number in its queue.
    #[derive(Default)]
    struct Subscribers(Mutex<Vec<Arc<Mutex<Vec<u64>>>>>);

    impl Fanout for Subscribers {
        fn deliver(&self, events: &[Arc<Event>]) {
            for queue in self.0.lock().unwrap().iter() {
                queue.lock().unwrap().extend(events.iter().map(|e| e.seq));
            }
        }
    }

    /// The hub's resume protocol against the engine alone: register for live
    /// delivery, replay from the cursor page by page, then take live events
    /// newer than the replay; disconnect after a few, resume, again. Replays
    /// start both inside and before the in-memory window.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn register_then_replay_joins_live_without_gap_or_duplicate() {
        const APPENDERS: u64 = 8;
        const EACH: u64 = 250;
        const TOTAL: u64 = APPENDERS * EACH;
        let dir = tempfile::tempdir().unwrap();
        let subscribers = Arc::new(Subscribers::default());
        let log = Arc::new(
            EmbeddedLog::open(
                dir.path(),
                retention(100_000),
                Fsync::Always,
                subscribers.clone(),
            )
            .unwrap(),
        );
        let mut readers = Vec::new();
        for r in 0..16u64 {
            let (log, subscribers) = (log.clone(), subscribers.clone());
            readers.push(tokio::spawn(async move {
                let mut seen: Vec<u64> = Vec::new();
                let mut round = r;
                let deadline = Instant::now() + Duration::from_secs(60);
                while seen.last() != Some(&TOTAL) {
                    assert!(Instant::now() < deadline, "reader {r} stalled at {seen:?}");
                    round += 1;
                    let queue = Arc::new(Mutex::new(Vec::new()));
                    subscribers.0.lock().unwrap().push(queue.clone());
                    let mut cursor = seen.last().copied().unwrap_or(0);
                    loop {
                        let page = log.read_after(cursor, 16).await.unwrap();
                        seen.extend(page.iter().map(|e| e.seq));
                        cursor = page.last().map_or(cursor, |e| e.seq);
                        if page.len() < 16 {
                            break;
                        }
                    }
                    // Live, for a while: every event newer than the replay.
                    for _ in 0..(round % 5) {
                        tokio::time::sleep(Duration::from_micros(300)).await;
                    }
                    let live = std::mem::take(&mut *queue.lock().unwrap());
                    seen.extend(live.into_iter().filter(|&seq| seq > cursor));
                    subscribers
                        .0
                        .lock()
                        .unwrap()
                        .retain(|q| !Arc::ptr_eq(q, &queue));
                    tokio::task::yield_now().await;
                }
                seen
            }));
        }
        let mut appenders = Vec::new();
        for a in 0..APPENDERS {
            let log = log.clone();
            appenders.push(tokio::spawn(async move {
                for i in 0..EACH {
                    log.append(vec![draft("u", &format!("{a}-{i}"))])
                        .await
                        .unwrap();
                }
            }));
        }
        for appender in appenders {
            appender.await.unwrap();
        }
        let expected: Vec<u64> = (1..=TOTAL).collect();
        for (r, reader) in readers.into_iter().enumerate() {
            let seen = reader.await.unwrap();
            assert!(
                seen == expected,
                "reader {r} saw {} events, not 1..={TOTAL} in order",
                seen.len()
            );
        }
    }

    #[tokio::test]
    async fn cursors_survive_a_clean_restart_and_only_move_forward() {
        use pushwire_core::seen::Seen as UserCursor;
        let dir = tempfile::tempdir().unwrap();
        let seen = Arc::new(Seen::default());
        let at = |seq| UserCursor { seq, tag: 9 };
        {
            let log = open(dir.path(), &seen);
            assert_eq!(log.load("u").await.unwrap(), None);
            log.store(vec![("u".into(), at(4))]).await.unwrap();
            log.store(vec![("u".into(), at(2)), ("v".into(), at(1))])
                .await
                .unwrap();
            assert_eq!(log.load("u").await.unwrap(), Some(at(4)));
        }
        let log = open(dir.path(), &seen);
        assert_eq!(log.load("u").await.unwrap(), Some(at(4)));
        assert_eq!(log.load("v").await.unwrap(), Some(at(1)));
    }
}
