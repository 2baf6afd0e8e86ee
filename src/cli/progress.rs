//! Progress of the long commands (`prefetch`, `export`, `import`, `verify`) as an operator
//! or a script sees it: the command line's implementation of the core's
//! [`Progress`](pullthrough::core::progress::Progress).
//!
//! One of four [`Mode`]s, chosen by [`ProgressArgs`]:
//! - **bars** when stderr is a terminal: indicatif bars on stderr, one for the current item
//!   (bytes, rate, ETA) and one for the run;
//! - **lines** when it is not (CI, `kubectl logs`, a file): a plain line on stderr every
//!   `--progress-interval` and at each item's start and end, no escape codes;
//! - **json** (`--json`): one JSON object a line on stdout (`plan`, `start`, `progress`,
//!   `done`, `failed`, the command's own `result` lines, and a final `summary`);
//! - **quiet** (`--quiet`): no progress and no per-item lines; errors on stderr and the
//!   final one-line summary on stdout only.
//!
//! In every mode the results (one line per item, the summary) go to stdout and progress and
//! errors to stderr, so `cmd > results.txt` keeps the bars on the screen.
//!
//! Bytes are counted with one atomic add (see [`Progress::bytes`]); a thread of the
//! reporter's own reads the counter on its clock and draws or prints, so a transfer never
//! waits for a terminal or a pipe.

use super::stdout::outln;
use indicatif::{HumanBytes, HumanDuration, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use pullthrough::core::progress::{Event, Progress};
use serde_json::json;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How often the bars take the byte counter (indicatif limits its own redraws to 20 a second).
const BAR_TICK: Duration = Duration::from_millis(100);

/// The progress options every long command takes.
#[derive(clap::Args, Debug, Clone)]
pub struct ProgressArgs {
    /// No progress and no per-image lines: only errors (on stderr) and the final summary line
    /// (on stdout).
    #[arg(long, short = 'q', conflicts_with = "json")]
    pub quiet: bool,
    /// Progress and results as JSON on stdout, one object a line (events "plan", "start",
    /// "progress", "done", "failed", "result", "summary"); errors stay on stderr as text.
    #[arg(long)]
    pub json: bool,
    /// How often a progress line is printed when stderr is not a terminal, and with --json
    /// (e.g. 5s, 500ms).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = pullthrough::config::parse_duration)]
    pub progress_interval: Duration,
}

/// Where and how progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Bars,
    Lines,
    Json,
    Quiet,
}

impl ProgressArgs {
    /// The mode these options and this process's stderr call for.
    pub fn mode(&self) -> Mode {
        if self.json {
            Mode::Json
        } else if self.quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() && std::env::var_os("TERM").is_none_or(|t| t != "dumb") {
            Mode::Bars
        } else {
            Mode::Lines
        }
    }

    /// A reporter for `command` (which names it in plain lines), running its clock.
    pub fn reporter(&self, command: &'static str) -> Reporter {
        Reporter::new(command, self.mode(), self.progress_interval)
    }
}

/// The current item, as the reporter tracks it.
struct Item {
    name: String,
    index: usize,
    /// The run's byte counter when the item started: its bytes are the difference.
    base: u64,
    total: Option<u64>,
    started: Instant,
}

/// The run, as the reporter tracks it (behind a lock: only events and ticks take it).
#[derive(Default)]
struct Run {
    items: usize,
    total: Option<u64>,
    started: usize,
    done: usize,
    failed: usize,
    item: Option<Item>,
}

/// The two bars of a terminal.
struct Bars {
    multi: MultiProgress,
    item: ProgressBar,
    overall: ProgressBar,
}

struct Inner {
    command: &'static str,
    mode: Mode,
    /// Every byte of the run: the one counter the data path touches.
    bytes: AtomicU64,
    run: Mutex<Run>,
    bars: Option<Bars>,
    begun: Instant,
}

/// Shows a run's progress in one [`Mode`]; hand it to the core as `&dyn Progress`, print
/// results through [`Reporter::result`] and end with [`Reporter::finish`].
pub struct Reporter {
    inner: Arc<Inner>,
    clock: Option<(mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
}

fn style(template: &str) -> ProgressStyle {
    // The templates are constants: a bad one is a bug caught by the tests, not input.
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()).progress_chars("=> ")
}

const ITEM_SIZED: &str = "{prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}";
const ITEM_UNSIZED: &str = "{spinner} {prefix} {bytes} {binary_bytes_per_sec}";
const OVERALL_SIZED: &str = "overall [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}";
const OVERALL_UNSIZED: &str = "overall {msg}, {bytes} {binary_bytes_per_sec}, {elapsed}";

