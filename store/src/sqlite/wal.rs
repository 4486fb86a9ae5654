//! Durable commits without switching SQLite's `synchronous` setting.
//!
//! The writer connection runs at `synchronous=NORMAL`: in WAL mode a commit appends its frames to
//! the WAL with `write(2)` and returns without waiting for the disk, and the database stays
//! consistent after a crash (a commit whose frames did not all reach the disk is rolled back, with
//! every commit after it). A durable commit then flushes the WAL file itself, which is what
//! `synchronous=FULL` does inside the commit. Doing it here rather than switching the connection
//! between `FULL` and `NORMAL` saves two statements per switch (and SQLite re-preparing the
//! `PRAGMA` each time), and frees the one writer connection during the flush: the next
//! transaction writes while this one waits for the disk.
//!
//! One flush covers every commit that finished before it started, so concurrent durable commits
//! share flushes ([`Wal::flush_committed`]). Between its commit and its flush a transaction is
//! visible to readers but not yet durable; nothing is acknowledged before the flush, and every
//! acknowledgement (an accepted event, a duplicate found) waits for a flush that started after its
//! own commit, which therefore covers everything that commit read.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::Result;

/// The WAL of one database file, as durable commits flush it.
#[derive(Debug)]
pub(crate) struct Wal {
    path: PathBuf,
    /// Commits finished so far (each durable commit takes the next number once it committed).
    pub(super) committed: AtomicU64,
    flushed: Mutex<Flushed>,
}

#[derive(Debug)]
pub(super) struct Flushed {
    /// An open handle on the WAL (the file SQLite writes; `None` until it exists), with its inode.
    file: Option<(File, u64)>,
    /// Every commit numbered up to this is on disk.
    pub(super) upto: u64,
    /// A flush failed: what the kernel held may be gone while a later flush reports success, so
    /// no later commit is called durable (as PostgreSQL does after a failed fsync).
    failed: bool,
    /// Flushes done (for tests).
    #[cfg_attr(not(test), allow(dead_code))]
    count: u64,
}

/// Where SQLite keeps the WAL of the database file `database`.
pub(crate) fn path_of(database: &Path) -> PathBuf {
    let mut path = database.as_os_str().to_owned();
    path.push("-wal");
    PathBuf::from(path)
}

impl Wal {
    pub(crate) fn new(path: &Path) -> Self {
        Wal {
            path: path.to_owned(),
            committed: AtomicU64::new(0),
            flushed: Mutex::new(Flushed {
                file: None,
                upto: 0,
                failed: false,
                count: 0,
            }),
        }
    }

    /// Returns once every commit that finished before this call is on disk. Called right after a
    /// commit returned.
    pub(crate) async fn flush_committed(self: &Arc<Self>) -> Result<()> {
        let ticket = self.committed.fetch_add(1, Ordering::AcqRel) + 1;
        let wal = Arc::clone(self);
        tokio::task::spawn_blocking(move || wal.flush_upto(ticket))
            .await
            .map_err(|error| {
                unavailable(io::Error::other(format!(
                    "the WAL flush did not finish: {error}"
                )))
            })?
    }

    fn flush_upto(&self, ticket: u64) -> Result<()> {
        let mut flushed = self.lock();
        if flushed.failed {
            return Err(failed());
        }
        if flushed.upto >= ticket {
            // A flush that started after this commit finished already covered it.
            return Ok(());
        }
        // Every commit numbered so far finished before this flush starts.
        let upto = self.committed.load(Ordering::Acquire);
        match self.sync(&mut flushed) {
            Ok(()) => {
                flushed.upto = upto;
                flushed.count += 1;
                Ok(())
            }
            Err(error) => {
                flushed.failed = true;
                tracing::error!(path = %self.path.display(), %error, "Flushing the SQLite WAL to disk failed; kinetic accepts nothing more until it is restarted.");
                Err(failed())
            }
        }
    }

    fn sync(&self, flushed: &mut Flushed) -> io::Result<()> {
        // SQLite deletes the WAL when the last connection to the database closes (another
        // process's, say) and creates a new one: flush the file that is there now.
        let inode = std::fs::metadata(&self.path)?.ino();
        if flushed.file.as_ref().is_none_or(|(_, open)| *open != inode) {
            // Write access: some systems refuse to sync a file opened read-only. SQLite holds no
            // lock on the WAL itself, so this handle cannot disturb its locking when closed.
            let file = File::options().write(true).open(&self.path)?;
            let inode = file.metadata()?.ino();
            flushed.file = Some((file, inode));
        }
        match &flushed.file {
            Some((file, _)) => file.sync_data(),
            None => Ok(()),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Flushed> {
        // A panic cannot leave `Flushed` half-updated (each field is set in one step).
        self.flushed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The inode of the WAL handle held open.
    #[cfg(test)]
    pub(crate) fn open_inode(&self) -> Option<u64> {
        self.lock().file.as_ref().map(|(_, inode)| *inode)
    }

    /// How many flushes reached the disk so far.
    #[cfg(test)]
    pub(crate) fn flushes(&self) -> u64 {
        self.lock().count
    }
}

/// A flush that failed, or cannot be trusted since one did: the store is unavailable (503).
fn unavailable(error: io::Error) -> crate::Error {
    crate::Error::Database(sqlx::Error::Io(error))
}

fn failed() -> crate::Error {
    unavailable(io::Error::other(
        "an earlier flush of the SQLite WAL to disk failed, so commits can no longer be made durable; check the disk and restart kinetic",
    ))
}
