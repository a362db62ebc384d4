//! A durable history in one embedded database file, `<data-dir>/events.redb`
//! (redb: a copy-on-write B-tree with ACID transactions; readers see a
//! snapshot and never block the writer).
//!
//! Write path (group commit): [`EmbeddedLog::append`] sends its drafts to
//! one writer thread and waits for the answer. The thread takes everything
//! that is queued (up to [`MAX_GROUP`] requests), writes it in one write
//! transaction, commits it with the durability `--fsync` asks for, and only
//! then hands the whole group to the fanout, in sequence order, and answers
//! each request. One fsync thus covers every publish that arrived while the
//! previous one was running. A request whose publisher-supplied id is
//! already taken is refused on its own; the others in the group go through.
//! Retention (`trim`) goes through the same thread, so there is only ever
//! one writer.
//!
//! Tables:
//! - `events`: sequence number → record (a format byte, then JSON with
//!   what is needed to rebuild the [`Event`]: supplied id, target, type,
//!   data, retry, time; the format of [`pushwire_core::record`], shared
//!   with the Redis engine);
//! - `ids`: publisher-supplied id → sequence number, for the retained events;
//! - `meta`: `next_seq` (kept even when retention has emptied `events`, so a
//!   sequence number is never issued twice), the record `format`, and with
//!   `--fsync interval` or `never` a `reserved_seq`: commits that are not
//!   forced to disk can be lost in a crash, so sequence numbers are reserved
//!   ahead in forced commits and a restart continues after the reservation.
//!
//! Reads (`read_after`, `resolve`) use read transactions; `last`, the
//! bounds of the retained range and the newest few thousand events (so that
//! a client back after a short absence is replayed from memory) come from a
//! small in-memory head that the writer updates after each commit, before
//! the fanout sees the events.
//!
//! Disk faults: when a write fails (a full disk, the file size limit, a file
//! or file system that turned read-only, an fsync error) nothing of the
//! group is stored and every request in it is refused: [`StoreError::Full`]
//! for no room, [`StoreError::Unavailable`] otherwise. redb then refuses
//! every operation on that handle, so the writer closes the file and opens
//! it again, which repairs it to its last commit (nothing acknowledged is
//! lost) and continues the sequence after every number it issued. It tries
//! at most once per [`REOPEN_EVERY`], on the next request or the next
//! retention pass; until it succeeds, publishes are refused at once with the
//! reason and reads that need the file fail as unavailable. Open streams are
//! not touched.

use std::collections::{HashSet, VecDeque};
use std::fmt::Display;
use std::io::ErrorKind;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_util::future::{self, BoxFuture, FutureExt};
use redb::{
    Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    StorageError, Table, TableDefinition,
};
use tokio::sync::oneshot;

use pushwire_core::event::{hub_sequence, Draft, Event};
use pushwire_core::log::{now_ms, Cursor, EventLog, Fanout, Fsync, Retention, StoreError};
use pushwire_core::record::{decode, decode_key, encode, FORMAT};

/// The file inside the data directory.
pub const FILE_NAME: &str = "events.redb";
/// Most requests one group commit takes.
pub const MAX_GROUP: usize = 4096;
/// Most events one commit removes for retention; the rest go in later ones,
/// so a large trim never holds up publishes for long.
const MAX_TRIM_PER_COMMIT: usize = 100_000;
/// Memory the database may use to cache pages.
const CACHE_BYTES: usize = 64 * 1024 * 1024;
/// The newest events kept decoded in memory, so that a client reconnecting
/// after a short absence is replayed without reading the file: at most this
/// many events, and at most [`RECENT_BYTES`] of encoded frames.
/// (Unit tests use a small window so that replays cross from disk to memory.)
const RECENT_EVENTS: usize = if cfg!(test) { 64 } else { 4096 };
const RECENT_BYTES: usize = 16 * 1024 * 1024;
/// After a write failure, how often the writer tries to open the file again
/// (each try verifies the whole file, so not on every refused publish).
pub const REOPEN_EVERY: Duration = Duration::from_secs(1);

const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const IDS: TableDefinition<&str, u64> = TableDefinition::new("ids");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_NEXT_SEQ: &str = "next_seq";
/// With `--fsync interval` or `never`: sequence numbers below this may have
/// been issued by commits a crash lost, so a restart continues from here.
const META_RESERVED: &str = "reserved_seq";
/// How many sequence numbers one forced commit reserves ahead.
const RESERVE: u64 = 100_000;
const META_FORMAT: &str = "format";

type AppendReply = oneshot::Sender<Result<Vec<Arc<Event>>, StoreError>>;
type TrimReply = oneshot::Sender<Result<usize, StoreError>>;

enum Command {
    Append {
        drafts: Vec<Draft>,
        reply: AppendReply,
    },
    Trim {
        now_ms: u64,
        reply: TrimReply,
    },
}

/// What readers need without a transaction; written by the writer thread
/// after each commit and before the fanout.
struct Head {
    next_seq: u64,
    /// The oldest retained sequence number (`next_seq` when none is).
    first_seq: u64,
    last: Option<Arc<Event>>,
    /// The newest events stored since the log was opened: consecutive
    /// sequence numbers ending at `next_seq - 1`.
    recent: VecDeque<Arc<Event>>,
    /// Bytes of the frames in `recent`.
    recent_bytes: usize,
}