impl Reporter {
    pub fn new(command: &'static str, mode: Mode, interval: Duration) -> Reporter {
        let bars = (mode == Mode::Bars).then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let item = multi.add(ProgressBar::new(0).with_style(style(ITEM_UNSIZED)));
            let overall = multi.add(ProgressBar::new(0).with_style(style(OVERALL_UNSIZED)));
            Bars { multi, item, overall }
        });
        let inner = Arc::new(Inner {
            command,
            mode,
            bytes: AtomicU64::new(0),
            run: Mutex::new(Run::default()),
            bars,
            begun: Instant::now(),
        });
        let period = match mode {
            Mode::Bars => Some(BAR_TICK),
            Mode::Lines | Mode::Json => Some(interval.max(Duration::from_millis(10))),
            Mode::Quiet => None,
        };
        // Without a thread of its own (none could be started), events still print and draw.
        let clock = period.and_then(|period| {
            let (stop, stopped) = mpsc::channel::<()>();
            let inner = inner.clone();
            // Ends when `finish` or drop sends or hangs up: its life is the reporter's.
            let thread = std::thread::Builder::new()
                .name("pullthrough-progress".into())
                .spawn(move || {
                    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(period) {
                        inner.tick();
                    }
                })
                .ok()?;
            Some((stop, thread))
        });
        Reporter { inner, clock }
    }

    /// Every byte reported so far.
    pub fn total_bytes(&self) -> u64 {
        self.inner.bytes.load(Ordering::Relaxed)
    }

    /// One item's result: `human` on stdout, or `json` (with `"event": "result"` added) with
    /// --json; nothing with --quiet.
    pub fn result(&self, human: &str, json: serde_json::Value) {
        match self.inner.mode {
            Mode::Quiet => {}
            Mode::Json => self.inner.json_line("result", json),
            Mode::Lines => outln!("{human}"),
            Mode::Bars => self.inner.suspend(|| outln!("{human}")),
        }
    }

    /// An error about one item, on stderr in every mode (above the bars on a terminal).
    pub fn error(&self, message: &str) {
        self.inner.suspend(|| eprintln!("{message}"));
    }

    /// End the run: stop the clock, clear the bars, and print the summary (`human` on
    /// stdout, or `json` with `"event": "summary"` and the run's byte count added).
    pub fn finish(mut self, human: &str, json: serde_json::Value) {
        self.stop();
        match self.inner.mode {
            Mode::Json => {
                let mut json = json;
                if let Some(o) = json.as_object_mut() {
                    o.entry("bytes").or_insert(self.total_bytes().into());
                    o.insert("elapsed_ms".into(), (self.inner.begun.elapsed().as_millis() as u64).into());
                }
                self.inner.json_line("summary", json);
            }
            _ => outln!("{human}"),
        }
    }

    /// End a run that failed as a whole (the command prints the error, once): stop the
    /// clock and clear the bars; with --json, a last `failed` line with the error.
    pub fn abort(mut self, error: anyhow::Error) -> anyhow::Error {
        self.stop();
        if self.inner.mode == Mode::Json {
            self.inner.json_line("failed", json!({"command": self.inner.command, "error": super::error_text(&error)}));
        }
        error
    }

    fn stop(&mut self) {
        if let Some((stop, thread)) = self.clock.take() {
            let _ = stop.send(());
            let _ = thread.join();
        }
        if let Some(b) = &self.inner.bars {
            b.item.finish_and_clear();
            b.overall.finish_and_clear();
            let _ = b.multi.clear();
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Progress for Reporter {
    fn event(&self, event: Event<'_>) {
        self.inner.event(event);
    }

    fn bytes(&self, n: u64) {
        self.inner.bytes.fetch_add(n, Ordering::Relaxed);
    }
}

impl Inner {
    fn run(&self) -> MutexGuard<'_, Run> {
        // A panic elsewhere while holding the lock leaves counters, not broken invariants.
        self.run.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn suspend(&self, f: impl FnOnce()) {
        match &self.bars {
            Some(b) => b.multi.suspend(f),
            None => f(),
        }
    }

    fn json_line(&self, event: &str, mut v: serde_json::Value) {
        match v.as_object_mut() {
            Some(o) => {
                o.insert("event".into(), event.into());
            }
            None => v = json!({"event": event, "value": v}),
        }
        // One write of one whole line: a reader never sees half an object.
        super::stdout::line(v);
    }

    fn event(&self, event: Event<'_>) {
        let now = self.bytes.load(Ordering::Relaxed);
        let mut run = self.run();
        match event {
            Event::Planned { items, bytes } => {
                // Counts add up: a command may plan a step of its own (unpacking a tar)
                // beside the core's items.
                run.items += items;
                run.total = match (run.total, bytes) {
                    (Some(a), Some(b)) => Some(a + b),
                    (a, b) => a.or(b),
                };
                if self.mode == Mode::Json {
                    self.json_line("plan", json!({"command": self.command, "items": items, "bytes": bytes}));
                }
            }
            Event::Started { name } => {
                run.started += 1;
                run.items = run.items.max(run.started);
                let item = Item {
                    name: name.to_string(),
                    index: run.started,
                    base: now,
                    total: None,
                    started: Instant::now(),
                };
                match self.mode {
                    Mode::Json => self.json_line(
                        "start",
                        json!({"command": self.command, "index": item.index, "items": run.items, "name": name}),
                    ),
                    Mode::Lines => eprintln!("{}: [{}/{}] {name}: started", self.command, item.index, run.items),
                    Mode::Bars | Mode::Quiet => {}
                }
                run.item = Some(item);
            }
            Event::Sized { bytes } => {
                if let Some(item) = run.item.as_mut() {
                    item.total = Some(bytes);
                }
            }
            Event::Finished { name } => {
                // The item's bar at its end, before the next takes its place.
                self.redraw(&run, now);
                run.done += 1;
                if let Some(item) = run.item.take() {
                    self.item_end(&run, &item, now, None);
                } else if self.mode == Mode::Json {
                    self.json_line("done", json!({"command": self.command, "name": name}));
                }
            }
            Event::Failed { name, error } => {
                self.redraw(&run, now);
                run.failed += 1;
                let error = error.to_string();
                match run.item.take() {
                    Some(item) => self.item_end(&run, &item, now, Some(&error)),
                    None => self.suspend(|| eprintln!("{}: {name}: {error}", self.command)),
                }
            }
        }
        self.redraw(&run, now);
    }

    /// An item's last line: done (with its bytes, time and rate) or failed.
    fn item_end(&self, run: &Run, item: &Item, now: u64, error: Option<&str>) {
        let bytes = now - item.base;
        let took = item.started.elapsed();
        let (command, i, n, name) = (self.command, item.index, run.items, &item.name);
        match (self.mode, error) {
            (Mode::Json, None) => self.json_line(
                "done",
                json!({"command": command, "index": i, "items": n, "name": name, "bytes": bytes,
                       "elapsed_ms": took.as_millis() as u64}),
            ),
            (Mode::Json, Some(e)) => self.json_line(
                "failed",
                json!({"command": command, "index": i, "items": n, "name": name, "bytes": bytes, "error": e}),
            ),
            (Mode::Lines, None) => {
                eprintln!(
                    "{command}: [{i}/{n}] {name}: done, {} in {} ({}/s)",
                    HumanBytes(bytes),
                    secs(took),
                    rate(bytes, took)
                )
            }
            (_, Some(e)) => self.suspend(|| eprintln!("{command}: [{i}/{n}] {name}: {e}")),
            (Mode::Bars | Mode::Quiet, None) => {}
        }
    }

    /// Called on the clock: draw the bars, or print a progress line.
    fn tick(&self) {
        let now = self.bytes.load(Ordering::Relaxed);
        let run = self.run();
        match self.mode {
            Mode::Bars => self.redraw(&run, now),
            Mode::Lines => {
                if let Some(line) = self.line(&run, now) {
                    eprintln!("{line}");
                }
            }
            Mode::Json => {
                let item = run.item.as_ref();
                self.json_line(
                    "progress",
                    json!({
                        "command": self.command,
                        "index": item.map(|i| i.index),
                        "items": run.items,
                        "name": item.map(|i| i.name.as_str()),
                        "bytes": item.map(|i| now - i.base),
                        "total": item.and_then(|i| i.total),
                        "run_bytes": now,
                        "run_total": run.total,
                    }),
                );
            }
            Mode::Quiet => {}
        }
    }

    /// A plain progress line: the current item's bytes, share, rate and ETA, and the run's.
    fn line(&self, run: &Run, now: u64) -> Option<String> {
        let item = run.item.as_ref()?;
        let bytes = now - item.base;
        let took = item.started.elapsed();
        let of = match item.total {
            Some(t) if t > 0 => {
                let left = t.saturating_sub(bytes);
                let eta = match bytes {
                    0 => "?".to_string(),
                    b => secs(Duration::from_secs_f64(took.as_secs_f64() * left as f64 / b as f64)),
                };
                format!("/{} ({}%), ETA {eta}", HumanBytes(t), bytes.min(t) * 100 / t)
            }
            _ => String::new(),
        };
        Some(format!(
            "{}: [{}/{}] {}: {}{of}, {}/s; {} of {} done, {} in all",
            self.command,
            item.index,
            run.items,
            item.name,
            HumanBytes(bytes),
            rate(bytes, took),
            run.done,
            run.items,
            HumanBytes(now)
        ))
    }

    /// The bars as of `now` (no-op without a terminal).
    fn redraw(&self, run: &Run, now: u64) {
        let Some(b) = &self.bars else { return };
        match &run.item {
            Some(item) => {
                let prefix = format!("[{}/{}] {}", item.index, run.items, item.name);
                if b.item.prefix() != prefix {
                    b.item.reset();
                    b.item.set_style(style(ITEM_UNSIZED));
                    b.item.unset_length();
                    b.item.set_prefix(prefix);
                }
                match item.total {
                    Some(t) if b.item.length() != Some(t) => {
                        b.item.set_style(style(ITEM_SIZED));
                        b.item.set_length(t);
                        b.item.set_position(now - item.base);
                        // Once per item: the size shows at once, however quick the item
                        // (redraws are otherwise limited to 20 a second).
                        b.item.force_draw();
                    }
                    _ => {}
                }
                b.item.set_position(now - item.base);
            }
            None if b.item.prefix() != "waiting" => {
                b.item.reset();
                b.item.set_style(style(ITEM_UNSIZED));
                b.item.unset_length();
                b.item.set_prefix("waiting");
            }
            None => {}
        }
        if let Some(t) = run.total {
            if b.overall.length() != Some(t) {
                b.overall.set_style(style(OVERALL_SIZED));
                b.overall.set_length(t);
            }
        }
        let failed = if run.failed > 0 { format!(", {} failed", run.failed) } else { String::new() };
        b.overall.set_message(format!("{}/{} done{failed}", run.done, run.items));
        b.overall.set_position(now);
    }
}

fn secs(d: Duration) -> String {
    HumanDuration(d).to_string()
}

fn rate(bytes: u64, took: Duration) -> HumanBytes {
    HumanBytes((bytes as f64 / took.as_secs_f64().max(0.001)) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reporter(mode: Mode) -> Reporter {
        // A long interval: the clock never ticks during a test.
        Reporter::new("test", mode, Duration::from_secs(3600))
    }

    #[test]
    fn a_plain_line_has_bytes_share_rate_eta_and_the_run() {
        let r = reporter(Mode::Quiet);
        r.event(Event::Planned { items: 2, bytes: None });
        r.event(Event::Started { name: "r.io/app:1" });
        r.event(Event::Sized { bytes: 4 << 20 });
        r.bytes(1 << 20);
        let line = r.inner.line(&r.inner.run(), r.total_bytes()).unwrap();
        assert!(line.starts_with("test: [1/2] r.io/app:1: 1.00 MiB/4.00 MiB (25%), ETA "), "{line}");
        assert!(line.ends_with("/s; 0 of 2 done, 1.00 MiB in all"), "{line}");
        assert!(!line.contains('\x1b'), "{line}");
    }

    #[test]
    fn plans_add_up_and_each_item_counts_its_own_bytes() {
        let r = reporter(Mode::Quiet);
        // A command's own step (unpacking a tar), then the core's two images.
        r.event(Event::Planned { items: 1, bytes: Some(10) });
        r.event(Event::Started { name: "a.tar" });
        r.bytes(10);
        r.event(Event::Finished { name: "a.tar" });
        r.event(Event::Planned { items: 2, bytes: None });
        r.event(Event::Started { name: "r.io/app:1" });
        r.bytes(5);
        let run = r.inner.run();
        assert_eq!((run.items, run.done, run.total), (3, 1, Some(10)));
        let item = run.item.as_ref().unwrap();
        assert_eq!((item.index, r.total_bytes() - item.base), (2, 5));
    }

    #[test]
    fn a_failed_item_is_counted_and_the_run_goes_on() {
        let r = reporter(Mode::Quiet);
        r.event(Event::Planned { items: 2, bytes: None });
        r.event(Event::Started { name: "r.io/gone:1" });
        r.event(Event::Failed { name: "r.io/gone:1", error: &"not found" });
        r.event(Event::Started { name: "r.io/app:1" });
        r.event(Event::Finished { name: "r.io/app:1" });
        let run = r.inner.run();
        assert_eq!((run.started, run.done, run.failed), (2, 1, 1));
        assert!(run.item.is_none());
    }
}
