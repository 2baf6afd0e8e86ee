//! When a client connection is idle: no request in flight (from the moment the service is
//! called until its response body ends) since it opened or since its last response ended.
//! The server closes a connection idle for `[server] idle_timeout`, whatever it is doing
//! meanwhile: sending nothing at all, trickling a protocol preface or request headers,
//! keeping an HTTP/1.1 keep-alive or an HTTP/2 connection (PINGs included) open between
//! requests. hyper's own header timeout cannot do this: hyper-util's auto builder reads the
//! protocol preface without any timeout, and HTTP/2 has no idle timeout at all.

use super::tracked::{Ending, OnEnd};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
struct State {
    in_flight: usize,
    idle_since: Instant,
}

/// One connection's requests in flight and its idle clock.
pub struct Activity(watch::Sender<State>);

/// A request in flight on a connection; it ends when this is dropped.
pub struct InFlight(Arc<Activity>);

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity(watch::Sender::new(State { in_flight: 0, idle_since: Instant::now() })))
    }

    /// A request starts: the connection is busy until the guard drops (keep it with the
    /// response body).
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.0.send_modify(|s| s.in_flight += 1);
        InFlight(self.clone())
    }

    /// Resolves once no request has been in flight for `d`, counting from `since` at the
    /// earliest.
    pub async fn idle_for(&self, d: Duration, since: Instant) {
        let mut rx = self.0.subscribe();
        loop {
            let s = *rx.borrow_and_update();
            if s.in_flight > 0 {
                // The sender lives in `self`, so this cannot fail while we are borrowed.
                let _ = rx.changed().await;
                continue;
            }
            let deadline = s.idle_since.max(since) + d;
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return,
                _ = rx.changed() => {}
            }
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0 .0.send_modify(|s| {
            s.in_flight = s.in_flight.saturating_sub(1);
            if s.in_flight == 0 {
                s.idle_since = Instant::now();
            }
        });
    }
}

/// Carried by the response body: the request ends with it, however it ends.
impl OnEnd for InFlight {
    fn on_end(self, _: Ending, _: u64, _: Instant) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    // Paused time: the clock moves only when every task waits on a timer, so the checks
    // below are exact, not a race with a loaded machine.
    #[tokio::test(start_paused = true)]
    async fn idle_counts_from_the_last_request_and_waits_for_requests_in_flight() {
        let ms = Duration::from_millis;
        let a = Activity::new();
        let t0 = Instant::now();
        a.idle_for(ms(100), t0).await;
        assert_eq!(t0.elapsed(), ms(100));

        let guard = a.begin();
        let idle = tokio::spawn({
            let a = a.clone();
            async move { a.idle_for(ms(100), Instant::now()).await }
        });
        tokio::time::sleep(ms(400)).await;
        assert!(!idle.is_finished(), "idle while a request was in flight");
        let ended = Instant::now();
        drop(guard);
        idle.await.unwrap();
        assert_eq!(ended.elapsed(), ms(100));
    }
}
