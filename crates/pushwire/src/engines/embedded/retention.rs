//! Retention: dropping the oldest events beyond `max_events` or older than
//! `max_age`, together with their entries in `ids`.
//!
//! Retention (`trim`) goes through the writer thread like every write, so
//! there is only ever one writer: a retention pass is one more request of a
//! group commit, and an append that takes the history beyond `max_events`
//! drops the oldest in its own commit. One commit removes at most
//! [`MAX_TRIM_PER_COMMIT`] events, so a large trim never holds up publishes
//! for long; the rest go in later commits.
//!
//! What retention drops is gone for `resolve` (the id of a trimmed event
//! may be used again by a publisher), but `next_seq` stays in `meta`, so a
//! sequence number is never issued twice, even when retention emptied the
//! history; the event right before the oldest retained one stays a valid
//! point to resume from, so its tag stays in `meta` (`boundary_tag`).

use redb::{ReadableTable, StorageError, Table};

use pushwire_core::log::StoreError;
use pushwire_core::record::decode_key;

use super::writer::{disk_error, Writer};

/// Most events one commit removes for retention; the rest go in later ones,
/// so a large trim never holds up publishes for long.
const MAX_TRIM_PER_COMMIT: usize = 100_000;

impl Writer {
    /// One retention pass at `now_ms`: the oldest beyond `max_events`, then
    /// what is older than `max_age`; returns how many went.
    pub(super) fn trim(
        &mut self,
        table: &mut Table<'_, u64, &'static [u8]>,
        ids: &mut Table<'_, &'static str, u64>,
        now_ms: u64,
    ) -> Result<usize, StoreError> {
        let mut gone = self.trim_count(table, ids)?;
        let cutoff = now_ms
            .saturating_sub(u64::try_from(self.retention.max_age.as_millis()).unwrap_or(u64::MAX));
        gone += self.trim_older(table, ids, cutoff)?;
        Ok(gone)
    }

    /// Drops the oldest events beyond `max_events`.
    pub(super) fn trim_count(
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
        self.boundary_tag = key.hub_tag();
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use pushwire_core::log::{now_ms, Cursor, EventLog, Fsync};

    use crate::engines::embedded::EmbeddedLog;

    use std::sync::Arc;

    use crate::engines::embedded::testing::{draft, open, retention, with_id, Seen};

    #[tokio::test]
    async fn retention_keeps_sequences_and_resolves_like_memory() {
        let dir = tempfile::tempdir().unwrap();
        let seen = Arc::new(Seen::default());
        let mut ids = vec![String::new()];
        let last;
        {
            let log =
                EmbeddedLog::open(dir.path(), retention(3), Fsync::Always, seen.clone()).unwrap();
            ids.push(
                log.append(vec![with_id("old")]).await.unwrap()[0]
                    .id
                    .to_string(),
            );
            for i in 0..5 {
                let stored = log.append(vec![draft("u", &i.to_string())]).await.unwrap();
                ids.push(stored[0].id.to_string());
            }
            // Events 1..=3 are gone; 3 is the predecessor of the oldest kept.
            assert_eq!(log.resolve("old").await.unwrap(), Cursor::Unknown);
            assert_eq!(log.resolve(&ids[2]).await.unwrap(), Cursor::Unknown);
            assert_eq!(log.resolve(&ids[3]).await.unwrap(), Cursor::After(3));
            assert_eq!(log.resolve("#3").await.unwrap(), Cursor::Unknown);
            assert_eq!(log.resolve(&ids[6]).await.unwrap(), Cursor::After(6));
            assert_eq!(log.resolve("#7").await.unwrap(), Cursor::Unknown);
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
            // 7 had the publisher's id `old`; the newest hub id trimmed, 6,
            // is no longer the boundary.
            assert_eq!(log.resolve("old").await.unwrap(), Cursor::Unknown);
            assert_eq!(log.resolve(&ids[6]).await.unwrap(), Cursor::Unknown);
            last = log.append(vec![draft("u", "8")]).await.unwrap()[0]
                .id
                .clone();
            log.trim(now_ms() + 2 * 3_600_000).await.unwrap();
            assert_eq!(log.resolve(&last).await.unwrap(), Cursor::After(8));
        }
        // The boundary is stored: after a restart, the trimmed newest event
        // still resumes.
        let log = open(dir.path(), &seen);
        assert!(log.read_after(0, 10).await.unwrap().is_empty());
        assert_eq!(log.resolve(&last).await.unwrap(), Cursor::After(8));
        assert_eq!(log.resolve("#8").await.unwrap(), Cursor::Unknown);
        let next = log.append(vec![draft("u", "after")]).await.unwrap();
        assert_eq!(next[0].seq, 9, "sequence numbers are never reused");
    }
}
