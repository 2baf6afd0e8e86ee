//! Events: what happened in the cache (fills, failures, corruption, eviction, expiry,
//! upstream outages, rate limits), sent as CloudEvents 1.0 to the configured webhooks.
//!
//! A leaf module: it knows `oci` types, metrics, error text and the TLS client setup, and
//! nothing of the layers that report events (core, store, upstream), which call [`emit`].
//!
//! Sending never holds anything up: [`Events::emit`] puts the event on each subscribed
//! webhook's bounded queue with `try_send` and returns; when a queue is full the newest event
//! is dropped and counted (`pullthrough_events_dropped_total`). One task per webhook delivers
//! its queue in order, retrying each event with exponential backoff a bounded number of
//! times ([`webhook`]). Queues live in memory: at a clean shutdown the daemon waits
//! (bounded) for them to drain ([`flush`]); a crash loses what was queued.
//!
//! How the reporting layers reach the handle: a process-wide handle, [`install`]ed once when
//! the daemon starts, and [`emit`] everywhere else (a no-op until installed, so the CLI's
//! offline commands and unit tests send nothing). Injection through each layer's
//! constructor was the alternative; the hooks sit in files that other work changes at the
//! same time (the fill pipeline, eviction, lifecycle, the upstream client) and in code paths
//! shared with the CLI, and a one-line `events::emit(…)` at each is what keeps them small.
//! This is the same choice as `metrics::METRICS`, which every layer counts into.

mod cloudevent;
mod event;
mod kind;
mod webhook;

pub use event::Event;
pub use kind::{EventKind, Kinds, UnknownKind};
pub use webhook::{Mode, WebhookSettings};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::mpsc;

/// Settings for all webhooks (built from `[events]` by `settings::events_settings`).
#[derive(Debug, Clone)]
pub struct EventsSettings {
    /// The CloudEvents `source` attribute: which pullthrough sent it.
    pub source: String,
    pub webhooks: Vec<WebhookSettings>,
}

/// A cheap, cloneable handle that sends events to the webhooks' queues.
#[derive(Clone, Default)]
pub struct Events {
    hooks: Option<Arc<[Hook]>>,
}

struct Hook {
    name: String,
    kinds: Kinds,
    queue: mpsc::Sender<Arc<Event>>,
    /// Events queued or being delivered (for [`Events::flush`]).
    pending: Arc<AtomicUsize>,
}

impl Events {
    /// A handle that sends nothing (no webhook configured).
    pub fn disabled() -> Events {
        Events { hooks: None }
    }

    /// Start one delivery task per webhook. Must be called inside the runtime.
    pub fn start(settings: EventsSettings) -> Events {
        if settings.webhooks.is_empty() {
            return Events::disabled();
        }
        let source: Arc<str> = settings.source.into();
        let hooks: Vec<Hook> = settings
            .webhooks
            .into_iter()
            .map(|w| {
                let (tx, rx) = mpsc::channel(w.queue.max(1));
                let pending = Arc::new(AtomicUsize::new(0));
                let hook = Hook { name: w.name.clone(), kinds: w.kinds, queue: tx, pending: pending.clone() };
                tokio::spawn(webhook::deliver(w, source.clone(), rx, pending));
                hook
            })
            .collect();
        Events { hooks: Some(hooks.into()) }
    }

    pub fn is_enabled(&self) -> bool {
        self.hooks.is_some()
    }

    /// Queue `event` for every webhook that wants its kind; never waits.
    pub fn emit(&self, event: Event) {
        let Some(hooks) = &self.hooks else { return };
        let event = Arc::new(event);
        for h in hooks.iter().filter(|h| h.kinds.contains(event.kind)) {
            // Counted before it is queued, so the worker's decrement never comes first.
            h.pending.fetch_add(1, Ordering::SeqCst);
            if let Err(e) = h.queue.try_send(event.clone()) {
                h.pending.fetch_sub(1, Ordering::SeqCst);
                let reason = match e {
                    mpsc::error::TrySendError::Full(_) => webhook::DropReason::QueueFull,
                    mpsc::error::TrySendError::Closed(_) => webhook::DropReason::Closed,
                };
                webhook::count_drop(&h.name, event.kind, reason);
            }
        }
    }

    /// Wait until every queued event has been delivered or dropped, or `within` has passed
    /// (at shutdown: events of the last moments are not lost to a clean exit).
    pub async fn flush(&self, within: Duration) {
        let Some(hooks) = &self.hooks else { return };
        let deadline = tokio::time::Instant::now() + within;
        while hooks.iter().any(|h| h.pending.load(Ordering::SeqCst) > 0) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

static GLOBAL: OnceLock<Events> = OnceLock::new();

/// Make `events` the process-wide handle [`emit`] sends to. The first call wins; later
/// ones are ignored (returns whether this one was installed).
pub fn install(events: Events) -> bool {
    GLOBAL.set(events).is_ok()
}

/// Send `event` through the process-wide handle (nothing happens before [`install`]).
pub fn emit(event: Event) {
    if let Some(e) = GLOBAL.get() {
        e.emit(event);
    }
}

/// [`Events::flush`] on the process-wide handle.
pub async fn flush(within: Duration) {
    if let Some(e) = GLOBAL.get() {
        e.flush(within).await;
    }
}

/// Whether anything listens: lets a caller skip building an event that costs work.
pub fn enabled() -> bool {
    GLOBAL.get().is_some_and(Events::is_enabled)
}
