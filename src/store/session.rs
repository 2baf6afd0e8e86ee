//! Temp files and who owns them: each process that opens the cache writes its temp files
//! (fills in progress, atomic writes, import staging) in a directory of its own,
//! `tmp/<session>/`, and holds an exclusive `flock` on `locks/sessions/<session>` for as long
//! as it lives.
//!
//! Why a lock per session rather than a PID in the file name or an age limit: the kernel
//! drops a `flock` when its holder dies, however it dies (SIGKILL included), so "the lock can
//! be taken" means exactly "the owner is gone". A PID says nothing across PID namespaces (a
//! daemon in a container and a CLI on the host, or two containers sharing a volume, each see
//! their own PID 1) and can be reused; an age limit either waits long after a crash or
//! deletes a fill that is merely slow. A session directory whose lock file is missing is
//! dead too: its owner creates and locks the lock file before the directory.
//!
//! Only the daemon cleans up after dead sessions (at start and on every housekeeping tick,
//! see `Store::clean_dead_temp`); every process removes its own directory when it closes the
//! store. Nobody ever removes a live session's files.
//!
//! Loose entries directly under `tmp/` come from versions before sessions; nothing current
//! writes them, and the daemon removes them once they have not changed for `LOOSE_AGE`.

use rustix::fs::{flock, FlockOperation};
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Loose files under `tmp/` (written by versions before sessions) older than this are
/// removed by the daemon.
const LOOSE_AGE: Duration = Duration::from_secs(3600);

/// This process's temp directory, held for its lifetime.
pub struct Session {
    id: String,
    dir: PathBuf,
    lock_path: PathBuf,
    /// Holds the exclusive lock; closing it releases the lock.
    _lock: File,
}

fn sessions_dir(root: &Path) -> PathBuf {
    root.join("locks").join("sessions")
}

impl Session {
    /// Create and lock a new session under the cache directory `root`. Blocking.
    pub(super) fn create(root: &Path) -> io::Result<Session> {
        let locks = sessions_dir(root);
        std::fs::create_dir_all(&locks)?;
        std::fs::create_dir_all(root.join("tmp"))?;
        for _ in 0..8 {
            let id = new_id();
            let lock_path = locks.join(&id);
            let lock = File::options().read(true).write(true).create_new(true).open(&lock_path)?;
            flock(&lock, FlockOperation::NonBlockingLockExclusive).map_err(io::Error::from)?;
            // Between create and lock the file was unlocked: a cleaner may have taken it for
            // dead and unlinked it. Ours only if the path still names the file we locked.
            let ours = std::fs::metadata(&lock_path)
                .map(|m| {
                    let f = lock.metadata().ok();
                    f.is_some_and(|f| f.ino() == m.ino() && f.dev() == m.dev())
                })
                .unwrap_or(false);
            if !ours {
                continue;
            }
            let dir = root.join("tmp").join(&id);
            std::fs::create_dir(&dir)?;
            return Ok(Session { id, dir, lock_path, _lock: lock });
        }
        Err(io::Error::other("could not create a temp session under the cache directory"))
    }

    /// Where this process writes its temp files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Remove this session's temp files (fills cut short by a shutdown), keeping the
    /// session. Blocking.
    pub fn clear(&self) -> io::Result<usize> {
        let mut n = 0;
        for e in std::fs::read_dir(&self.dir)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                std::fs::remove_dir_all(e.path())?;
            } else {
                std::fs::remove_file(e.path())?;
            }
            n += 1;
        }
        Ok(n)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_file(&self.lock_path);
    }
}

/// A name no other session has had: PID (for people reading `tmp/`), time, and a counter
/// for several stores in one process.
fn new_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("{}-{nanos:x}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// What a cleaning pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Cleaned {
    /// Sessions whose owner is gone.
    pub sessions: usize,
    /// Loose entries from versions before sessions.
    pub loose: usize,
}

