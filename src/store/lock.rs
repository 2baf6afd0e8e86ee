//! How the daemon and the command line share one cache directory: two `flock` files under
//! `locks/`, taken according to what a process does (its `Role`).
//!
//! | process                         | `locks/daemons`  | `locks/writers`                      |
//! |---------------------------------|------------------|--------------------------------------|
//! | daemon (`serve`)                | shared, lifetime | exclusive, during a lifecycle pass   |
//! | `prefetch`, `import`            | —                | shared, while they run               |
//! | `prune`                         | exclusive        | exclusive                            |
//! | `ls`, `export`, `prune --dry-run` | —              | —                                    |
//!
//! Adding content needs no exclusion: every file lands by an atomic rename, blobs are
//! content-addressed, and temp files are per process (see `session`). What loses writes is
//! a pass that deletes by policy (a lifecycle pass) while someone else adds: it computes what
//! to keep from the records, and an adder may have committed a blob whose record it has not
//! written yet, or rewritten a record the pass then removes. So such a pass runs only when no
//! other process adds: `prune` needs both locks and refuses at once when it cannot have them
//! (a daemon applies the same policies itself every `lifecycle_interval`; waiting for it to
//! stop would hang); the daemon's periodic pass skips a turn while a `prefetch` or `import`
//! runs; those wait for a pass in progress (seconds). Readers take nothing: whatever they
//! find under `blobs/` or `tags/` is complete. The daemon's size-budget eviction is not a
//! policy pass and takes no lock.
//!
//! Why two files: a process cannot hold a shared lock and take an exclusive one on the same
//! file (flock conversion drops the shared lock first), so the daemon's lifetime lock and its
//! lifecycle passes need different files. `flock` is released by the kernel when a process
//! dies, so a crash never leaves a cache locked.

use rustix::fs::{flock, FlockOperation};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// What a process does to the cache directory, which decides the locks it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `serve`: adds content for its whole life, runs lifecycle passes, cleans dead temp files.
    Daemon,
    /// `prefetch`, `import`: add content while they run.
    Writer,
    /// `prune`: deletes by policy, only while nobody else writes.
    Pruner,
    /// `ls`, `export`, `prune --dry-run`: read only.
    Reader,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("a pullthrough daemon is using {dir}; it applies the lifecycle policies itself every [cache] lifecycle_interval: stop it to prune now, or use --dry-run to see what would go")]
    DaemonRunning { dir: PathBuf },
    #[error("a prefetch or import is writing to {dir}; prune when it has finished (or use --dry-run)")]
    WriterRunning { dir: PathBuf },
    #[error("cannot lock {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Locks a process holds for as long as it keeps this value.
#[derive(Debug)]
pub struct Claim {
    pub role: Role,
    _files: Vec<File>,
}

/// The exclusive writers' lock, held for the length of one lifecycle pass.
pub struct PassLock {
    _file: File,
}

fn lock_path(root: &Path, name: &str) -> PathBuf {
    root.join("locks").join(name)
}

fn open(path: &Path) -> Result<File, LockError> {
    let io = |source| LockError::Io { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    File::options().read(true).write(true).create(true).truncate(false).open(path).map_err(io)
}

/// Try `op` without waiting; `Ok(false)` if another process holds a conflicting lock.
fn try_lock(f: &File, path: &Path, op: FlockOperation) -> Result<bool, LockError> {
    match flock(f, op) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(LockError::Io { path: path.to_path_buf(), source: e.into() }),
    }
}

/// Take `op`'s blocking form, after saying why we wait when the quick try fails.
fn wait_lock(f: &File, path: &Path, nb: FlockOperation, op: FlockOperation, why: &str) -> Result<(), LockError> {
    if try_lock(f, path, nb)? {
        return Ok(());
    }
    tracing::info!(lock = %path.display(), "{why}");
    flock(f, op).map_err(|e| LockError::Io { path: path.to_path_buf(), source: e.into() })
}

/// Take the locks `role` needs on the cache directory `root`. Blocking: a daemon waits out a
/// running `prune`, a writer a running lifecycle pass; a pruner never waits.
pub(super) fn claim(root: &Path, role: Role) -> Result<Claim, LockError> {
    let daemons = lock_path(root, "daemons");
    let writers = lock_path(root, "writers");
    let files = match role {
        Role::Reader => Vec::new(),
        Role::Daemon => {
            let f = open(&daemons)?;
            use FlockOperation::{LockShared, NonBlockingLockShared};
            wait_lock(&f, &daemons, NonBlockingLockShared, LockShared, "waiting for a prune of this cache to finish")?;
            vec![f]
        }
        Role::Writer => {
            let f = open(&writers)?;
            use FlockOperation::{LockShared, NonBlockingLockShared};
            wait_lock(&f, &writers, NonBlockingLockShared, LockShared, "waiting for a lifecycle pass to finish")?;
            vec![f]
        }
        Role::Pruner => {
            let d = open(&daemons)?;
            if !try_lock(&d, &daemons, FlockOperation::NonBlockingLockExclusive)? {
                return Err(LockError::DaemonRunning { dir: root.to_path_buf() });
            }
            let w = open(&writers)?;
            if !try_lock(&w, &writers, FlockOperation::NonBlockingLockExclusive)? {
                return Err(LockError::WriterRunning { dir: root.to_path_buf() });
            }
            vec![d, w]
        }
    };
    Ok(Claim { role, _files: files })
}

/// The writers' lock for one lifecycle pass of the daemon, or `None` while a `prefetch` or
/// `import` runs (the pass waits for the next turn). Blocking (briefly: never waits).
pub(super) fn try_pass(root: &Path) -> Result<Option<PassLock>, LockError> {
    let path = lock_path(root, "writers");
    let f = open(&path)?;
    Ok(try_lock(&f, &path, FlockOperation::NonBlockingLockExclusive)?.then_some(PassLock { _file: f }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_exclude_what_they_must() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        // Readers and writers coexist with a daemon.
        let daemon = claim(r, Role::Daemon).unwrap();
        let _reader = claim(r, Role::Reader).unwrap();
        let writer = claim(r, Role::Writer).unwrap();
        // A prune is refused while a daemon runs, and names it.
        assert!(matches!(claim(r, Role::Pruner), Err(LockError::DaemonRunning { .. })));
        // The daemon's lifecycle pass skips its turn while a writer runs.
        assert!(try_pass(r).unwrap().is_none());
        drop(writer);
        let pass = try_pass(r).unwrap().expect("no writer left");
        drop(pass);
        drop(daemon);
        // With nobody else, prune gets the cache; then writers are refused a quick lock.
        let prune = claim(r, Role::Pruner).unwrap();
        let w = open(&lock_path(r, "writers")).unwrap();
        assert!(!try_lock(&w, &lock_path(r, "writers"), FlockOperation::NonBlockingLockShared).unwrap());
        drop(prune);
        let _writer = claim(r, Role::Writer).unwrap();
        assert!(matches!(claim(r, Role::Pruner), Err(LockError::WriterRunning { .. })));
    }
}
