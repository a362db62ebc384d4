//! The outbox beside the embedded history: its own file,
//! `<data-dir>/webhooks.redb`, every change forced to disk before it
//! returns (whatever `--fsync` says: one acknowledged is one the backend
//! will get).
//!
//! Changes go through one writer thread that commits them in groups: the
//! changes that arrive while a commit is being forced to disk go together
//! in the next one. A mass reconnect (every user's first stream confirms
//! their presence here before it starts) then costs a few commits, not one
//! per user. A group that fails fails every change in it, and each caller
//! hears so.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};

use pushwire_core::log::StoreError;

use super::{decode, encode, revived, Answer, Queued, Store};
use crate::webhooks::message::Message;

pub const FILE_NAME: &str = "webhooks.redb";

/// seq → message.
const PENDING: TableDefinition<u64, &[u8]> = TableDefinition::new("pending");
/// `<failed_ms 20 digits>.<id>` → message, so the table reads in the
/// order of failure.
const FAILED: TableDefinition<&str, &[u8]> = TableDefinition::new("failed");
/// user → when last confirmed present (ms).
const ANNOUNCED: TableDefinition<&str, u64> = TableDefinition::new("announced");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const NEXT_SEQ: &str = "next_seq";

/// What the caller hears once the group its change was in is committed.
type Finish = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// One change, applied to the group's transaction.
type Job = Box<dyn FnOnce(&WriteTransaction) -> Result<Finish, redb::Error> + Send>;

/// Most changes committed together.
const GROUP: usize = 1024;

pub struct EmbeddedStore {
    db: Arc<Database>,
    path: PathBuf,
    jobs: Option<std::sync::mpsc::Sender<Job>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // The writer ends once its queue is closed and empty; the file is
        // closed when this returns.
        self.jobs.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// The writer thread: waits for a change, takes every other one queued
/// behind it, and commits them as one transaction.
fn writer(db: Arc<Database>, jobs: std::sync::mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let mut finishes = Vec::with_capacity(group.len());
        let committed = (|| {
            let mut txn = db.begin_write().map_err(|e| fault("write", e))?;
            txn.set_durability(Durability::Immediate)
                .map_err(|e| fault("write", e))?;
            for job in group {
                finishes.push(job(&txn).map_err(|e| fault("write", e))?);
            }
            txn.commit().map_err(|e| fault("commit", e))
        })();
        // Changes of the group that never ran are dropped with it, and
        // their callers hear that the write did not finish.
        for finish in finishes {
            finish(committed.clone());
        }
    }
}

fn fault(what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("webhook outbox: {what}: {error}"))
}

fn failed_key(message: &Message) -> String {
    format!("{:020}.{}", message.failed_ms.unwrap_or(0), message.id)
}

impl EmbeddedStore {
    /// Opens (or creates) the outbox in `dir`. A file that is there and
    /// does not open is an error naming it: never recreated.
    pub fn open(dir: &Path) -> Result<EmbeddedStore, StoreError> {
        let path = std::path::absolute(dir.join(FILE_NAME)).unwrap_or_else(|_| dir.join(FILE_NAME));
        let refuse = |reason: String| StoreError::Open {
            path: path.clone(),
            reason,
        };
        std::fs::create_dir_all(dir)
            .map_err(|e| refuse(format!("cannot create the data directory: {e}")))?;
        let db = Database::create(&path).map_err(|e| {
            refuse(format!(
                "{e}; the hub refuses to start rather than lose undelivered webhook messages"
            ))
        })?;
        let db = Arc::new(db);
        let (jobs, queue) = std::sync::mpsc::channel();
        let writer = {
            let db = db.clone();
            std::thread::Builder::new()
                .name("webhook-outbox".into())
                .spawn(move || writer(db, queue))
                .map_err(|e| refuse(format!("cannot start the outbox writer: {e}")))?
        };
        let store = EmbeddedStore {
            db,
            path: path.clone(),
            jobs: Some(jobs),
            writer: Some(writer),
        };
        // Every table exists from the start: reads never meet a missing one.
        store
            .write_now(|txn| {
                txn.open_table(PENDING)?;
                txn.open_table(FAILED)?;
                txn.open_table(ANNOUNCED)?;
                txn.open_table(META)?;
                Ok(())
            })
            .map_err(|e| refuse(e.to_string()))?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_now<T>(
        &self,
        change: impl FnOnce(&WriteTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, StoreError> {
        write(&self.db, change)
    }

    /// Runs `change` in the writer's next group; answers once that group
    /// is on disk.
    fn write<T: Send + 'static>(
        &self,
        change: impl FnOnce(&WriteTransaction) -> Result<T, redb::Error> + Send + 'static,
    ) -> Answer<'_, T> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |txn| {
            let value = change(txn)?;
            Ok(Box::new(move |committed: Result<(), StoreError>| {
                let _ = answer.send(committed.map(|()| value));
            }) as Finish)
        });
        let queued = self.jobs.as_ref().map(|jobs| jobs.send(job));
        async move {
            if !matches!(queued, Some(Ok(()))) {
                return Err(fault("write", "the outbox writer has stopped"));
            }
            answered
                .await
                .map_err(|_| fault("write", "the write did not finish"))?
        }
        .boxed()
    }

    fn read<T: Send + 'static>(
        &self,
        look: impl FnOnce(&redb::ReadTransaction) -> Result<T, redb::Error> + Send + 'static,
    ) -> Answer<'_, T> {
        let db = self.db.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let txn = db.begin_read().map_err(|e| fault("read", e))?;
                look(&txn).map_err(|e| fault("read", e))
            })
            .await
            .map_err(|e| fault("the read did not finish", e))?
        }
        .boxed()
    }
}

