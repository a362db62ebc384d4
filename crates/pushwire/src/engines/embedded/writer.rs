//! The single writer thread: it owns every write transaction.
//!
//! Write path (group commit): [`EmbeddedLog::append`](super::EmbeddedLog::append)
//! sends its drafts to one writer thread and waits for the answer. The
//! thread takes everything that is queued (up to [`MAX_GROUP`] requests),
//! writes it in one write transaction, commits it with the durability
//! `--fsync` asks for, and only then hands the whole group to the fanout,
//! in sequence order, and answers each request. One fsync thus covers every
//! publish that arrived while the previous one was running. A request whose
//! publisher-supplied id is already taken is refused on its own; the others
//! in the group go through. Retention (`trim`) goes through the same thread,
//! so there is only ever one writer.
//!
//! Durability: with `--fsync always` every group is on disk before it is
//! acknowledged: its records are written to the journal (`journal.rs`) and
//! forced with one `fdatasync` (on the journal's thread, while this one
//! inserts them into the B-tree) before the transaction is committed
//! without being forced, and checkpoints (a forced commit, which lets the journal
//! start again) come every [`CHECKPOINT_BYTES`] of journal, when the writer
//! is idle at least [`CHECKPOINT_EVERY`] after the last, and at a clean
//! stop. With `interval` commits are forced at least that often, and with
//! `never` only at a clean stop. Without `always`, before
//! issuing sequence numbers beyond the reservation in `meta`, the writer
//! reserves more in a forced commit, so a crash never lets a number be
//! issued twice. When the log is dropped the writer finishes what is
//! queued, forces it to disk and gives the reservation back.
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

use std::collections::HashSet;
use std::io::ErrorKind;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, Table};
use tokio::sync::oneshot;

use pushwire_core::event::{Draft, Event};
use pushwire_core::log::{now_ms, Fanout, Fsync, Retention, StoreError};
use pushwire_core::metrics::PublishStages;
use pushwire_core::record::encode;
use pushwire_core::seen::{Seen, MAX_CURSORS};

use super::head::{lock, Head};
use super::journal::{Journal, CHECKPOINT_BYTES, CHECKPOINT_EVERY};
use super::recovery::{open_file, recover, recover_journal, RecoverError, Recovered};
use super::{
    unavailable, writer_stopped, EVENTS, IDS, META, META_BOUNDARY_TAG, META_JOURNAL_EPOCH,
    META_NEXT_SEQ, META_RESERVED, SEEN,
};

/// Most requests one group commit takes.
pub const MAX_GROUP: usize = 4096;
/// After a write failure, how often the writer tries to open the file again
/// (each try verifies the whole file, so not on every refused publish).
pub const REOPEN_EVERY: Duration = Duration::from_secs(1);
/// How many sequence numbers one forced commit reserves ahead.
const RESERVE: u64 = 100_000;
/// Groups of at least this many events write their journal frame on the
/// journal's thread while their transaction goes on (`journal.rs`).
const OVERLAP_FROM: usize = 2;

/// The events stored, and when the group that holds them was.
type AppendReply = oneshot::Sender<Result<(Vec<Arc<Event>>, Instant), StoreError>>;
type TrimReply = oneshot::Sender<Result<usize, StoreError>>;
type SeenReply = oneshot::Sender<Result<(), StoreError>>;

/// A request to the writer thread, with where its answer goes.
pub(super) enum Command {
    Append {
        drafts: Vec<Draft>,
        reply: AppendReply,
        /// When it was handed to the writer.
        at: Instant,
    },
    Trim {
        now_ms: u64,
        reply: TrimReply,
    },
    /// Users' last-seen cursors, written in a commit of their own after
    /// the group's (see [`Writer::store_seen`]).
    Seen {
        batch: Vec<(Arc<str>, Seen)>,
        reply: SeenReply,
    },
}

/// The open database, shared by readers and the writer.
///
/// redb refuses every operation on a handle once one of its writes failed;
/// the file must be closed and opened again. The writer does that
/// ([`Writer::reopen`]); meanwhile the slot is empty and reads that need the
/// file fail as unavailable rather than wait.
#[derive(Clone)]
pub(super) struct DbSlot(Arc<Mutex<Option<Arc<Database>>>>);

impl DbSlot {
    pub(super) fn new(db: Database) -> DbSlot {
        DbSlot(Arc::new(Mutex::new(Some(Arc::new(db)))))
    }

