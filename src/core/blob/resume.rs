//! A fill survives its source: when a body breaks off mid-stream (a reset, a truncation, a
//! stall, a source slower than the floor), the fill reads on from the next source at the byte
//! it received (`Range: bytes=<received>-`, checked by `range`), and the pipeline's hash
//! runs on over the same byte sequence, so followers never see the break. The final digest
//! check stays the one gate for the last byte: a resumed source that sent other bytes fails
//! the fill, and nothing is committed or released.
//!
//! Attempts are bounded per fill (`[cache] fill_resume_attempts`) and each one is counted in
//! `pullthrough_fill_resumes_total{tier,reason}`. A peer or the shared tier that delivers less
//! than `[cache] slow_source_floor` over `slow_source_window` counts as broken (`Pace`), so
//! one slow node does not hold its subtree; the upstream, the source of last resort, is held
//! to its read timeout only (a slow upstream is slow from every node).

use super::fill::FillError;
use super::range::At;
use super::source::{SourceBody, Tier};
use futures_util::future::BoxFuture;
use std::time::Duration;
use tokio::time::Instant;

/// How a fill resumes: parsed from `[cache]` at the edge.
#[derive(Debug, Clone, Copy)]
pub struct ResumePolicy {
    /// Resumes per fill; `0`: a break fails the fill.
    pub attempts: u32,
    /// Bytes per second below which a peer or bucket read counts as broken; `0`: off.
    pub slow_floor: u64,
    /// The window the floor is measured over.
    pub slow_window: Duration,
}

impl Default for ResumePolicy {
    fn default() -> Self {
        ResumePolicy { attempts: 3, slow_floor: 1 << 20, slow_window: Duration::from_secs(10) }
    }
}

/// Why a source's body stopped before the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Break {
    /// The transfer failed: a reset, a broken connection, or one closed before the
    /// announced length (hyper reports that as a failed transfer).
    Reset,
    /// The body ended without an error before the size it announced.
    Truncated,
    /// No data for the source's idle timeout.
    Stalled,
    /// Less than the floor over a window.
    Slow,
}

impl Break {
    pub fn as_str(self) -> &'static str {
        match self {
            Break::Reset => "reset",
            Break::Truncated => "truncated",
            Break::Stalled => "stalled",
            Break::Slow => "slow",
        }
    }
}

/// The source that broke, as the next open needs to know it (to skip that peer, or the bucket).
#[derive(Debug, Clone)]
pub struct Broken {
    pub tier: Tier,
    pub from: String,
    pub why: Break,
}

/// Opens the next source of a blob at a byte: the fill's tiers in order (see
/// `source::TierSources`), or a test's list of bodies.
pub trait Reopen: Send {
    fn open_at<'a>(&'a mut self, at: At, broken: &'a Broken) -> BoxFuture<'a, Result<SourceBody, FillError>>;
}

/// A fill's resumes: what opens the next source, and the attempts left.
pub struct Resume {
    reopen: Box<dyn Reopen>,
    policy: ResumePolicy,
    used: u32,
}

impl Resume {
    pub fn new(reopen: Box<dyn Reopen>, policy: ResumePolicy) -> Resume {
        Resume { reopen, policy, used: 0 }
    }

    pub fn policy(&self) -> &ResumePolicy {
        &self.policy
    }

    /// The next source, from `at` on, after `broken`; `None` once the attempts are spent
    /// (every attempt counts, whether or not a source answered).
    pub async fn next(&mut self, at: At, broken: &Broken) -> Option<SourceBody> {
        while self.used < self.policy.attempts {
            self.used += 1;
            crate::metrics::METRICS.fill_resumes.with_label_values(&[broken.tier.as_str(), broken.why.as_str()]).inc();
            tracing::warn!(
                tier = broken.tier.as_str(), source = %broken.from, reason = broken.why.as_str(),
                received = at.received, attempt = self.used, of = self.policy.attempts,
                "blob source broke off; resuming at the byte received from the next source"
            );
            match self.reopen.open_at(at, broken).await {
                Ok(body) => return Some(body),
                Err(e) => {
                    let error = crate::error_text::error_chain(&e);
                    tracing::warn!(received = at.received, %error, "no source could resume the fill");
                }
            }
        }
        None
    }
}

/// A source's pace over the current window, against the floor.
#[derive(Debug)]
pub struct Pace {
    floor: u64,
    window: Duration,
    since: Instant,
    bytes: u64,
}

impl Pace {
    /// The pace a body from `tier` is held to under `policy`: none for the upstream (the
    /// source of last resort) and the local disk, or with the floor off.
    pub fn of(tier: Tier, policy: &ResumePolicy) -> Option<Pace> {
        let held = matches!(tier, Tier::Peer | Tier::Shared) && policy.slow_floor > 0 && !policy.slow_window.is_zero();
        held.then(|| Pace { floor: policy.slow_floor, window: policy.slow_window, since: Instant::now(), bytes: 0 })
    }