/// Remove the temp directories of dead sessions (and old loose entries) under `root`,
/// never `own`'s. Blocking.
pub(super) fn clean_dead(root: &Path, own: &Session) -> io::Result<Cleaned> {
    let mut cleaned = Cleaned::default();
    let tmp = root.join("tmp");
    let locks = sessions_dir(root);
    for e in std::fs::read_dir(&tmp)? {
        let e = e?;
        let name = e.file_name();
        if name.to_str() == Some(own.id.as_str()) {
            continue;
        }
        let path = e.path();
        let is_dir = e.file_type()?.is_dir();
        let lock_path = locks.join(&name);
        if is_dir && lock_path.exists() {
            // A live owner holds the lock; its death released it.
            if let Some(_held) = take_if_dead(&lock_path)? {
                remove_all(&path)?;
                let _ = std::fs::remove_file(&lock_path);
                cleaned.sessions += 1;
            }
            continue;
        }
        if is_dir && is_session_id(&name.to_string_lossy()) {
            // The lock goes last when a session is removed: this is a removal cut short.
            remove_all(&path)?;
            cleaned.sessions += 1;
            continue;
        }
        let age = e.metadata()?.modified().ok().and_then(|m| SystemTime::now().duration_since(m).ok());
        if age.is_some_and(|a| a > LOOSE_AGE) {
            remove_all(&path)?;
            cleaned.loose += 1;
        }
    }
    // Lock files whose session directory is gone and whose owner is dead.
    for e in std::fs::read_dir(&locks)? {
        let e = e?;
        if e.file_name().to_str() == Some(own.id.as_str()) || tmp.join(e.file_name()).exists() {
            continue;
        }
        if let Some(_held) = take_if_dead(&e.path())? {
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(cleaned)
}

/// The lock of a session whose owner is gone, held by us; `None` if the owner lives (or the
/// file vanished: another cleaner got there first).
fn take_if_dead(lock_path: &Path) -> io::Result<Option<File>> {
    let f = match File::open(lock_path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    match flock(&f, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(f)),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn is_session_id(name: &str) -> bool {
    let parts: Vec<&str> = name.split('-').collect();
    parts.len() == 3
        && parts[0].bytes().all(|b| b.is_ascii_digit())
        && parts[1].bytes().all(|b| b.is_ascii_hexdigit())
        && parts[2].bytes().all(|b| b.is_ascii_digit())
        && parts.iter().all(|p| !p.is_empty())
}

fn remove_all(path: &Path) -> io::Result<()> {
    let r = if path.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
    match r {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dead_sessions_are_cleaned() {
        let root = tempfile::tempdir().unwrap();
        let own = Session::create(root.path()).unwrap();
        let live = Session::create(root.path()).unwrap();
        std::fs::write(live.dir().join("fill.tmp"), b"in progress").unwrap();
        std::fs::write(own.dir().join("mine.tmp"), b"in progress").unwrap();

        // A dead session, as a SIGKILL leaves it: its files, and a lock file nobody holds.
        let id = new_id();
        let dead_dir = root.path().join("tmp").join(&id);
        let dead_lock = sessions_dir(root.path()).join(&id);
        std::fs::create_dir(&dead_dir).unwrap();
        std::fs::write(dead_dir.join("partial.tmp"), b"partial").unwrap();
        std::fs::write(&dead_lock, b"").unwrap();
        // And one whose removal was cut short after the lock file went.
        let half = root.path().join("tmp").join(new_id());
        std::fs::create_dir(&half).unwrap();

        // A loose file from an older version, fresh, and one from long ago.
        let fresh = root.path().join("tmp").join("0123.99-1.tmp");
        std::fs::write(&fresh, b"x").unwrap();
        let old = root.path().join("tmp").join("w-1-2.tmp");
        std::fs::write(&old, b"x").unwrap();
        File::options().write(true).open(&old).unwrap().set_modified(SystemTime::now() - 2 * LOOSE_AGE).unwrap();

        let c = clean_dead(root.path(), &own).unwrap();
        assert_eq!(c, Cleaned { sessions: 2, loose: 1 });
        assert!(!dead_dir.exists() && !dead_lock.exists() && !half.exists());
        assert!(live.dir().join("fill.tmp").exists() && own.dir().join("mine.tmp").exists());
        assert!(fresh.exists() && !old.exists());

        // Closing a session removes its own files and lock.
        let live_dir = live.dir().to_path_buf();
        drop(live);
        assert!(!live_dir.exists());
        assert_eq!(own.clear().unwrap(), 1);
    }
}
