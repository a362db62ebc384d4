//! The journal: an append-only file, `<data-dir>/events.journal`, that makes
//! a group of events durable with one write and one `fdatasync`, so that
//! with `--fsync always` a publish is acknowledged without forcing the
//! B-tree file to disk.
//!
//! Why: a forced redb commit writes its pages and syncs them (most of a
//! lone publisher's round trip, about three times the sync alone; see
//! docs/performance.md), while an unforced one writes nothing. So with `always` the
//! writer commits each group to `events.redb` unforced, writes the group's
//! records to this journal and forces the journal, and only then answers
//! (see `writer.rs`). Every so often (a checkpoint: when the journal holds
//! [`CHECKPOINT_BYTES`], after [`CHECKPOINT_EVERY`] when the writer is idle,
//! at a clean stop) a forced commit of `events.redb` makes everything
//! durable there, and the journal starts again from its beginning.
//!
//! Layout: frames, one per group, each starting at a multiple of 8 bytes.
//! A frame is a header of [`HEADER`] bytes (magic, record count, payload
//! length, epoch, first sequence number, CRC-32 of the header and payload)
//! and the payload: each record (the format of `pushwire_core::record`, as
//! stored in `events.redb`) prefixed by its length. The records of a frame
//! have consecutive sequence numbers from its first.
//!
//! Epochs: each checkpoint increments the `journal_epoch` kept in
//! `events.redb`'s `meta` table, in the same forced commit. Frames carry the
//! epoch they were written in, so frames left over from before the last
//! checkpoint (the file is reused from its start) are recognised as stale
//! without erasing them.
//!
//! Recovery (at open, and when the writer reopens the file after a disk
//! fault): the frames of the current epoch are read from the start while
//! they are whole and consecutive, and their events that `events.redb`
//! lacks are written into it in one forced commit that also starts a new
//! epoch. The first frame that is not whole is where the last write was
//! torn by a crash: it was never acknowledged, and it is ignored. A whole
//! frame of the current epoch anywhere after it, or frames that skip or
//! repeat sequence numbers, mean the file is damaged where acknowledged
//! events were: the hub refuses to start, naming the file, rather than
//! skip them.
//!
//! Space: the file is grown ahead of writes in steps of [`EXTENT`]
//! (`posix_fallocate`), so most syncs do not also write the file's size,
//! and no room on the disk shows as a refused publish, never as a torn
//! record.
//!
//! Overlap: the frame of a group of several events is written and forced
//! on a thread of the journal's own ([`Journal::begin`]) while the writer
//! goes on with the group's B-tree transaction; the writer waits for it
//! ([`Journal::finish`]) before it commits, so a group is still answered
//! only once both are done. A group of one event is written on the
//! writer's thread ([`Journal::write`]): handing it over costs more than
//! its transaction.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The file inside the data directory.
pub const FILE_NAME: &str = "events.journal";
/// The journal is checkpointed once it holds this many bytes.
pub(super) const CHECKPOINT_BYTES: u64 = 16 * 1024 * 1024;
/// A journal that is not empty is checkpointed after this long, at the
/// first moment the writer has nothing queued.
pub(super) const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);
/// The file grows ahead of writes by at least this much at a time.
const EXTENT: u64 = 4 * 1024 * 1024;
/// Frame header: magic (4), record count (4), payload length (8), epoch
/// (8), first sequence number (8), CRC-32 (4), zero (4).
pub(super) const HEADER: usize = 40;
const MAGIC: u32 = u32::from_le_bytes(*b"PWJ1");
const ALIGN: usize = 8;

/// The open journal of the writer thread.
pub(super) struct Journal {
    file: File,
    path: PathBuf,
    /// Where the next frame goes; every frame before it is on disk.
    pos: u64,
    /// Bytes of the file allocated so far.
    allocated: u64,
    /// The epoch frames are written in now.
    epoch: u64,
    /// The frame being written, kept for its allocation (away on the
    /// syncer's thread while one is in flight).
    frame: Vec<u8>,
    /// The length of the frame last begun.
    frame_len: u64,
    /// The thread that writes and forces frames, started with the first.
    syncer: Option<Syncer>,
    /// A frame was begun and not yet finished.
    in_flight: bool,
}

/// A frame to write at an offset, and the thread's answer: the frame back
/// (for its allocation), the outcome and how long the write and the sync
/// took.
type SyncRequest = (Vec<u8>, u64);
type SyncDone = (Vec<u8>, io::Result<()>, Duration);