    fn lock(&self) -> MutexGuard<'_, Option<Arc<Database>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn get(&self) -> Result<Arc<Database>, StoreError> {
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

/// The outcome of the writer's last commit, shared with readiness: the
/// error while the last write failed, nothing once a commit succeeds. The
/// retention pass commits every second, so this follows the disk by itself
/// even when nobody publishes.
#[derive(Clone, Default)]
pub(super) struct Health(Arc<Mutex<Option<StoreError>>>);

impl Health {
    fn lock(&self) -> MutexGuard<'_, Option<StoreError>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ok unless the last write failed; then its error.
    pub(super) fn check(&self) -> Result<(), StoreError> {
        self.lock().clone().map_or(Ok(()), Err)
    }
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
pub(super) struct Writer {
    db: DbSlot,
    head: Arc<Mutex<Head>>,
    fanout: Arc<dyn Fanout>,
    pub(super) retention: Retention,
    fsync: Fsync,
    next_seq: u64,
    first_seq: u64,
    /// The tag of the newest event retention removed.
    pub(super) boundary_tag: u64,
    /// Events retained.
    pub(super) count: u64,
    last_durable: Instant,
    /// Commits were made that are not yet forced to disk.
    unsynced: bool,
    /// Sequence numbers below this are reserved on disk (0: none are).
    reserved: u64,
    pub(super) path: PathBuf,
    /// The last write failure, while the file has not been opened again.
    failure: Option<Failure>,
    /// A failed handle taken out of the slot that a read still held when
    /// the writer wanted to close it.
    retired: Option<Arc<Database>>,
    /// What readiness reports.
    health: Health,
    /// With `--fsync always`: where groups are made durable (`journal.rs`);
    /// the file's commits are then not forced, but for checkpoints.
    journal: Option<Journal>,
    /// Where the time of each group goes (`pushwire_publish_stage_seconds`).
    stages: PublishStages,
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
    /// The writer of a history just opened, with nothing reserved and
    /// nothing failed.
    pub(super) fn new(
        db: DbSlot,
        head: Arc<Mutex<Head>>,
        fanout: Arc<dyn Fanout>,
        retention: Retention,
        fsync: Fsync,
        recovered: &Recovered,
        path: PathBuf,
    ) -> Writer {
        Writer {
            db,
            head,
            fanout,
            retention,
            fsync,
            next_seq: recovered.next_seq,
            first_seq: recovered.first_seq,
            boundary_tag: recovered.boundary_tag,
            count: recovered.count,
            last_durable: Instant::now(),
            unsynced: false,
            reserved: 0,
            path,
            failure: None,
            retired: None,
            health: Health::default(),
            journal: None,
            stages: PublishStages::default(),
        }
    }

    /// Observes the stages of each group into `stages`.
    pub(super) fn with_stages(mut self, stages: PublishStages) -> Writer {
        self.stages = stages;
        self
    }

    /// With `--fsync always`: groups are made durable in `journal`.
    pub(super) fn with_journal(mut self, journal: Option<Journal>) -> Writer {
        self.journal = journal;
        self
    }

    /// What readiness reads: the outcome of this writer's last commit.
    pub(super) fn health(&self) -> Health {
        self.health.clone()
    }