fn write<T>(
    db: &Database,
    change: impl FnOnce(&WriteTransaction) -> Result<T, redb::Error>,
) -> Result<T, StoreError> {
    let mut txn = db.begin_write().map_err(|e| fault("write", e))?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| fault("write", e))?;
    let value = change(&txn).map_err(|e| fault("write", e))?;
    txn.commit().map_err(|e| fault("commit", e))?;
    Ok(value)
}

/// Encoding errors become storage errors inside a transaction.
fn encoded(message: &Message) -> Result<Vec<u8>, redb::Error> {
    encode(message).map_err(|e| redb::Error::Corrupted(e.to_string()))
}

fn push(txn: &WriteTransaction, message: &Message) -> Result<(), redb::Error> {
    let mut meta = txn.open_table(META)?;
    let seq = meta.get(NEXT_SEQ)?.map_or(1, |v| v.value());
    meta.insert(NEXT_SEQ, seq + 1)?;
    txn.open_table(PENDING)?
        .insert(seq, encoded(message)?.as_slice())?;
    Ok(())
}

impl Store for EmbeddedStore {
    fn enqueue(&self, messages: Vec<Message>) -> Answer<'_, ()> {
        self.write(move |txn| messages.iter().try_for_each(|m| push(txn, m)))
    }

    fn come_online<'a>(
        &'a self,
        user: &'a str,
        now_ms: u64,
        message: Option<Message>,
    ) -> Answer<'a, bool> {
        let user = user.to_owned();
        self.write(move |txn| {
            let new = txn
                .open_table(ANNOUNCED)?
                .insert(user.as_str(), now_ms)?
                .is_none();
            if let (true, Some(message)) = (new, &message) {
                push(txn, message)?;
            }
            Ok(new)
        })
    }

    fn announced(&self) -> Answer<'_, Vec<(String, u64)>> {
        self.read(|txn| {
            txn.open_table(ANNOUNCED)?
                .iter()?
                .map(|entry| entry.map(|(u, t)| (u.value().to_owned(), t.value())))
                .collect::<Result<Vec<_>, _>>()
                .map_err(Into::into)
        })
    }

    fn go_offline<'a>(
        &'a self,
        user: &'a str,
        confirmed_ms: u64,
        message: Option<Message>,
    ) -> Answer<'a, bool> {
        let user = user.to_owned();
        self.write(move |txn| {
            let mut announced = txn.open_table(ANNOUNCED)?;
            let current = announced.get(user.as_str())?.map(|v| v.value()) == Some(confirmed_ms);
            if current {
                announced.remove(user.as_str())?;
                drop(announced);
                if let Some(message) = &message {
                    push(txn, message)?;
                }
            }
            Ok(current)
        })
    }

    fn pending(&self, after: u64, limit: usize) -> Answer<'_, Vec<Queued>> {
        self.read(move |txn| {
            let table = txn.open_table(PENDING)?;
            let mut found = Vec::new();
            for entry in table.range(after.saturating_add(1)..)?.take(limit) {
                let (seq, bytes) = entry?;
                let message =
                    decode(bytes.value()).map_err(|e| redb::Error::Corrupted(e.to_string()))?;
                found.push(Queued {
                    seq: seq.value(),
                    message,
                });
            }
            Ok(found)
        })
    }

    fn save<'a>(&'a self, queued: &'a Queued) -> Answer<'a, ()> {
        let queued = queued.clone();
        self.write(move |txn| {
            let mut table = txn.open_table(PENDING)?;
            if table.get(queued.seq)?.is_some() {
                table.insert(queued.seq, encoded(&queued.message)?.as_slice())?;
            }
            Ok(())
        })
    }

    fn delivered(&self, seq: u64) -> Answer<'_, ()> {
        self.write(move |txn| {
            txn.open_table(PENDING)?.remove(seq)?;
            Ok(())
        })
    }

    fn give_up<'a>(&'a self, queued: &'a Queued, keep: usize) -> Answer<'a, ()> {
        let queued = queued.clone();
        self.write(move |txn| {
            if txn.open_table(PENDING)?.remove(queued.seq)?.is_some() {
                let mut failed = txn.open_table(FAILED)?;
                failed.insert(
                    failed_key(&queued.message).as_str(),
                    encoded(&queued.message)?.as_slice(),
                )?;
                while failed.len()? > keep as u64 {
                    failed.pop_first()?;
                }
            }
            Ok(())
        })
    }

    fn failed(&self, limit: usize) -> Answer<'_, Vec<Message>> {
        self.read(move |txn| {
            let table = txn.open_table(FAILED)?;
            let mut found = Vec::new();
            for entry in table.iter()?.take(limit) {
                let (_, bytes) = entry?;
                found.push(
                    decode(bytes.value()).map_err(|e| redb::Error::Corrupted(e.to_string()))?,
                );
            }
            Ok(found)
        })
    }

    fn retry<'a>(&'a self, id: &'a str) -> Answer<'a, bool> {
        let id = id.to_owned();
        self.write(move |txn| {
            let mut table = txn.open_table(FAILED)?;
            let suffix = format!(".{id}");
            let mut key = None;
            for entry in table.iter()? {
                let (k, _) = entry?;
                if k.value().ends_with(&suffix) {
                    key = Some(k.value().to_owned());
                    break;
                }
            }
            let Some(key) = key else {
                return Ok(false);
            };
            let message = match table.remove(key.as_str())? {
                Some(bytes) => {
                    decode(bytes.value()).map_err(|e| redb::Error::Corrupted(e.to_string()))?
                }
                None => return Ok(false),
            };
            drop(table);
            push(txn, &revived(message))?;
            Ok(true)
        })
    }

    fn backlog(&self) -> Answer<'_, u64> {
        self.read(|txn| Ok(txn.open_table(PENDING)?.len()?))
    }

    fn lease<'a>(&'a self, _node: &'a str, _ttl: Duration) -> Answer<'a, bool> {
        async { Ok(true) }.boxed()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::webhooks::store::contract;

    #[tokio::test]
    async fn keeps_order_state_and_failures() {
        let dir = tempfile::tempdir().unwrap();
        contract::keeps_order_state_and_failures(&EmbeddedStore::open(dir.path()).unwrap()).await;
    }

    #[tokio::test]
    async fn announces_each_user_once() {
        let dir = tempfile::tempdir().unwrap();
        contract::announces_each_user_once(&EmbeddedStore::open(dir.path()).unwrap()).await;
    }

    #[tokio::test]
    async fn what_was_written_is_there_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let message = Message::user_online("a");
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            store.enqueue(vec![message.clone()]).await.unwrap();
            store.come_online("a", 7, None).await.unwrap();
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let pending = store.pending(0, 10).await.unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].message, message);
        assert_eq!(store.announced().await.unwrap(), vec![("a".to_owned(), 7)]);
        store
            .enqueue(vec![Message::user_online("b")])
            .await
            .unwrap();
        assert!(store.pending(0, 10).await.unwrap()[1].seq > pending[0].seq);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn changes_made_at_once_commit_in_groups_and_each_caller_hears() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let tasks: Vec<_> = (0..500)
            .map(|n| {
                let store = store.clone();
                tokio::spawn(async move {
                    let user = format!("u{}", n % 250);
                    let online = Message::user_online(&user);
                    store.come_online(&user, n, Some(online)).await.unwrap()
                })
            })
            .collect();
        let mut announced = 0;
        for task in tasks {
            announced += usize::from(task.await.unwrap());
        }
        // Each of the 250 users announced once, whatever the grouping.
        assert_eq!(announced, 250);
        assert_eq!(store.announced().await.unwrap().len(), 250);
        let pending = store.pending(0, 1000).await.unwrap();
        assert_eq!(pending.len(), 250);
        assert!(pending.windows(2).all(|w| w[0].seq < w[1].seq));
    }

    #[test]
    fn a_file_that_is_not_an_outbox_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"not a database, at all").unwrap();
        let error = EmbeddedStore::open(dir.path()).err().unwrap().to_string();
        assert!(error.contains(FILE_NAME), "{error}");
        assert_eq!(
            std::fs::read(dir.path().join(FILE_NAME)).unwrap(),
            b"not a database, at all"
        );
    }
}