/// The journal's thread: writes each frame it is given and forces it.
struct Syncer {
    requests: Option<SyncSender<SyncRequest>>,
    done: Receiver<SyncDone>,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    fn start(file: File) -> io::Result<Syncer> {
        let (requests, queue) = mpsc::sync_channel::<SyncRequest>(1);
        let (answer, done) = mpsc::sync_channel::<SyncDone>(1);
        let thread = std::thread::Builder::new()
            .name("pushwire-journal".to_owned())
            .spawn(move || {
                for (frame, at) in queue {
                    let started = Instant::now();
                    let result = file
                        .write_all_at(&frame, at)
                        .and_then(|()| file.sync_data());
                    if answer.send((frame, result, started.elapsed())).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Syncer {
            requests: Some(requests),
            done,
            thread: Some(thread),
        })
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        // Closing the queue ends the thread's loop.
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn syncer_stopped() -> io::Error {
    io::Error::other("the journal's write thread has stopped")
}

/// What reading the journal found.
pub(super) struct Found {
    /// The events of the current epoch's whole frames: (sequence, record).
    pub(super) records: Vec<(u64, Vec<u8>)>,
    /// Where those frames end.
    pub(super) end: u64,
}

/// Why a journal cannot be trusted.
#[derive(Debug, thiserror::Error)]
pub(super) enum JournalError {
    #[error("cannot read it: {0}")]
    Io(#[from] io::Error),
    #[error("it is damaged at byte {at}: {what}")]
    Damaged { at: u64, what: String },
}

impl Journal {
    /// Opens the journal at `path`, creating it if `create`; `None` when it
    /// is missing and not to be created.
    pub(super) fn open(path: &Path, create: bool) -> io::Result<Option<Journal>> {
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !create => return Ok(None),
            Err(e) => return Err(e),
        };
        let allocated = file.metadata()?.len();
        Ok(Some(Journal {
            file,
            path: path.to_owned(),
            pos: 0,
            allocated,
            epoch: 0,
            frame: Vec::new(),
            frame_len: 0,
            syncer: None,
            in_flight: false,
        }))
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Bytes of frames written since the last checkpoint.
    pub(super) fn len(&self) -> u64 {
        self.pos
    }

    /// After a checkpoint that started `epoch`: frames go from the start of
    /// the file again. A file grown far beyond the usual size (one huge
    /// group) is given back.
    pub(super) fn restart(&mut self, epoch: u64) {
        self.epoch = epoch;
        self.pos = 0;
        if self.allocated > CHECKPOINT_BYTES + 4 * EXTENT && self.file.set_len(0).is_ok() {
            self.allocated = 0;
        }
    }

    /// Reads the frames of `epoch`; events before `next_seq` are already in
    /// the history and are left out. With `end` (the writer knows where its
    /// last acknowledged frame ends) everything up to it must be whole and
    /// nothing after it is looked at; without it, the first frame that is
    /// not whole ends the journal, and no whole frame of `epoch` may follow.
    pub(super) fn read(
        &self,
        epoch: u64,
        next_seq: u64,
        end: Option<u64>,
    ) -> Result<Found, JournalError> {
        let size = self.file.metadata()?.len();
        let upto = end.unwrap_or(size).min(size);
        let mut data = vec![0; usize::try_from(size).unwrap_or(usize::MAX)];
        self.file.read_exact_at(&mut data, 0)?;
        scan(
            &data,
            epoch,
            next_seq,
            usize::try_from(upto).unwrap_or(usize::MAX),
            end.is_some(),
        )
    }

    /// Writes one frame with `records` (sequence numbers from `first`) at
    /// the end of the journal and forces it to disk, on this thread: how
    /// long the write and the sync took. The journal does not count it
    /// until [`Journal::keep`]; [`Journal::discard`] unmakes it as far as
    /// it can.
    pub(super) fn write(&mut self, first: u64, records: &[Vec<u8>]) -> io::Result<Duration> {
        self.prepare(first, records)?;
        let started = Instant::now();
        self.file.write_all_at(&self.frame, self.pos)?;
        self.file.sync_data()?;
        Ok(started.elapsed())
    }

    /// [`Journal::write`] on the journal's thread: returns while the frame
    /// is written and forced; [`Journal::finish`] waits for it.
    pub(super) fn begin(&mut self, first: u64, records: &[Vec<u8>]) -> io::Result<()> {
        self.prepare(first, records)?;
        if self.syncer.is_none() {
            self.syncer = Some(Syncer::start(self.file.try_clone()?)?);
        }
        let requests = self.syncer.as_ref().and_then(|s| s.requests.as_ref());
        let frame = std::mem::take(&mut self.frame);
        match requests.map(|r| r.send((frame, self.pos))) {
            Some(Ok(())) => {
                self.in_flight = true;
                Ok(())
            }
            _ => {
                self.syncer = None;
                Err(syncer_stopped())
            }
        }
    }

    /// Encodes the frame and makes room for it.
    fn prepare(&mut self, first: u64, records: &[Vec<u8>]) -> io::Result<()> {
        self.finish()?;
        encode_frame(&mut self.frame, self.epoch, first, records);
        self.frame_len = self.frame.len() as u64;
        let end = self.pos + self.frame_len;
        if end > self.allocated {
            let grow = (end - self.allocated).max(EXTENT);
            allocate(&self.file, self.allocated, grow)?;
            self.allocated += grow;
        }
        Ok(())
    }

    /// Waits for the frame [`Journal::begin`] started: how long its write
    /// and sync took, or why they failed. Ok at once when none is in flight.
    pub(super) fn finish(&mut self) -> io::Result<Duration> {
        if !self.in_flight {
            return Ok(Duration::ZERO);
        }
        self.in_flight = false;
        let answer = self.syncer.as_ref().map(|s| s.done.recv());
        match answer {
            Some(Ok((frame, result, took))) => {
                self.frame = frame;
                result.map(|()| took)
            }
            _ => {
                self.syncer = None;
                Err(syncer_stopped())
            }
        }
    }

    /// The frame just written counts: the next goes after it.
    pub(super) fn keep(&mut self) {
        self.pos += self.frame_len;
    }

    /// The frame just written must not count (its group was refused): its
    /// header is erased, as far as the disk lets, so that a crash before the
    /// next frame overwrites it cannot bring the group back.
    pub(super) fn discard(&mut self) {
        // Not while the frame may still be on its way to the disk.
        let _ = self.finish();
        let zeros = [0u8; HEADER];
        if self.file.write_all_at(&zeros, self.pos).is_ok() {
            let _ = self.file.sync_data();
        }
    }
}

/// Allocates `len` bytes from `offset`; on a file system that cannot
/// preallocate, the file is only made longer.
fn allocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), offset, len) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::OPNOTSUPP) => file.set_len(offset.saturating_add(len)),
        Err(errno) => Err(io::Error::from(errno)),
    }
}