impl Head {
    /// Up to `limit` events after `after`, if `recent` holds all of them.
    fn recent_after(&self, after: u64, limit: usize) -> Option<Vec<Arc<Event>>> {
        let oldest = self.recent.front()?.seq;
        let skip = usize::try_from(after.checked_add(1)?.checked_sub(oldest)?).ok()?;
        Some(self.recent.iter().skip(skip).take(limit).cloned().collect())
    }

    /// Records a committed group and what retention left.
    fn committed(&mut self, events: &[Arc<Event>], next_seq: u64, first_seq: u64, empty: bool) {
        self.next_seq = next_seq;
        self.first_seq = first_seq;
        for event in events {
            self.recent_bytes += event.frame().len();
            self.recent.push_back(event.clone());
        }
        while self.recent.len() > RECENT_EVENTS
            || self.recent_bytes > RECENT_BYTES
            || self.recent.front().is_some_and(|e| e.seq < first_seq)
        {
            match self.recent.pop_front() {
                Some(old) => self.recent_bytes -= old.frame().len(),
                None => break,
            }
        }
        if let Some(newest) = events.last() {
            self.last = Some(newest.clone());
        }
        if empty {
            self.last = None;
        }
    }

    /// After the file was opened again, what it holds is the truth. With
    /// `interval` or `never`, commits that had not reached the disk are gone
    /// from it, so they go from memory too (`recent` stays consecutive).
    fn reopened(&mut self, recovered: &Recovered, next_seq: u64) {
        let kept = recovered.last.as_ref().map(|e| e.seq);
        if self.last.as_ref().map(|e| e.seq) != kept {
            self.recent.clear();
            self.recent_bytes = 0;
            self.last = recovered.last.clone();
        }
        self.next_seq = next_seq;
        self.first_seq = if recovered.count == 0 {
            next_seq
        } else {
            recovered.first_seq
        };
    }
}

/// The open database, shared by readers and the writer.
///
/// redb refuses every operation on a handle once one of its writes failed;
/// the file must be closed and opened again. The writer does that
/// ([`Writer::reopen`]); meanwhile the slot is empty and reads that need the
/// file fail as unavailable rather than wait.
#[derive(Clone)]
struct DbSlot(Arc<Mutex<Option<Arc<Database>>>>);

impl DbSlot {
    fn new(db: Database) -> DbSlot {
        DbSlot(Arc::new(Mutex::new(Some(Arc::new(db)))))
    }

    fn lock(&self) -> MutexGuard<'_, Option<Arc<Database>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self) -> Result<Arc<Database>, StoreError> {
        self.lock().clone().ok_or_else(|| {
            StoreError::Unavailable(
                "the history file is being reopened after a write failure".to_owned(),
            )
        })
    }

    fn take(&self) -> Option<Arc<Database>> {
        self.lock().take()
    }

    fn put(&self, db: Database) {
        *self.lock() = Some(Arc::new(db));
    }
}

