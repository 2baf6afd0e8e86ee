//! Where log lines go: stderr, from a thread of their own, as text or JSON, at the level the
//! command calls for unless `RUST_LOG` says otherwise.

/// Log lines queued for stderr at most before logging waits (a few hundred bytes each).
const LOG_QUEUE_LINES: usize = 8192;

/// Log format: human-readable text, or one JSON object per line.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Install the logger at `level` (`RUST_LOG` overrides it). Keep the guard until the end of
/// `main`: dropping it writes out every queued line.
pub fn init(format: LogFormat, level: &str) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Colour only on a terminal: log files and journald get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // Log lines (the request log among them) go to stderr from a thread of their own: a
    // request pays an in-memory queue push, not a write to a pipe or terminal. The queue is
    // bounded (LOG_QUEUE_LINES) and not lossy: when stderr cannot keep up, logging waits for
    // room rather than dropping lines, so no request line is lost and the queue's memory
    // stays small. The guard flushes the queue when it is dropped, before `main` returns.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("pullthrough-log")
        .finish(std::io::stderr());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(ansi);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    guard
}