/// Encodes one frame into `out` (cleared first), padded to [`ALIGN`].
fn encode_frame(out: &mut Vec<u8>, epoch: u64, first: u64, records: &[Vec<u8>]) {
    out.clear();
    out.resize(HEADER, 0);
    for record in records {
        out.extend_from_slice(&(record.len() as u32).to_le_bytes());
        out.extend_from_slice(record);
    }
    let payload = (out.len() - HEADER) as u64;
    out.resize(out.len().next_multiple_of(ALIGN), 0);
    out[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    out[4..8].copy_from_slice(&(records.len() as u32).to_le_bytes());
    out[8..16].copy_from_slice(&payload.to_le_bytes());
    out[16..24].copy_from_slice(&epoch.to_le_bytes());
    out[24..32].copy_from_slice(&first.to_le_bytes());
    let crc = checksum(&out[..32], &out[HEADER..HEADER + payload as usize]);
    out[32..36].copy_from_slice(&crc.to_le_bytes());
}

fn checksum(header: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(header);
    hasher.update(payload);
    hasher.finalize()
}

/// A whole frame found at some offset.
struct Frame<'a> {
    epoch: u64,
    first: u64,
    count: u32,
    payload: &'a [u8],
    /// Where the next frame may start.
    next: usize,
}

fn le_u32(bytes: &[u8]) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(bytes);
    u32::from_le_bytes(word)
}

fn le_u64(bytes: &[u8]) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(bytes);
    u64::from_le_bytes(word)
}

