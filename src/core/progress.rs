//! Progress of long operations (prefetch, export, import, verify), as the core reports it.
//!
//! The core knows nothing of terminals, bars or JSON: it tells a [`Progress`] what happens
//! ([`Event`]s, a handful per item) and how many bytes moved ([`Progress::bytes`], often).
//! The command line implements the trait (bars on a terminal, plain lines in a log, JSON
//! for scripts, or nothing); the daemon's scheduled prefetch passes [`Silent`].
//!
//! Who reports what: whoever loops over the items (images) sends `Planned`, `Started`,
//! `Finished` and `Failed`; whoever moves the bytes sends `Sized` and `bytes`. An item's
//! events come in order (`Started`, maybe `Sized`, then `Finished` or `Failed`), one item at
//! a time; `bytes` may come from several tasks at once (blobs fetched concurrently).

use std::fmt;

/// What a long operation reports, besides bytes.
#[derive(Clone, Copy)]
pub enum Event<'a> {
    /// The run covers `items` more items, moving `bytes` more when that is known up front.
    /// May come more than once (a command's own step, like unpacking a tar, beside the
    /// core's images): the counts add up.
    Planned { items: usize, bytes: Option<u64> },
    /// An item (an image, a layout entry) begins.
    Started { name: &'a str },
    /// The current item will move this many bytes (known once its manifests are read);
    /// bytes already in place (cached blobs) are not counted.
    Sized { bytes: u64 },
    /// The current item is done.
    Finished { name: &'a str },
    /// The current item failed; the run may go on with the next.
    Failed { name: &'a str, error: &'a dyn fmt::Display },
}

/// Where progress goes. Shared by the tasks of one run, so `Send + Sync`.
pub trait Progress: Send + Sync {
    /// Something happened to the run or its current item. Rare: implementations may lock,
    /// print or draw here.
    fn event(&self, event: Event<'_>);

    /// `n` more bytes of the current item moved (fetched, hashed, copied). Called on the
    /// data path, per chunk: an implementation does an atomic add and nothing else (no
    /// lock, no IO), so progress never slows a transfer. Drawing happens elsewhere, on the
    /// implementation's own clock.
    fn bytes(&self, n: u64);
}

/// Reports nothing (the daemon, library callers that do not watch).
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Progress for Silent {
    fn event(&self, _: Event<'_>) {}
    fn bytes(&self, _: u64) {}
}

/// Bytes of a reader, reported as it is read: a blocking copy or hash that shows progress.
pub struct Counted<'p, R> {
    pub inner: R,
    pub progress: &'p dyn Progress,
}

impl<R: std::io::Read> std::io::Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.bytes(n as u64);
        Ok(n)
    }
}

impl<W: std::io::Write> std::io::Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.progress.bytes(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