    pub(super) fn run(mut self, queue: Receiver<Command>) {
        let _alarm = PanicAlarm;
        while let Some(first) = self.next_command(&queue) {
            // A fanout far behind holds the next group back (and with it
            // the publishers) rather than let its queue grow.
            self.fanout.wait_for_room();
            let mut group = Vec::new();
            let mut cursors = Vec::new();
            let mut next = Some(first);
            while let Some(command) = next {
                match command {
                    Command::Seen { batch, reply } => cursors.push((batch, reply)),
                    command => group.push(command),
                }
                next = if group.len() < MAX_GROUP {
                    queue.try_recv().ok()
                } else {
                    None
                };
            }
            if !group.is_empty() {
                self.commit_group(group);
            }
            if self
                .journal
                .as_ref()
                .is_some_and(|j| j.len() >= CHECKPOINT_BYTES)
            {
                self.sync();
            }
            // After the group is answered: cursors never hold a publish up.
            for (batch, reply) in cursors {
                drop(reply.send(self.store_seen(batch)));
            }
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
    /// to disk when their time is up, and with the journal checkpoints when
    /// its time is up and nothing is queued.
    fn next_command(&mut self, queue: &Receiver<Command>) -> Option<Command> {
        loop {
            let every = match self.fsync {
                Fsync::Interval(every) => every,
                _ if self.journal.is_some() => CHECKPOINT_EVERY,
                _ => return queue.recv().ok(),
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
                if let Some(journal) = &self.journal {
                    meta.insert(META_JOURNAL_EPOCH, journal.epoch().saturating_add(1))?;
                }
            }
            txn.commit()?;
            Ok(())
        })();
        // Either way, wait a full interval before the next try.
        self.last_durable = Instant::now();
        match synced {
            Ok(()) => {
                self.unsynced = false;
                // A checkpoint: the journal's frames are in the file now.
                if let Some(journal) = &mut self.journal {
                    journal.restart(journal.epoch().saturating_add(1));
                }
            }
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
        *self.health.lock() = Some(error.clone());
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
        let reopen_error = |e| match e {
            RecoverError::Storage(e) => disk_error(&self.path, "cannot reopen", e),
            other => {
                StoreError::Unavailable(format!("cannot reopen {}: {other}", self.path.display()))
            }
        };
        let mut recovered = recover(&db).map_err(reopen_error)?;
        // The file is back at its last forced commit, or at its last commit
        // if closing the old handle could still write that: the journal's
        // acknowledged frames bring it up to date either way.
        if let Some(journal) = &mut self.journal {
            let end = journal.len();
            recovered =
                recover_journal(&db, journal, recovered, Some(end)).map_err(reopen_error)?;
        }
        self.next_seq = self.next_seq.max(recovered.next_seq);
        self.count = recovered.count;
        self.boundary_tag = recovered.boundary_tag;
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
        if self.journal.is_some() {
            // The journal makes the group durable before the commit.
            return Durability::None;
        }
        match self.fsync {
            Fsync::Always => Durability::Immediate,
            Fsync::Never => Durability::None,
            Fsync::Interval(every) if self.last_durable.elapsed() >= every => Durability::Immediate,
            Fsync::Interval(_) => Durability::None,
        }
    }

    fn commit_group(&mut self, group: Vec<Command>) {
        let started = Instant::now();
        let mut jobs = Vec::with_capacity(group.len());
        let mut replies = Vec::with_capacity(group.len());
        for command in group {
            match command {
                Command::Append { drafts, reply, at } => {
                    let queued = started.saturating_duration_since(at);
                    self.stages.queue.observe(queued.as_secs_f64());
                    jobs.push(Job::Append(drafts));
                    replies.push(Reply::Append(reply));
                }
                Command::Trim { now_ms, reply } => {
                    jobs.push(Job::Trim(now_ms));
                    replies.push(Reply::Trim(reply));
                }
                // `run` writes cursors after the group, not in it.
                Command::Seen { batch, reply } => drop(reply.send(self.store_seen(batch))),
            }
        }
        if let Err(error) = self.usable() {
            refuse(replies, &error);
            return;
        }
        let before = (
            self.next_seq,
            self.first_seq,
            self.count,
            self.reserved,
            self.boundary_tag,
        );
        let Written {
            events,
            done,
            durability,
        } = match self.write(jobs, self.durability()) {
            Ok(written) => written,
            Err(error) => {
                // Nothing of the group is stored: its sequence numbers were
                // never issued and are given out again.
                (
                    self.next_seq,
                    self.first_seq,
                    self.count,
                    self.reserved,
                    self.boundary_tag,
                ) = before;
                tracing::error!(%error, "history write failed; the file will be opened again");
                refuse(replies, &error);
                // redb refuses every later operation on this handle.
                self.failed(error);
                return;
            }
        };
        let stored = Instant::now();
        let appends = replies
            .iter()
            .filter(|r| matches!(r, Reply::Append(_)))
            .count();
        if appends > 0 {
            self.stages
                .write
                .observe(stored.duration_since(started).as_secs_f64());
            self.stages.group_requests.observe(appends as f64);
        }
        *self.health.lock() = None;
        if matches!(durability, Durability::Immediate) {
            self.last_durable = Instant::now();
            self.unsynced = false;
        } else {
            self.unsynced = true;
        }
        lock(&self.head).committed(
            &events,
            self.next_seq,
            self.first_seq,
            self.boundary_tag,
            self.count == 0,
        );
        // Stored: now the streams may see it, in sequence order.
        if !events.is_empty() {
            self.fanout.deliver(&events);
        }
        for (reply, done) in replies.into_iter().zip(done) {
            match (reply, done) {
                (Reply::Append(r), Done::Appended(range)) => {
                    drop(r.send(Ok((events[range].to_vec(), stored))));
                }
                (Reply::Append(r), Done::Refused(error)) => drop(r.send(Err(error))),
                (Reply::Trim(r), Done::Trimmed(gone)) => drop(r.send(Ok(gone))),
                (Reply::Append(r), Done::Trimmed(_)) => drop(r.send(Err(writer_stopped()))),
                (Reply::Trim(r), _) => drop(r.send(Err(writer_stopped()))),
            }
        }
    }

    /// Advances users' cursors (each keeps the greater sequence) in a
    /// commit of its own that is not forced to disk: the next durable
    /// commit (a publish with `--fsync always`, the interval, a clean stop)
    /// carries it. A crash before that loses the advance, which only shows
    /// a few events again. Past [`MAX_CURSORS`], cursors older than the
    /// retained history are dropped.
    fn store_seen(&mut self, batch: Vec<(Arc<str>, Seen)>) -> Result<(), StoreError> {
        self.usable()?;
        let path = self.path.clone();
        let failed = |e: redb::Error| disk_error(&path, "cannot write", e);
        let written = (|| -> Result<(), StoreError> {
            let db = self.db.get()?;
            let mut txn = db.begin_write().map_err(|e| failed(e.into()))?;
            {
                let mut table = txn.open_table(SEEN).map_err(|e| failed(e.into()))?;
                for (user, seen) in &batch {
                    let kept = table
                        .get(&**user)
                        .map_err(|e| failed(e.into()))?
                        .map(|v| v.value().0);
                    if kept.is_none_or(|seq| seen.seq > seq) {
                        table
                            .insert(&**user, (seen.seq, seen.tag))
                            .map_err(|e| failed(e.into()))?;
                    }
                }
                if table.len().map_err(|e| failed(e.into()))? > MAX_CURSORS as u64 {
                    let first = self.first_seq;
                    table
                        .retain(|_, (seq, _)| seq.saturating_add(1) >= first)
                        .map_err(|e| failed(e.into()))?;
                }
            }
            txn.set_durability(Durability::None)
                .map_err(|e| failed(e.into()))?;
            txn.commit().map_err(|e| failed(e.into()))?;
            Ok(())
        })();
        match &written {
            Ok(()) => self.unsynced = true,
            Err(error) => {
                tracing::error!(%error, "cursor write failed; the file will be opened again");
                self.failed(error.clone());
            }
        }
        written
    }

    /// Writes a group in one transaction and commits it. On error nothing
    /// of the group is stored.
    fn write(&mut self, jobs: Vec<Job>, mut durability: Durability) -> Result<Written, StoreError> {
        let db = self.db.get()?;
        let mut txn = db
            .begin_write()
            .map_err(|e| disk_error(&self.path, "cannot write", e.into()))?;
        let mut staged = Staged::default();
        let mut done = Vec::with_capacity(jobs.len());
        let filled = self.fill(&txn, jobs, &mut staged, &mut done, &mut durability);
        // With the journal, the group is durable once its frame is: written
        // and forced before the commit, so that a refused group is in
        // neither (an aborted transaction leaves the file as it was). A
        // group too small to hand its frame over writes it here.
        if let (false, Some(journal), Ok(()), Some(first)) = (
            staged.journaled,
            &mut self.journal,
            &filled,
            staged.events.first(),
        ) {
            match journal.write(first.seq, &staged.records) {
                Ok(took) => {
                    self.stages.sync.observe(took.as_secs_f64());
                    staged.journaled = true;
                }
                Err(e) => {
                    journal.discard();
                    return Err(io_error(journal.path(), "cannot write", e));
                }
            }
        } else if let (true, Some(journal)) = (staged.journaled, &mut self.journal) {
            let synced = journal.finish();
            if filled.is_err() || synced.is_err() {
                // The frame may be on disk whole although the sync failed.
                journal.discard();
            }
            match synced {
                Ok(took) => self.stages.sync.observe(took.as_secs_f64()),
                Err(e) => {
                    filled?;
                    return Err(io_error(journal.path(), "cannot write", e));
                }
            }
        }
        filled?;
        let journaled = staged.journaled;
        let failed = |e: redb::Error| disk_error(&self.path, "cannot write", e);
        let committed = txn
            .set_durability(durability)
            .map_err(redb::Error::from)
            .and_then(|()| txn.commit().map_err(redb::Error::from));
        if let Err(e) = committed {
            if let (true, Some(journal)) = (journaled, &mut self.journal) {
                journal.discard();
            }
            return Err(failed(e));
        }
        if let (true, Some(journal)) = (journaled, &mut self.journal) {
            journal.keep();
        }
        Ok(Written {
            events: staged.events,
            done,
            durability,
        })
    }

    /// Fills `txn` with the group's jobs. Appends are checked and encoded
    /// first and inserted after: with the journal, their frame is begun
    /// in between, so that its write and sync overlap the B-tree's inserts
    /// (`staged.journaled` then says the writer must finish it).
    fn fill(
        &mut self,
        txn: &redb::WriteTransaction,
        jobs: Vec<Job>,
        staged: &mut Staged,
        done: &mut Vec<Done>,
        durability: &mut Durability,
    ) -> Result<(), StoreError> {
        let path = self.path.clone();
        let failed = |e: redb::Error| disk_error(&path, "cannot write", e);
        let boundary_before = self.boundary_tag;
        let mut table = txn.open_table(EVENTS).map_err(|e| failed(e.into()))?;
        let mut ids = txn.open_table(IDS).map_err(|e| failed(e.into()))?;
        for job in jobs {
            match job {
                Job::Append(drafts) => {
                    if let Some(taken) = taken_id(&ids, &staged.ids, &drafts)? {
                        done.push(Done::Refused(StoreError::DuplicateId(taken)));
                        continue;
                    }
                    let start = staged.events.len();
                    let time = now_ms();
                    for draft in drafts {
                        let seq = self.next_seq;
                        self.next_seq = seq.checked_add(1).ok_or_else(|| {
                            StoreError::Unavailable("sequence numbers exhausted".to_owned())
                        })?;
                        let supplied_id = draft.id.is_some();
                        let event = Event::new(seq, draft, time);
                        staged.records.push(encode(&event, supplied_id)?);
                        if supplied_id {
                            staged.ids.insert(event.id.clone());
                        }
                        staged.supplied.push(supplied_id);
                        self.count += 1;
                        staged.events.push(Arc::new(event));
                    }
                    done.push(Done::Appended(start..staged.events.len()));
                }
                Job::Trim(now_ms) => {
                    // Retention sees the appends before it.
                    staged.insert(&mut table, &mut ids, &path)?;
                    let gone = self.trim(&mut table, &mut ids, now_ms)?;
                    done.push(Done::Trimmed(gone));
                }
            }
        }
        if let (Some(journal), Some(first)) = (&mut self.journal, staged.events.first()) {
            if staged.events.len() >= OVERLAP_FROM {
                if let Err(e) = journal.begin(first.seq, &staged.records) {
                    journal.discard();
                    return Err(io_error(journal.path(), "cannot write", e));
                }
                staged.journaled = true;
            }
        }
        staged.insert(&mut table, &mut ids, &path)?;
        // Beyond `max_events`, the oldest go in the same commit.
        self.trim_count(&mut table, &mut ids)?;
        let mut meta = txn.open_table(META).map_err(|e| failed(e.into()))?;
        meta.insert(META_NEXT_SEQ, self.next_seq)
            .map_err(|e| failed(e.into()))?;
        if self.boundary_tag != boundary_before {
            meta.insert(META_BOUNDARY_TAG, self.boundary_tag)
                .map_err(|e| failed(e.into()))?;
        }
        // Without `always`, this commit's `next_seq` may be lost in a
        // crash after its ids were acknowledged: before issuing numbers
        // beyond the reservation, reserve more in a forced commit.
        if !matches!(self.fsync, Fsync::Always) && self.next_seq > self.reserved {
            self.reserved = self.next_seq.saturating_add(RESERVE);
            meta.insert(META_RESERVED, self.reserved)
                .map_err(|e| failed(e.into()))?;
            *durability = Durability::Immediate;
        }
        self.first_seq = table
            .first()
            .map_err(|e| failed(e.into()))?
            .map_or(self.next_seq, |(seq, _)| seq.value());
        Ok(())
    }
}

/// A group's events on their way into the tables.
#[derive(Default)]
struct Staged {
    /// Every event of the group, in sequence order.
    events: Vec<Arc<Event>>,
    /// Their records, in the same order.
    records: Vec<Vec<u8>>,
    /// Whether each has a publisher's id.
    supplied: Vec<bool>,
    /// The publishers' ids not yet in the ids table.
    ids: HashSet<Arc<str>>,
    /// How many of `events` are in the tables.
    inserted: usize,
    /// Their journal frame was begun.
    journaled: bool,
}

impl Staged {
    /// Inserts the events not yet in the tables.
    fn insert(
        &mut self,
        table: &mut Table<'_, u64, &'static [u8]>,
        ids: &mut Table<'_, &'static str, u64>,
        path: &Path,
    ) -> Result<(), StoreError> {
        let failed = |e: redb::Error| disk_error(path, "cannot write", e);
        let from = self.inserted;
        for ((event, record), &supplied) in self.events[from..]
            .iter()
            .zip(&self.records[from..])
            .zip(&self.supplied[from..])
        {
            table
                .insert(event.seq, record.as_slice())
                .map_err(|e| failed(e.into()))?;
            if supplied {
                ids.insert(&*event.id, event.seq)
                    .map_err(|e| failed(e.into()))?;
            }
        }
        self.inserted = self.events.len();
        self.ids.clear();
        Ok(())
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
/// history, earlier in the group (`staged`) or twice in the batch.
fn taken_id(
    ids: &Table<'_, &'static str, u64>,
    staged: &HashSet<Arc<str>>,
    drafts: &[Draft],
) -> Result<Option<String>, StoreError> {
    let mut seen = HashSet::new();
    for id in drafts.iter().filter_map(|d| d.id.as_deref()) {
        let stored = staged.contains(id)
            || ids
                .get(id)
                .map_err(|e| unavailable("cannot read the history", e))?
                .is_some();
        if stored || !seen.insert(id) {
            return Ok(Some(id.to_owned()));
        }
    }
    Ok(None)
}

/// A failed database operation as the caller should hear it: no room (a
/// full disk or quota, the file size limit) is [`StoreError::Full`], the
/// rest is unavailable. Either way nothing of the request was stored.
pub(super) fn disk_error(path: &Path, what: &str, error: redb::Error) -> StoreError {
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

/// A failed write of the journal, as [`disk_error`] reports the file's.
fn io_error(path: &Path, what: &str, error: std::io::Error) -> StoreError {
    disk_error(path, what, redb::Error::Io(error))
}

/// A write beyond the process's file size limit (`RLIMIT_FSIZE`, systemd's
/// `LimitFSIZE=`) raises SIGXFSZ, whose default action kills the process.
/// With the signal caught, the write fails with EFBIG instead and the writer
/// handles it like a full disk. tokio keeps a handler it installed for the
/// life of the process, so the stream it returns need not be kept.
pub(super) fn catch_file_size_signal() {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use pushwire_core::log::{Cursor, EventLog};

    use crate::engines::embedded::EmbeddedLog;

    use pushwire_core::event::hub_sequence;

    use super::*;
    use crate::engines::embedded::testing::{draft, open, retention, with_id, Seen};

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
            boundary_tag: 0,
            count: 1,
            last_durable: Instant::now(),
            unsynced: false,
            reserved: 0,
            path: log.path.clone(),
            failure: None,
            retired: None,
            health: Health::default(),
            journal: None,
            stages: PublishStages::default(),
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
            group.push(Command::Append {
                drafts,
                reply,
                at: Instant::now(),
            });
            answers.push(answer);
        }
        writer.commit_group(group);
        let mut results = Vec::new();
        for answer in answers {
            results.push(answer.await.unwrap().map(|(events, _)| events));
        }
        let ids = |r: &Result<Vec<Arc<Event>>, StoreError>| -> Vec<String> {
            r.as_ref()
                .unwrap()
                .iter()
                .map(|e| match hub_sequence(&e.id) {
                    Some(seq) => format!("#{seq}"),
                    None => e.id.to_string(),
                })
                .collect()
        };
        assert_eq!(ids(&results[0]), ["#2"]);
        assert!(matches!(&results[1], Err(StoreError::DuplicateId(id)) if id == "taken"));
        assert!(matches!(&results[2], Err(StoreError::DuplicateId(id)) if id == "new"));
        assert_eq!(ids(&results[3]), ["fresh", "#4"]);
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