    /// When the current window ends.
    pub fn deadline(&self) -> Instant {
        self.since + self.window
    }

    pub fn add(&mut self, bytes: usize) {
        self.bytes += bytes as u64;
    }

    /// At the deadline: the bytes of the window if they fell below the floor; a new window
    /// starts either way.
    pub fn below_floor(&mut self) -> Option<u64> {
        let wanted = (self.floor as f64 * self.window.as_secs_f64()) as u64;
        let got = std::mem::take(&mut self.bytes);
        self.since = Instant::now();
        (got < wanted).then_some(got)
    }

    pub fn slow(&self, tier: Tier, from: &str, bytes: u64) -> FillError {
        FillError::Slow { tier, from: from.to_string(), bytes, floor: self.floor, window: self.window }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::blob::pipeline::{Mismatch, VerifiedBody};
    use crate::oci::Digest;
    use crate::upstream::UpstreamError;
    use bytes::Bytes;
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    const IDLE: Duration = Duration::from_secs(30);

    /// The next sources, handed out in turn; records where each was asked to start.
    struct Listed {
        next: VecDeque<SourceBody>,
        asked: Arc<Mutex<Vec<(At, Tier, Break)>>>,
    }

    impl Reopen for Listed {
        fn open_at<'a>(&'a mut self, at: At, broken: &'a Broken) -> BoxFuture<'a, Result<SourceBody, FillError>> {
            self.asked.lock().unwrap().push((at, broken.tier, broken.why));
            let next = self.next.pop_front();
            Box::pin(
                async move { next.ok_or(FillError::Upstream(UpstreamError::NotFound { host: "listed.test".into() })) },
            )
        }
    }

    fn blob() -> Vec<Bytes> {
        (0..8u8).map(|i| Bytes::from(vec![i; 1000 + i as usize])).collect()
    }

    fn len(c: &[Bytes]) -> u64 {
        c.iter().map(|b| b.len() as u64).sum()
    }

    fn reset() -> FillError {
        FillError::Upstream(UpstreamError::Transfer { host: "test".into(), message: "connection reset".into() })
    }

    /// `chunks` from `tier`, then `end`: a reset, or (None) a clean end.
    fn body(tier: Tier, chunks: &[Bytes], end: Option<FillError>, total: Option<u64>) -> SourceBody {
        let mut items: Vec<_> = chunks.iter().cloned().map(Ok).collect();
        items.extend(end.map(Err));
        SourceBody::from_items(tier, items, total, false, IDLE)
    }

    fn policy(attempts: u32) -> ResumePolicy {
        ResumePolicy { attempts, ..ResumePolicy::default() }
    }

    type Asked = Arc<Mutex<Vec<(At, Tier, Break)>>>;

    fn resumable(first: SourceBody, next: Vec<SourceBody>, policy: ResumePolicy) -> (SourceBody, Asked) {
        let asked = Asked::default();
        let listed = Listed { next: next.into(), asked: asked.clone() };
        (first.resumable(Resume::new(Box::new(listed), policy)), asked)
    }

    /// Every chunk released, and how the body ended.
    async fn read_all(body: SourceBody, digest: &Digest) -> (Vec<u8>, Result<Tier, FillError>) {
        let mut v = VerifiedBody::new(body, digest).unwrap();
        let mut got = Vec::new();
        loop {
            match v.next().await {
                Ok(Some(c)) => got.extend_from_slice(&c),
                Ok(None) => return (got, Ok(v.tier())),
                Err(e) => return (got, Err(e)),
            }
        }
    }

    #[tokio::test]
    async fn a_peer_that_resets_is_resumed_at_the_byte_from_the_next_source_and_the_hash_runs_on() {
        let c = blob();
        let (total, digest) = (len(&c), Digest::of_bytes(&c.concat()));
        let first = body(Tier::Peer, &c[..3], Some(reset()), Some(total));
        let rest = body(Tier::Upstream, &c[3..], None, Some(total));
        let (b, asked) = resumable(first, vec![rest], policy(3));
        let (got, end) = read_all(b, &digest).await;
        assert_eq!(end.unwrap(), Tier::Upstream);
        assert_eq!(got, c.concat());
        let at = At { received: len(&c[..3]), total: Some(total) };
        assert_eq!(*asked.lock().unwrap(), vec![(at, Tier::Peer, Break::Reset)]);
    }

    #[tokio::test]
    async fn a_truncated_body_is_resumed_and_one_of_unknown_size_cannot_be() {
        let c = blob();
        let (total, digest) = (len(&c), Digest::of_bytes(&c.concat()));
        let first = body(Tier::Upstream, &c[..5], None, Some(total));
        let rest = body(Tier::Upstream, &c[5..], None, Some(total));
        let (b, asked) = resumable(first, vec![rest], policy(3));
        let (got, end) = read_all(b, &digest).await;
        end.unwrap();
        assert_eq!(got, c.concat());
        let at = At { received: len(&c[..5]), total: Some(total) };
        assert_eq!(*asked.lock().unwrap(), vec![(at, Tier::Upstream, Break::Truncated)]);
        // Without a size a short body looks complete: the digest check fails it.
        let (b, asked) = resumable(body(Tier::Upstream, &c[..5], None, None), vec![], policy(3));
        let (_, end) = read_all(b, &digest).await;
        assert!(matches!(end, Err(FillError::Verification { mismatch: Mismatch::Digest { .. }, .. })), "{end:?}");
        assert!(asked.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn resumes_are_bounded_and_the_last_break_fails_the_body() {
        let c = blob();
        let (total, digest) = (len(&c), Digest::of_bytes(&c.concat()));
        // Every source sends one chunk more, then resets: three resumes, then the error.
        let first = body(Tier::Upstream, &c[..1], Some(reset()), Some(total));
        let next = (1..5).map(|i| body(Tier::Upstream, &c[i..i + 1], Some(reset()), Some(total))).collect();
        let (b, asked) = resumable(first, next, policy(3));
        let (got, end) = read_all(b, &digest).await;
        assert!(matches!(end, Err(FillError::Upstream(UpstreamError::Transfer { .. }))), "{end:?}");
        let starts: Vec<u64> = asked.lock().unwrap().iter().map(|(at, _, _)| at.received).collect();
        assert_eq!(starts, vec![len(&c[..1]), len(&c[..2]), len(&c[..3])]);
        // The pipeline held the last chunk it had back.
        assert_eq!(got, c[..3].concat());
        // Without attempts, a break fails at once.
        let (b, asked) = resumable(body(Tier::Upstream, &c[..1], Some(reset()), Some(total)), vec![], policy(0));
        let (_, end) = read_all(b, &digest).await;
        assert!(end.is_err());
        assert!(asked.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn bytes_from_a_resumed_source_that_do_not_hash_never_release_the_last_chunk() {
        let c = blob();
        let (total, digest) = (len(&c), Digest::of_bytes(&c.concat()));
        let mut bad = c.clone();
        bad[6] = Bytes::from(vec![0xee; bad[6].len()]);
        let first = body(Tier::Peer, &c[..3], Some(reset()), Some(total));
        let (b, _) = resumable(first, vec![body(Tier::Upstream, &bad[3..], None, Some(total))], policy(3));
        let (got, end) = read_all(b, &digest).await;
        assert!(matches!(end, Err(FillError::Verification { mismatch: Mismatch::Digest { .. }, .. })), "{end:?}");
        assert_eq!(got, bad[..7].concat(), "the held-back last chunk was released");
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_below_the_floor_is_resumed_elsewhere_but_the_upstream_is_not_dropped_for_pace() {
        let c = blob();
        let (total, digest) = (len(&c), Digest::of_bytes(&c.concat()));
        let slow = ResumePolicy { attempts: 3, slow_floor: 1 << 20, slow_window: Duration::from_secs(10) };
        // A peer that sends two chunks, then nothing (well within its idle timeout).
        let items = c[..2].iter().cloned().map(Ok).collect();
        let first = SourceBody::from_items(Tier::Peer, items, Some(total), true, Duration::from_secs(3600));
        let (b, asked) = resumable(first, vec![body(Tier::Upstream, &c[2..], None, Some(total))], slow);
        let (got, end) = read_all(b, &digest).await;
        assert_eq!(end.unwrap(), Tier::Upstream);
        assert_eq!(got, c.concat());
        let at = At { received: len(&c[..2]), total: Some(total) };
        assert_eq!(*asked.lock().unwrap(), vec![(at, Tier::Peer, Break::Slow)]);
        // The same silence from the upstream is a stall, after its idle timeout, not a pace.
        let items = c[..2].iter().cloned().map(Ok).collect();
        let first = SourceBody::from_items(Tier::Upstream, items, Some(total), true, Duration::from_secs(3600));
        let (b, asked) = resumable(first, vec![body(Tier::Upstream, &c[2..], None, Some(total))], slow);
        let (_, end) = read_all(b, &digest).await;
        end.unwrap();
        assert_eq!(*asked.lock().unwrap(), vec![(at, Tier::Upstream, Break::Stalled)]);
    }
}
