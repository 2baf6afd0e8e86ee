//! Standard output for the commands' results, where a reader that went away (a closed pipe:
//! `pullthrough ls | head -1`, a pager that quit) ends the command quietly instead of with
//! a panic ("failed printing to stdout: Broken pipe", which is what `println!` does).
//!
//! As coreutils do: no message, and the status a shell reports for a command ended by
//! SIGPIPE (141, so `set -o pipefail` still sees the output was cut). The process cannot
//! simply die by the signal: Rust's runtime ignores SIGPIPE (the daemon's sockets need
//! that), and restoring it would take unsafe code for no gain. Nobody is left to read the
//! rest, so the command stops: what it was writing to the cache is handled as after a
//! kill (temp files are cleaned at the next start).

use std::fmt::Display;
use std::io::Write as _;

/// The exit status of a command whose output pipe was closed: 128 + SIGPIPE, as a shell
/// reports for coreutils.
pub const CLOSED_PIPE_STATUS: i32 = 128 + 13;

/// Write `text` and a newline to stdout in one write (a reader never sees half a line);
/// a closed pipe ends the process quietly.
pub fn line(text: impl Display) {
    write(format_args!("{text}\n"));
}

/// Write `text` to stdout as it is; a closed pipe ends the process quietly.
pub fn write(text: impl Display) {
    let mut out = std::io::stdout().lock();
    let written = write!(out, "{text}").and_then(|()| out.flush());
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(CLOSED_PIPE_STATUS),
        // A full disk behind `> file`: say so, once, and stop as for any failed command.
        Err(e) => {
            eprintln!("error: cannot write to standard output: {e}");
            std::process::exit(1);
        }
    }
}

/// `println!` through [`line`].
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::stdout::line(format_args!($($arg)*))
    };
}
pub(crate) use outln;