/// A durable [`EventLog`]; see the module documentation.
pub struct EmbeddedLog {
    path: PathBuf,
    db: DbSlot,
    head: Arc<Mutex<Head>>,
    commands: Option<Sender<Command>>,
    writer: Option<JoinHandle<()>>,
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
        let existing = match std::fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => return Err(refuse("it is a directory".to_owned())),
            Ok(meta) => meta.len() > 0,
            Err(e) if e.kind() == ErrorKind::NotFound => false,
            Err(e) => return Err(refuse(e.to_string())),
        };
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
        let recovered = recover(&db).map_err(|e| refuse(e.to_string()))?;
        catch_file_size_signal();
        tracing::info!(
            path = %path.display(),
            events = recovered.count,
            next_seq = recovered.next_seq,
            %fsync,
            "history opened"
        );
        let head = Arc::new(Mutex::new(Head {
            next_seq: recovered.next_seq,
            first_seq: recovered.first_seq,
            last: recovered.last,
            recent: VecDeque::new(),
            recent_bytes: 0,
        }));
        let db = DbSlot::new(db);
        let writer = Writer {
            db: db.clone(),
            head: head.clone(),
            fanout,
            retention,
            fsync,
            next_seq: recovered.next_seq,
            first_seq: recovered.first_seq,
            count: recovered.count,
            last_durable: Instant::now(),
            unsynced: false,
            reserved: 0,
            path: path.clone(),
            failure: None,
            retired: None,
        };
        let (commands, queue) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("pushwire-history".to_owned())
            .spawn(move || writer.run(queue))
            .map_err(|e| refuse(format!("cannot start the writer thread: {e}")))?;
        Ok(EmbeddedLog {
            path,
            db,
            head,
            commands: Some(commands),
            writer: Some(thread),
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

impl EventLog for EmbeddedLog {
    fn append(&self, drafts: Vec<Draft>) -> BoxFuture<'_, Result<Vec<Arc<Event>>, StoreError>> {
        let (reply, answer) = oneshot::channel();
        let sent = self.send(Command::Append { drafts, reply });
        async move {
            sent?;
            answer.await.map_err(|_| writer_stopped())?
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
        let cursor = match hub_sequence(id) {
            Some(seq) => {
                let head = self.head();
                // Valid while issued and not trimmed; the event right before
                // the oldest retained one is a valid point to resume from.
                if seq < head.next_seq && seq.saturating_add(1) >= head.first_seq {
                    Ok(Cursor::After(seq))
                } else {
                    Ok(Cursor::Unknown)
                }
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

fn lock(head: &Mutex<Head>) -> MutexGuard<'_, Head> {
    head.lock().unwrap_or_else(PoisonError::into_inner)
}

fn writer_stopped() -> StoreError {
    StoreError::Unavailable("the history writer has stopped".to_owned())
}

fn unavailable(what: &str, error: impl Display) -> StoreError {
    StoreError::Unavailable(format!("{what}: {error}"))
}

/// A failed database operation as the caller should hear it: no room (a
/// full disk or quota, the file size limit) is [`StoreError::Full`], the
/// rest is unavailable. Either way nothing of the request was stored.
fn disk_error(path: &Path, what: &str, error: redb::Error) -> StoreError {
    let file = path.display();
    let kind = match &error {
        redb::Error::Io(e) => Some(e.kind()),
        _ => None,
    };
    match kind {
        Some(ErrorKind::StorageFull | ErrorKind::QuotaExceeded | ErrorKind::FileTooLarge) => {
            StoreError::Full(format!(
                "{what} {file}: no room left on its disk, or the file reached the process's \
                 file size limit ({error}); nothing of this request was stored, and publishing \
                 resumes by itself once there is room"
            ))
        }
        Some(ErrorKind::ReadOnlyFilesystem | ErrorKind::PermissionDenied) => {
            StoreError::Unavailable(format!(
                "{what} {file}: the file or its file system is not writable ({error}); nothing \
                 of this request was stored, and publishing resumes by itself once it is \
                 writable again"
            ))
        }
        _ => StoreError::Unavailable(format!(
            "{what} {file}: {error}; nothing of this request was stored"
        )),
    }
}

/// Opens the history file with the engine's settings. `open` never
/// initialises anything: a file that is there and is not a database stays as
/// it is; only a missing or empty file is created. A panic of the engine
/// (a file damaged in a way it does not expect) is caught and returned.
fn open_file(path: &Path, existing: bool) -> std::thread::Result<Result<Database, DatabaseError>> {
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

/// A write beyond the process's file size limit (`RLIMIT_FSIZE`, systemd's
/// `LimitFSIZE=`) raises SIGXFSZ, whose default action kills the process.
/// With the signal caught, the write fails with EFBIG instead and the writer
/// handles it like a full disk. tokio keeps a handler it installed for the
/// life of the process, so the stream it returns need not be kept.
fn catch_file_size_signal() {
    #[cfg(unix)]
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        use tokio::signal::unix::{signal, SignalKind};
        let _entered = runtime.enter();
        if let Err(error) = signal(SignalKind::from_raw(libc::SIGXFSZ)) {
            tracing::warn!(
                %error,
                "cannot catch SIGXFSZ: a write beyond the file size limit would stop the hub"
            );
        }
    }
}

fn describe_open_error(error: DatabaseError) -> String {
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

fn lookup_id(db: &Database, id: &str) -> Result<Option<u64>, StoreError> {
    let failed = |e: &dyn Display| unavailable("cannot read the history", e);
    let txn = db.begin_read().map_err(|e| failed(&e))?;
    let ids = txn.open_table(IDS).map_err(|e| failed(&e))?;
    let seq = ids.get(id).map_err(|e| failed(&e))?.map(|s| s.value());
    Ok(seq)
}

struct Recovered {
    next_seq: u64,
    first_seq: u64,
    count: u64,
    last: Option<Arc<Event>>,
}

/// Why the history could not be read back at open.
#[derive(Debug, thiserror::Error)]
enum RecoverError {
    #[error("{0}")]
    Storage(redb::Error),
    #[error("the history is in format {0}, written by another version of pushwire")]
    Format(u64),
    #[error("{0}")]
    Record(StoreError),
}

fn storage(error: impl Into<redb::Error>) -> RecoverError {
    RecoverError::Storage(error.into())
}

/// Creates the tables if needed and reads back where the history stands.
fn recover(db: &Database) -> Result<Recovered, RecoverError> {
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
        meta.insert(META_NEXT_SEQ, next_seq).map_err(storage)?;
        Recovered {
            next_seq,
            first_seq,
            count,
            last,
        }
    };
    txn.commit().map_err(storage)?;
    Ok(recovered)
}

/// One queued request, split into the work and where its answer goes.
enum Job {
    Append(Vec<Draft>),
    Trim(u64),
}

enum Reply {
    Append(AppendReply),
    Trim(TrimReply),
}

/// A committed group.
struct Written {
    /// Every event stored, in sequence order.
    events: Vec<Arc<Event>>,
    /// One entry per request, in request order.
    done: Vec<Done>,
    /// The durability the commit had.
    durability: Durability,
}

/// What became of one request of a committed group.
enum Done {
    Appended(Range<usize>),
    Refused(StoreError),
    Trimmed(usize),
}

/// The single writer: owns every write transaction.
struct Writer {
    db: DbSlot,
    head: Arc<Mutex<Head>>,
    fanout: Arc<dyn Fanout>,
    retention: Retention,
    fsync: Fsync,
    next_seq: u64,
    first_seq: u64,
    /// Events retained.
    count: u64,
    last_durable: Instant,
    /// Commits were made that are not yet forced to disk.
    unsynced: bool,
    /// Sequence numbers below this are reserved on disk (0: none are).
    reserved: u64,
    path: PathBuf,
    /// The last write failure, while the file has not been opened again.
    failure: Option<Failure>,
    /// A failed handle taken out of the slot that a read still held when
    /// the writer wanted to close it.
    retired: Option<Arc<Database>>,
}

/// A write failed and the file is not yet open again.
struct Failure {
    /// What requests are refused with until it is.
    error: StoreError,
    /// When the failure happened or the file was last tried.
    at: Instant,
}

/// Logs if the writer thread dies of a panic: publishing then fails with
/// "the history writer has stopped" until the hub is restarted.
struct PanicAlarm;

impl Drop for PanicAlarm {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!("the history writer thread panicked; publishes will fail");
        }
    }
}

impl Writer {
    fn run(mut self, queue: Receiver<Command>) {
        let _alarm = PanicAlarm;
        while let Some(first) = self.next_command(&queue) {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match queue.try_recv() {
                    Ok(command) => group.push(command),
                    Err(_) => break,
                }
            }
            self.commit_group(group);
        }
        // The log was dropped: a clean stop. Force what is not yet on disk
        // and give back the reserved sequence numbers (a failed handle has
        // nothing to force: the file keeps its last commit).
        if self.failure.is_none() && (self.unsynced || self.reserved != 0) {
            self.reserved = 0;
            self.sync();
        }
    }

    /// Waits for the next request; with `interval`, forces pending commits
    /// to disk when their time is up.
    fn next_command(&mut self, queue: &Receiver<Command>) -> Option<Command> {
        loop {
            let Fsync::Interval(every) = self.fsync else {
                return queue.recv().ok();
            };
            if !self.unsynced {
                return queue.recv().ok();
            }
            let due = self.last_durable + every;
            let wait = due.saturating_duration_since(Instant::now());
            match queue.recv_timeout(wait) {
                Ok(command) => return Some(command),
                Err(RecvTimeoutError::Timeout) => self.sync(),
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// A durable commit that makes every earlier commit durable too. With
    /// `reserved` at 0 it also drops the reservation (at a clean stop).
    fn sync(&mut self) {
        if self.failure.is_some() {
            return;
        }
        let synced = (|| -> Result<(), redb::Error> {
            let db = match self.db.get() {
                Ok(db) => db,
                Err(_) => return Err(redb::Error::DatabaseClosed),
            };
            let mut txn = db.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            {
                let mut meta = txn.open_table(META)?;
                meta.insert(META_NEXT_SEQ, self.next_seq)?;
                if self.reserved == 0 {
                    meta.remove(META_RESERVED)?;
                }
            }
            txn.commit()?;
            Ok(())
        })();
        // Either way, wait a full interval before the next try.
        self.last_durable = Instant::now();
        match synced {
            Ok(()) => self.unsynced = false,
            Err(error) => {
                let error = disk_error(&self.path, "cannot force to disk", error);
                tracing::error!(%error, "history sync failed; the file will be opened again");
                self.failed(error);
            }
        }
    }

    /// Records a write failure: the handle is unusable from now on, so
    /// commits it has not forced to disk can no longer be (and the interval
    /// timer must not keep trying).
    fn failed(&mut self, error: StoreError) {
        self.unsynced = false;
        self.failure = Some(Failure {
            error,
            at: Instant::now(),
        });
    }

    /// Ok when the database can take a write. After a failure, the file is
    /// opened again, at most once per [`REOPEN_EVERY`]; until it opens,
    /// every request is refused at once with the reason.
    fn usable(&mut self) -> Result<(), StoreError> {
        let Some(failure) = &self.failure else {
            return Ok(());
        };
        if failure.at.elapsed() < REOPEN_EVERY {
            return Err(failure.error.clone());
        }
        match self.reopen() {
            Ok(()) => {
                self.failure = None;
                tracing::warn!(
                    path = %self.path.display(),
                    next_seq = self.next_seq,
                    "history file opened again after a write failure; publishing resumes"
                );
                Ok(())
            }
            Err(error) => {
                tracing::warn!(%error, "the history file cannot be opened again yet");
                self.failed(error.clone());
                Err(error)
            }
        }
    }

    /// Closes the failed handle and opens the file again: redb repairs it to
    /// its last commit, so nothing acknowledged is lost, and the sequence
    /// continues after every number issued so far (the file's, or the
    /// writer's if that is higher), so no id is ever given out twice.
    fn reopen(&mut self) -> Result<(), StoreError> {
        if let Some(db) = self.db.take() {
            self.retired = Some(db);
        }
        if let Some(old) = self.retired.take() {
            match Arc::try_unwrap(old) {
                // The handle is failed: closing it can only repeat that.
                Ok(db) => drop(db.close()),
                Err(shared) => {
                    self.retired = Some(shared);
                    return Err(StoreError::Unavailable(
                        "the history file is being reopened after a write failure".to_owned(),
                    ));
                }
            }
        }
        let db = match open_file(&self.path, true) {
            Ok(Ok(db)) => db,
            Ok(Err(e)) => return Err(disk_error(&self.path, "cannot reopen", e.into())),
            Err(_) => {
                return Err(StoreError::Unavailable(format!(
                    "cannot reopen {}: the database engine failed reading it",
                    self.path.display()
                )))
            }
        };
        let recovered = recover(&db).map_err(|e| match e {
            RecoverError::Storage(e) => disk_error(&self.path, "cannot reopen", e),
            other => {
                StoreError::Unavailable(format!("cannot reopen {}: {other}", self.path.display()))
            }
        })?;
        self.next_seq = self.next_seq.max(recovered.next_seq);
        self.count = recovered.count;
        self.reserved = 0;
        self.unsynced = false;
        self.last_durable = Instant::now();
        let mut head = lock(&self.head);
        head.reopened(&recovered, self.next_seq);
        self.first_seq = head.first_seq;
        drop(head);
        self.db.put(db);
        Ok(())
    }

    fn durability(&self) -> Durability {
        match self.fsync {
            Fsync::Always => Durability::Immediate,
            Fsync::Never => Durability::None,
            Fsync::Interval(every) if self.last_durable.elapsed() >= every => Durability::Immediate,
            Fsync::Interval(_) => Durability::None,
        }
    }

    fn commit_group(&mut self, group: Vec<Command>) {
        let (jobs, replies): (Vec<Job>, Vec<Reply>) = group
            .into_iter()
            .map(|command| match command {
                Command::Append { drafts, reply } => (Job::Append(drafts), Reply::Append(reply)),
                Command::Trim { now_ms, reply } => (Job::Trim(now_ms), Reply::Trim(reply)),
            })
            .unzip();
        if let Err(error) = self.usable() {
            refuse(replies, &error);
            return;
        }
        let before = (self.next_seq, self.first_seq, self.count, self.reserved);
        let Written {
            events,
            done,
            durability,
        } = match self.write(jobs, self.durability()) {
            Ok(written) => written,
            Err(error) => {
                // Nothing of the group is stored: its sequence numbers were
                // never issued and are given out again.
                (self.next_seq, self.first_seq, self.count, self.reserved) = before;
                tracing::error!(%error, "history write failed; the file will be opened again");
                refuse(replies, &error);
                // redb refuses every later operation on this handle.
                self.failed(error);
                return;
            }
        };
        if matches!(durability, Durability::Immediate) {
            self.last_durable = Instant::now();
            self.unsynced = false;
        } else {
            self.unsynced = true;
        }
        lock(&self.head).committed(&events, self.next_seq, self.first_seq, self.count == 0);
        // Stored: now the streams may see it, in sequence order.
        if !events.is_empty() {
            self.fanout.deliver(&events);
        }
        for (reply, done) in replies.into_iter().zip(done) {
            match (reply, done) {
                (Reply::Append(r), Done::Appended(range)) => {
                    drop(r.send(Ok(events[range].to_vec())));
                }
                (Reply::Append(r), Done::Refused(error)) => drop(r.send(Err(error))),
                (Reply::Trim(r), Done::Trimmed(gone)) => drop(r.send(Ok(gone))),
                (Reply::Append(r), Done::Trimmed(_)) => drop(r.send(Err(writer_stopped()))),
                (Reply::Trim(r), _) => drop(r.send(Err(writer_stopped()))),
            }
        }
    }

    /// Writes a group in one transaction and commits it. On error nothing
    /// of the group is stored.
    fn write(&mut self, jobs: Vec<Job>, mut durability: Durability) -> Result<Written, StoreError> {
        let path = self.path.clone();
        let failed = |e: redb::Error| disk_error(&path, "cannot write", e);
        let db = self.db.get()?;
        let mut txn = db.begin_write().map_err(|e| failed(e.into()))?;
        let mut events = Vec::new();
        let mut done = Vec::with_capacity(jobs.len());
        {
            let mut table = txn.open_table(EVENTS).map_err(|e| failed(e.into()))?;
            let mut ids = txn.open_table(IDS).map_err(|e| failed(e.into()))?;
            for job in jobs {
                match job {
                    Job::Append(drafts) => {
                        if let Some(taken) = taken_id(&ids, &drafts)? {
                            done.push(Done::Refused(StoreError::DuplicateId(taken)));
                            continue;
                        }
                        let start = events.len();
                        let time = now_ms();
                        for draft in drafts {
                            let seq = self.next_seq;
                            self.next_seq = seq.checked_add(1).ok_or_else(|| {
                                StoreError::Unavailable("sequence numbers exhausted".to_owned())
                            })?;
                            let supplied_id = draft.id.is_some();
                            let event = Event::new(seq, draft, time);
                            let record = encode(&event, supplied_id)?;
                            table
                                .insert(seq, record.as_slice())
                                .map_err(|e| failed(e.into()))?;
                            if supplied_id {
                                ids.insert(&*event.id, seq).map_err(|e| failed(e.into()))?;
                            }
                            self.count += 1;
                            events.push(Arc::new(event));
                        }
                        done.push(Done::Appended(start..events.len()));
                    }
                    Job::Trim(now_ms) => {
                        let mut gone = self.trim_count(&mut table, &mut ids)?;
                        let cutoff = now_ms.saturating_sub(
                            u64::try_from(self.retention.max_age.as_millis()).unwrap_or(u64::MAX),
                        );
                        gone += self.trim_older(&mut table, &mut ids, cutoff)?;
                        done.push(Done::Trimmed(gone));
                    }
                }
            }
            // Beyond `max_events`, the oldest go in the same commit.
            self.trim_count(&mut table, &mut ids)?;
            let mut meta = txn.open_table(META).map_err(|e| failed(e.into()))?;
            meta.insert(META_NEXT_SEQ, self.next_seq)
                .map_err(|e| failed(e.into()))?;
            // Without `always`, this commit's `next_seq` may be lost in a
            // crash after its ids were acknowledged: before issuing numbers
            // beyond the reservation, reserve more in a forced commit.
            if !matches!(self.fsync, Fsync::Always) && self.next_seq > self.reserved {
                self.reserved = self.next_seq.saturating_add(RESERVE);
                meta.insert(META_RESERVED, self.reserved)
                    .map_err(|e| failed(e.into()))?;
                durability = Durability::Immediate;
            }
            self.first_seq = table
                .first()
                .map_err(|e| failed(e.into()))?
                .map_or(self.next_seq, |(seq, _)| seq.value());
        }
        txn.set_durability(durability)
            .map_err(|e| failed(e.into()))?;
        txn.commit().map_err(|e| failed(e.into()))?;
        Ok(Written {
            events,
            done,
            durability,
        })
    }

    /// Drops the oldest events beyond `max_events`.
    fn trim_count(
        &mut self,
        table: &mut Table<'_, u64, &'static [u8]>,
        ids: &mut Table<'_, &'static str, u64>,
    ) -> Result<usize, StoreError> {
        let max = u64::try_from(self.retention.max_events).unwrap_or(u64::MAX);
        let excess = self.count.saturating_sub(max);
        let excess = usize::try_from(excess)
            .unwrap_or(usize::MAX)
            .min(MAX_TRIM_PER_COMMIT);
        let mut gone = 0;
        while gone < excess && self.pop_oldest(table, ids, None)? {
            gone += 1;
        }
        Ok(gone)
    }

    /// Drops events stored before `cutoff` (milliseconds since the epoch).
    fn trim_older(
        &mut self,
        table: &mut Table<'_, u64, &'static [u8]>,
        ids: &mut Table<'_, &'static str, u64>,
        cutoff: u64,
    ) -> Result<usize, StoreError> {
        let mut gone = 0;
        while gone < MAX_TRIM_PER_COMMIT && self.pop_oldest(table, ids, Some(cutoff))? {
            gone += 1;
        }
        Ok(gone)
    }

    /// Removes the oldest event (if it is older than `cutoff`, when given)
    /// and its id entry; false when there was nothing to remove.
    fn pop_oldest(
        &mut self,
        table: &mut Table<'_, u64, &'static [u8]>,
        ids: &mut Table<'_, &'static str, u64>,
        cutoff: Option<u64>,
    ) -> Result<bool, StoreError> {
        let failed = |e: StorageError| disk_error(&self.path, "cannot trim", e.into());
        let (seq, key) = match table.first().map_err(failed)? {
            Some((seq, record)) => {
                let seq = seq.value();
                (seq, decode_key(seq, record.value())?)
            }
            None => return Ok(false),
        };
        if cutoff.is_some_and(|cutoff| key.time >= cutoff) {
            return Ok(false);
        }
        table.remove(seq).map_err(failed)?;
        if let Some(id) = &key.id {
            ids.remove(id.as_str()).map_err(failed)?;
        }
        self.count = self.count.saturating_sub(1);
        Ok(true)
    }
}

/// Answers every request of a group that was not stored.
fn refuse(replies: Vec<Reply>, error: &StoreError) {
    for reply in replies {
        match reply {
            Reply::Append(r) => drop(r.send(Err(error.clone()))),
            Reply::Trim(r) => drop(r.send(Err(error.clone()))),
        }
    }
}

/// The first publisher-supplied id of `drafts` that is already in the
/// history or appears twice in the batch.
fn taken_id(
    ids: &Table<'_, &'static str, u64>,
    drafts: &[Draft],
) -> Result<Option<String>, StoreError> {
    let mut seen = HashSet::new();
    for id in drafts.iter().filter_map(|d| d.id.as_deref()) {
        let stored = ids
            .get(id)
            .map_err(|e| unavailable("cannot read the history", e))?
            .is_some();
        if stored || !seen.insert(id) {
            return Ok(Some(id.to_owned()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use pushwire_core::event::Target;

    use super::*;

    /// Records what the fanout saw and, once it knows the database, checks
    /// that every event it is handed can already be read back.
    #[derive(Default)]
    struct Seen(Mutex<Vec<u64>>, std::sync::OnceLock<Arc<Database>>);

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

    fn retention(max_events: usize) -> Retention {
        Retention {
            max_events,
            max_age: Duration::from_secs(3600),
        }
    }

    fn open(dir: &Path, seen: &Arc<Seen>) -> EmbeddedLog {
        EmbeddedLog::open(dir, retention(1_000_000), Fsync::Always, seen.clone()).unwrap()
    }

    fn draft(user: &str, data: &str) -> Draft {
        Draft::new(Target::user(user), data)
    }

    fn with_id(id: &str) -> Draft {
        Draft {
            id: Some(id.to_owned()),
            ..draft("u", id)
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_appends_are_grouped_and_keep_sequence_order() {
        let dir = tempfile::tempdir().unwrap();
        let seen = Arc::new(Seen::default());
        let log = Arc::new(open(dir.path(), &seen));
        seen.1.set(log.db.get().unwrap()).unwrap();
        let mut tasks = Vec::new();
        for t in 0..32 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                for i in 0..25 {
                    let batch = vec![draft("a", &format!("{t}-{i}")), draft("b", "x")];
                    let events = log.append(batch).await.unwrap();
                    assert_eq!(events.len(), 2);
                    assert_eq!(events[1].seq, events[0].seq + 1, "a batch is contiguous");
                    mine.push(events[0].seq);
                }
                mine
            }));
        }
        for task in tasks {
            let mine = task.await.unwrap();
            assert!(
                mine.windows(2).all(|w| w[0] < w[1]),
                "one task's appends go in order"
            );
        }
        let delivered = seen.0.lock().unwrap().clone();
        assert_eq!(delivered, (1..=1600).collect::<Vec<u64>>());
        let stored = log.read_after(0, 5000).await.unwrap();
        let seqs: Vec<u64> = stored.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, delivered);
        assert_eq!(log.last().await.unwrap().unwrap().seq, 1600);
    }

    #[tokio::test]
    async fn a_duplicate_id_refuses_only_its_own_request_in_a_group() {
        let dir = tempfile::tempdir().unwrap();
        let seen = Arc::new(Seen::default());
        let log = open(dir.path(), &seen);
        log.append(vec![with_id("taken")]).await.unwrap();
        // Drive the writer directly so that all four requests are one group.
        let mut writer = Writer {
            db: log.db.clone(),
            head: log.head.clone(),
            fanout: seen.clone(),
            retention: retention(1_000_000),
            fsync: Fsync::Always,
            next_seq: 2,
            first_seq: 1,
            count: 1,
            last_durable: Instant::now(),
            unsynced: false,
            reserved: 0,
            path: log.path.clone(),
            failure: None,
            retired: None,
        };
        let mut answers = Vec::new();
        let mut group = Vec::new();
        for drafts in [
            vec![draft("u", "first")],
            vec![draft("u", "refused"), with_id("taken")],
            vec![with_id("new"), with_id("new")],
            vec![with_id("fresh"), draft("u", "last")],
        ] {
            let (reply, answer) = oneshot::channel();
            group.push(Command::Append { drafts, reply });
            answers.push(answer);
        }
        writer.commit_group(group);
        let mut results = Vec::new();
        for answer in answers {
            results.push(answer.await.unwrap());
        }
        let ids = |r: &Result<Vec<Arc<Event>>, StoreError>| -> Vec<String> {
            r.as_ref()
                .unwrap()
                .iter()
                .map(|e| e.id.to_string())
                .collect()
        };
        assert_eq!(ids(&results[0]), ["2"]);
        assert!(matches!(&results[1], Err(StoreError::DuplicateId(id)) if id == "taken"));
        assert!(matches!(&results[2], Err(StoreError::DuplicateId(id)) if id == "new"));
        assert_eq!(ids(&results[3]), ["fresh", "4"]);
        assert_eq!(*seen.0.lock().unwrap(), [1, 2, 3, 4]);
        let stored: Vec<String> = log
            .read_after(0, 100)
            .await
            .unwrap()
            .iter()
            .map(|e| e.data.clone())
            .collect();
        assert_eq!(stored, ["taken", "first", "fresh", "last"]);
        assert_eq!(log.resolve("new").await.unwrap(), Cursor::Unknown);
        assert_eq!(log.resolve("fresh").await.unwrap(), Cursor::After(3));
    }

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
            log.append(vec![draft, Draft::new(Target::All, "two")])
                .await
                .unwrap();
        }
        let log = open(dir.path(), &seen);
        let stored = log.read_after(0, 10).await.unwrap();
        assert_eq!(stored.len(), 2);
        assert_eq!(stored[0].frame(), original.frame());
        assert_eq!(stored[0].target, original.target);
        assert_eq!(&*stored[1].id, "2");
        assert_eq!(log.last().await.unwrap().unwrap().seq, 2);
        assert_eq!(log.resolve("order-1").await.unwrap(), Cursor::After(1));
        assert_eq!(log.resolve("2").await.unwrap(), Cursor::After(2));
        assert_eq!(log.resolve("3").await.unwrap(), Cursor::Unknown);
        let more = log.append(vec![draft("u", "three")]).await.unwrap();
        assert_eq!(more[0].seq, 3);
        let refused = log.append(vec![with_id("order-1")]).await;
        assert!(matches!(refused, Err(StoreError::DuplicateId(_))));
    }

    #[tokio::test]
    async fn retention_keeps_sequences_and_resolves_like_memory() {
        let dir = tempfile::tempdir().unwrap();
        let seen = Arc::new(Seen::default());
        {
            let log =
                EmbeddedLog::open(dir.path(), retention(3), Fsync::Always, seen.clone()).unwrap();
            log.append(vec![with_id("old")]).await.unwrap();
            for i in 0..5 {
                log.append(vec![draft("u", &i.to_string())]).await.unwrap();
            }
            // Events 1..=3 are gone; 3 is the predecessor of the oldest kept.
            assert_eq!(log.resolve("old").await.unwrap(), Cursor::Unknown);
            assert_eq!(log.resolve("2").await.unwrap(), Cursor::Unknown);
            assert_eq!(log.resolve("3").await.unwrap(), Cursor::After(3));
            assert_eq!(log.resolve("6").await.unwrap(), Cursor::After(6));
            assert_eq!(log.resolve("7").await.unwrap(), Cursor::Unknown);
            let kept: Vec<u64> = log
                .read_after(0, 10)
                .await
                .unwrap()
                .iter()
                .map(|e| e.seq)
                .collect();
            assert_eq!(kept, [4, 5, 6]);
            // The id of a trimmed event may be used again.
            log.append(vec![with_id("old")]).await.unwrap();
            // Age: everything is older than "an hour from now".
            let gone = log.trim(now_ms() + 2 * 3_600_000).await.unwrap();
            assert_eq!(gone, 3);
            assert!(log.last().await.unwrap().is_none());
            assert!(log.read_after(0, 10).await.unwrap().is_empty());
            assert_eq!(log.resolve("7").await.unwrap(), Cursor::After(7));
        }
        let log = open(dir.path(), &seen);
        let next = log.append(vec![draft("u", "after")]).await.unwrap();
        assert_eq!(next[0].seq, 8, "sequence numbers are never reused");
    }

    #[tokio::test]
    async fn a_publisher_id_that_reads_as_a_number_resolves_to_its_own_event() {
        let dir = tempfile::tempdir().unwrap();
        let seen = Arc::new(Seen::default());
        let log = open(dir.path(), &seen);
        for i in 0..6 {
            log.append(vec![draft("u", &i.to_string())]).await.unwrap();
        }
        let plus = log.append(vec![with_id("+5")]).await.unwrap();
        assert_eq!(log.resolve("+5").await.unwrap(), Cursor::After(plus[0].seq));
        assert_eq!(log.resolve("5").await.unwrap(), Cursor::After(5));
        assert_eq!(log.resolve("05").await.unwrap(), Cursor::Unknown);
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

    #[tokio::test]
    async fn reads_from_memory_and_from_disk_agree() {
        let dir = tempfile::tempdir().unwrap();
        let seen = Arc::new(Seen::default());
        let log =
            EmbeddedLog::open(dir.path(), retention(4500), Fsync::Always, seen.clone()).unwrap();
        for b in 0..715 {
            let batch = (0..7).map(|i| draft("u", &format!("{b}-{i}"))).collect();
            log.append(batch).await.unwrap();
        }
        // 5005 stored, 4500 retained (506..=5005), the newest in memory.
        assert_eq!(lock(&log.head).recent.len(), RECENT_EVENTS);
        let oldest_in_memory = 5006 - RECENT_EVENTS as u64;
        let edge = oldest_in_memory - 1;
        for after in [0, 505, 506, edge - 2, edge - 1, edge, edge + 1, 5004, 5005] {
            for limit in [1, 100, 1024] {
                let served = log.read_after(after, limit).await.unwrap();
                let from_disk = read_page(&log.db.get().unwrap(), after, limit).unwrap();
                assert_eq!(served, from_disk, "after {after}, limit {limit}");
            }
        }
        let all = log.read_after(0, 10_000).await.unwrap();
        assert_eq!(all.first().map(|e| e.seq), Some(506));
        assert_eq!(all.len(), 4500);
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

    #[tokio::test]
    async fn interval_and_never_modes_keep_data_across_a_clean_close() {
        for fsync in [Fsync::Interval(Duration::from_millis(20)), Fsync::Never] {
            let dir = tempfile::tempdir().unwrap();
            let seen = Arc::new(Seen::default());
            {
                let log =
                    EmbeddedLog::open(dir.path(), retention(100), fsync, seen.clone()).unwrap();
                for i in 0..10 {
                    log.append(vec![draft("u", &i.to_string())]).await.unwrap();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                log.append(vec![draft("u", "late")]).await.unwrap();
            }
            let log = open(dir.path(), &seen);
            assert_eq!(log.read_after(0, 100).await.unwrap().len(), 11, "{fsync}");
        }
    }
}