/// The frame at `at` if one is there whole within `data[..upto]` (its
/// checksum matches).
fn frame_at(data: &[u8], at: usize, upto: usize) -> Option<Frame<'_>> {
    let header = data.get(at..at.checked_add(HEADER)?)?;
    if at + HEADER > upto || le_u32(&header[0..4]) != MAGIC || header[36..40] != [0; 4] {
        return None;
    }
    let payload_len = usize::try_from(le_u64(&header[8..16])).ok()?;
    let payload_end = (at + HEADER).checked_add(payload_len)?;
    if payload_end > upto {
        return None;
    }
    let payload = &data[at + HEADER..payload_end];
    if checksum(&header[..32], payload) != le_u32(&header[32..36]) {
        return None;
    }
    Some(Frame {
        count: le_u32(&header[4..8]),
        epoch: le_u64(&header[16..24]),
        first: le_u64(&header[24..32]),
        payload,
        next: payload_end.next_multiple_of(ALIGN),
    })
}

/// See [`Journal::read`]; `data` is the whole file.
fn scan(
    data: &[u8],
    epoch: u64,
    next_seq: u64,
    upto: usize,
    known_end: bool,
) -> Result<Found, JournalError> {
    let damaged = |at: usize, what: String| JournalError::Damaged {
        at: at as u64,
        what,
    };
    let mut records = Vec::new();
    let mut at = 0;
    // The sequence number the next frame must start at (none yet).
    let mut expected: Option<u64> = None;
    while let Some(frame) = frame_at(data, at, upto).filter(|f| f.epoch == epoch) {
        match expected {
            Some(seq) if frame.first != seq => {
                return Err(damaged(
                    at,
                    format!(
                        "a frame starts at event {} where event {seq} was expected",
                        frame.first
                    ),
                ))
            }
            None if frame.first > next_seq => {
                return Err(damaged(
                    at,
                    format!(
                        "it starts at event {} but the history ends before event {next_seq}: \
                         the events between are missing",
                        frame.first
                    ),
                ))
            }
            _ => {}
        }
        let mut rest = frame.payload;
        for i in 0..u64::from(frame.count) {
            let (len, tail) = match rest.split_first_chunk::<4>() {
                Some((len, tail)) => (u32::from_le_bytes(*len) as usize, tail),
                None => return Err(damaged(at, "a frame's records are cut short".to_owned())),
            };
            let Some((record, tail)) = tail.split_at_checked(len) else {
                return Err(damaged(at, "a frame's records are cut short".to_owned()));
            };
            let seq = frame.first + i;
            if seq >= next_seq {
                records.push((seq, record.to_vec()));
            }
            rest = tail;
        }
        if !rest.is_empty() {
            return Err(damaged(
                at,
                "a frame holds more than its records".to_owned(),
            ));
        }
        expected = Some(frame.first + u64::from(frame.count));
        at = frame.next;
    }
    if known_end {
        if at < upto {
            return Err(damaged(
                at,
                "a frame that was acknowledged is no longer whole".to_owned(),
            ));
        }
    } else {
        // The end of the journal, or a write a crash tore: nothing of this
        // epoch may follow it.
        let mut probe = at + ALIGN;
        while probe + HEADER <= data.len() {
            if frame_at(data, probe, data.len()).is_some_and(|f| f.epoch == epoch) {
                return Err(damaged(
                    at,
                    format!(
                        "the frame there is not whole, but a whole frame of events written \
                         after it follows at byte {probe}"
                    ),
                ));
            }
            probe += ALIGN;
        }
    }
    Ok(Found {
        records,
        end: at as u64,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn records(from: u64, n: u64) -> Vec<Vec<u8>> {
        (from..from + n)
            .map(|i| format!("record {i}").into_bytes())
            .collect()
    }

    /// A journal file of `groups` frames of epoch 3, from event 10.
    fn written(dir: &Path, groups: &[u64]) -> (Journal, Vec<u64>) {
        let mut journal = Journal::open(&dir.join(FILE_NAME), true).unwrap().unwrap();
        journal.restart(3);
        let mut seq = 10;
        let mut ends = Vec::new();
        for &n in groups {
            journal.write(seq, &records(seq, n)).unwrap();
            journal.keep();
            ends.push(journal.len());
            seq += n;
        }
        (journal, ends)
    }

    fn seqs(found: &Found) -> Vec<u64> {
        found.records.iter().map(|(seq, _)| *seq).collect()
    }

    #[test]
    fn frames_read_back_in_order_and_stored_events_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, ends) = written(dir.path(), &[1, 3, 2]);
        let found = journal.read(3, 10, None).unwrap();
        assert_eq!(seqs(&found), (10..16).collect::<Vec<_>>());
        assert_eq!(found.records[2].1, b"record 12");
        assert_eq!(found.end, ends[2]);
        // The history already holds 10 to 12.
        assert_eq!(seqs(&journal.read(3, 13, None).unwrap()), vec![13, 14, 15]);
        // Another epoch's frames are stale.
        assert!(journal.read(4, 10, None).unwrap().records.is_empty());
        // The file was grown ahead, in one step.
        assert_eq!(std::fs::metadata(journal.path()).unwrap().len(), EXTENT);
    }

    #[test]
    fn a_torn_last_frame_is_ignored_at_every_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, ends) = written(dir.path(), &[2, 3]);
        let bytes = std::fs::read(journal.path()).unwrap();
        // Every way the last write can have been cut short, and every byte
        // of it damaged: the first frame stays, the torn one is ignored.
        // (The padding after its last record is not part of the frame.)
        let frame_end = ends[0] as usize + HEADER + 3 * ("record 12".len() + 4);
        for cut in ends[0] as usize..frame_end {
            let mut torn = bytes.clone();
            torn[cut..ends[1] as usize].fill(0);
            let found = scan(&torn, 3, 10, torn.len(), false).unwrap();
            assert_eq!(seqs(&found), vec![10, 11], "cut at {cut}");
            let mut flipped = bytes.clone();
            flipped[cut] ^= 0x40;
            let found = scan(&flipped, 3, 10, flipped.len(), false).unwrap();
            assert_eq!(seqs(&found), vec![10, 11], "byte {cut} flipped");
        }
    }

    #[test]
    fn damage_before_whole_frames_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, ends) = written(dir.path(), &[2, 3, 1]);
        let bytes = std::fs::read(journal.path()).unwrap();
        for at in [0, 7, HEADER + 3, ends[0] as usize + 20] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x01;
            let error = scan(&damaged, 3, 10, damaged.len(), false)
                .err()
                .unwrap_or_else(|| panic!("damage at byte {at} was not noticed"));
            assert!(
                error
                    .to_string()
                    .contains("a whole frame of events written after it"),
                "{error}"
            );
        }
        // Damage within what the writer knows was acknowledged.
        let mut damaged = bytes.clone();
        damaged[ends[1] as usize + 1] ^= 0x01;
        assert!(scan(&damaged, 3, 10, ends[2] as usize, true).is_err());
        assert!(scan(&bytes, 3, 10, ends[2] as usize, true).is_ok());
    }

    #[test]
    fn a_journal_that_skips_events_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(&dir.path().join(FILE_NAME), true)
            .unwrap()
            .unwrap();
        journal.restart(1);
        journal.write(5, &records(5, 2)).unwrap();
        journal.keep();
        journal.write(8, &records(8, 1)).unwrap();
        journal.keep();
        let error = journal.read(1, 5, None).err().unwrap();
        assert!(
            error.to_string().contains("where event 7 was expected"),
            "{error}"
        );
        // A journal that starts after where the history ends.
        let error = journal.read(1, 3, None).err().unwrap();
        assert!(error.to_string().contains("are missing"), "{error}");
    }

    #[test]
    fn frames_handed_to_the_journals_thread_read_back_like_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = written(dir.path(), &[2]);
        journal.begin(12, &records(12, 3)).unwrap();
        assert!(journal.finish().is_ok());
        journal.keep();
        journal.write(15, &records(15, 1)).unwrap();
        journal.keep();
        journal.begin(16, &records(16, 2)).unwrap();
        journal.keep();
        // A frame begun and discarded before it was finished: erased after
        // it reached the disk, never read.
        journal.begin(18, &records(18, 5)).unwrap();
        journal.discard();
        assert!(journal.finish().is_ok());
        let found = journal.read(3, 10, None).unwrap();
        assert_eq!(seqs(&found), (10..18).collect::<Vec<_>>());
        assert_eq!(found.end, journal.len());
    }

    #[test]
    fn a_discarded_frame_is_not_read_and_a_restart_reuses_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = written(dir.path(), &[2]);
        journal.write(12, &records(12, 4)).unwrap();
        journal.discard();
        assert_eq!(seqs(&journal.read(3, 10, None).unwrap()), vec![10, 11]);
        // Checkpointed: epoch 4 starts over the old frames.
        journal.restart(4);
        journal.write(12, &records(12, 1)).unwrap();
        journal.keep();
        assert_eq!(seqs(&journal.read(4, 12, None).unwrap()), vec![12]);
        assert!(journal.read(3, 10, None).is_ok());
    }
}
