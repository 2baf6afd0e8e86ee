//! An upstream's rate-limit budget: what the registry says is left of its pull quota, and how
//! long it asked to be left alone.
//!
//! Read from every answer of the registry:
//! - `RateLimit-Limit` / `RateLimit-Remaining`, in Docker Hub's form (`ratelimit-remaining:
//!   98;w=21600`: 98 left in a 6 h window) and the IETF draft's (`RateLimit-Limit: 100`,
//!   `RateLimit-Remaining: 50`, `RateLimit-Reset: 30`, or the later combined `RateLimit:
//!   "default";r=50;t=30` with `RateLimit-Policy: "default";q=100;w=60`);
//! - `Retry-After` on a 429 or 503, in seconds or as an HTTP-date.
//!
//! What it decides ([`Budget::admit`], [`Budget::standing`]):
//! - while a 429's or 503's `Retry-After` runs (a [`Hold::Told`]), nothing is sent at all;
//! - when the remaining budget reaches 0 (a [`Hold::Spent`]), requests the registry counts
//!   ([`Cost::Counted`]: manifest GETs, which is what Docker Hub counts) are not sent until the
//!   window resets; uncounted ones (HEADs, blobs) still are, and any answer showing budget
//!   again ends the hold early;
//! - below the reserve ([`Standing::Low`]) what is left is kept for tags the cache has: they
//!   are revalidated with a free HEAD, and a tag that moved may fetch its new manifest
//!   ([`Cost::Reserved`]); a counted request for content the cache does not have is not sent.
//!
//! A request not sent fails as `UpstreamError::TooManyRequests` with the time left, which the
//! HTTP layer answers as 429 `TOOMANYREQUESTS` with `Retry-After`, and through which `core`
//! serves cached tags stale.
//!
//! One budget per configured upstream: each `[[upstream]]` has one set of credentials (or
//! none), and the quota is per credential (an anonymous one per address), so this is the
//! budget of that (registry, credential) pair. Two `[[upstream]]` entries for one registry
//! keep two budgets.

use http::{header, HeaderMap, StatusCode};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// When the registry says the budget is spent but not when it comes back (Docker Hub gives
/// only the window's length): the hold lasts the window divided by the limit, the average
/// time a sliding window takes to free one request, within these bounds. HEADs, which Docker
/// Hub answers with the current budget for free, end it sooner when budget is back.
const MIN_GUESS: Duration = Duration::from_secs(1);
const MAX_GUESS: Duration = Duration::from_secs(15 * 60);
/// When nothing at all says how long: a 429 without `Retry-After` or any window.
const DEFAULT_HOLD: Duration = Duration::from_secs(60);
/// Longest `Retry-After` honoured (a broken clock or header must not stop pulls for days).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// A registry's own settings for its budget (part of `UpstreamSettings`, built by
/// `crate::settings` from `[[upstream]]`).
#[derive(Debug, Clone, Copy, Default)]
pub struct BudgetSettings {
    /// Requests of budget kept back: below it, cached tags are revalidated with HEAD only.
    pub reserve: u64,
}

/// Whether the registry counts a request against its quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cost {
    /// A manifest GET (Docker Hub's pull), or a referrers GET, for content the cache does
    /// not have: not sent below the reserve.
    Counted,
    /// A manifest GET for a cached tag that moved upstream: what the reserve is kept for.
    Reserved,
    /// HEADs, blobs, tag lists.
    Uncounted,
}

/// Why requests are held back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// The registry answered 429 (or 503 with `Retry-After`): nothing is sent until it ends.
    Told,
    /// The remaining budget reached 0: counted requests wait for the window to reset.
    Spent,
}

impl Hold {
    /// Why, in words (logs, events).
    pub fn describe(self) -> &'static str {
        match self {
            Hold::Told => "the upstream answered 429 (or 503 with Retry-After): nothing is sent until it ends",
            Hold::Spent => "the upstream's rate-limit budget is spent: manifest GETs wait for its window to reset",
        }
    }
}

/// What the budget allows right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Enough left, or nothing known: ask as usual.
    Open,
    /// Below the reserve: keep what is left for content the cache does not have.
    Low { remaining: u64 },
    /// Held back until `left` has passed.
    Held { hold: Hold, left: Duration },
}

/// What one answer said about the quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Quota {
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    /// The quota's window (`w=`).
    pub window: Option<Duration>,
    /// Time until the window resets (`RateLimit-Reset`, `t=`).
    pub reset: Option<Duration>,
}

impl Quota {
    fn is_empty(&self) -> bool {
        *self == Quota::default()
    }
}

#[derive(Debug, Default)]
struct State {
    limit: Option<u64>,
    remaining: Option<u64>,
    window: Option<Duration>,
    /// When the window resets, when the registry said.
    reset_at: Option<Instant>,
    hold: Option<(Hold, Instant)>,
}

/// One upstream's budget; see the module docs.
#[derive(Debug)]
pub struct Budget {
    host: String,
    reserve: u64,
    state: Mutex<State>,
}

impl Budget {
    pub fn new(host: &str, settings: BudgetSettings) -> Budget {
        Budget { host: host.to_string(), reserve: settings.reserve, state: Mutex::default() }
    }

    /// Learn from an answer of the registry (any status).
    pub fn observe(&self, status: StatusCode, headers: &HeaderMap) {
        self.observe_at(status, headers, Instant::now(), SystemTime::now());
    }

    fn observe_at(&self, status: StatusCode, headers: &HeaderMap, now: Instant, wall: SystemTime) {
        let quota = parse_quota(headers, wall);
        let told = status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE;
        let retry_after = if told { parse_retry_after(headers, wall) } else { None };
        if quota.is_empty() && retry_after.is_none() && status != StatusCode::TOO_MANY_REQUESTS {
            return;
        }
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let was_held = s.hold.filter(|(_, until)| *until > now);
        if !quota.is_empty() {
            s.limit = quota.limit.or(s.limit);
            s.window = quota.window.or(s.window);
            s.remaining = quota.remaining.or(s.remaining);
            s.reset_at = quota.reset.map(|r| now + r);
            // Budget again: a hold for a spent budget is over (a registry's own 429 is not).
            if quota.remaining.is_some_and(|r| r > 0) && matches!(s.hold, Some((Hold::Spent, _))) {
                s.hold = None;
            }
        }
        if let Some(wait) = retry_after {
            s.hold = Some((Hold::Told, now + wait.min(MAX_RETRY_AFTER)));
        } else if status == StatusCode::TOO_MANY_REQUESTS {
            let until = s.reset_at.unwrap_or_else(|| now + s.guess());
            s.hold = Some((Hold::Told, until));
        } else if quota.remaining == Some(0) {
            let until = s.reset_at.unwrap_or_else(|| now + s.guess());
            s.hold = Some((Hold::Spent, until));
        }
        let held = s.hold.filter(|(_, until)| *until > now);
        self.export(&s, now, wall);
        drop(s);
        if let (None, Some((hold, until))) = (was_held, held) {
            let left = until - now;
            tracing::warn!(upstream = %self.host, retry_after_s = left.as_secs(), %status,
                "upstream rate limit reached ({}); cached tags are served from the cache, and uncached content is \
                 answered 429 until the budget is back", hold.describe());
            crate::events::emit(
                crate::events::Event::new(crate::events::EventKind::RateLimited)
                    .upstream(&self.host)
                    .retry_after(left)
                    .cause_text(hold.describe()),
            );
        }
    }

    /// Whether a request of this cost may be sent now; otherwise the time left until it may.
    pub fn admit(&self, cost: Cost) -> Result<(), Duration> {
        self.admit_at(cost, Instant::now())
    }

    fn admit_at(&self, cost: Cost, now: Instant) -> Result<(), Duration> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match s.hold {
            Some((_, until)) if until <= now => {
                s.hold = None;
                // The window reset: what was left before says nothing any more.
                s.remaining = None;
                Ok(())
            }
            Some((Hold::Told, until)) => Err(left(until, now)),
            Some((Hold::Spent, until)) if cost != Cost::Uncounted => Err(left(until, now)),
            Some(_) => Ok(()),
            // Below the reserve: until the window resets (or, not told when, about one
            // request's share of it), content the cache does not have waits.
            None if cost == Cost::Counted && self.is_low(&s, now) => {
                Err(left(s.reset_at.unwrap_or_else(|| now + s.guess()), now))
            }
            None => Ok(()),
        }
    }

    /// Whether the last answer left less than the reserve, in a window not reset since.
    fn is_low(&self, s: &State, now: Instant) -> bool {
        let reset = s.reset_at.is_some_and(|r| r <= now) || s.hold.is_some();
        s.remaining.is_some_and(|r| r < self.reserve) && !reset
    }

    /// What the budget allows right now.
    pub fn standing(&self) -> Standing {
        self.standing_at(Instant::now())
    }

    fn standing_at(&self, now: Instant) -> Standing {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((hold, until)) = s.hold.filter(|(_, until)| *until > now) {
            return Standing::Held { hold, left: left(until, now) };
        }
        match s.remaining {
            Some(r) if self.is_low(&s, now) => Standing::Low { remaining: r },
            _ => Standing::Open,
        }
    }

    /// For `/readyz`: what is known, in plain values.
    pub fn describe(&self) -> serde_json::Value {
        let standing = self.standing();
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (state, retry_after) = match standing {
            Standing::Open => ("open", None),
            Standing::Low { .. } => ("low", None),
            Standing::Held { hold: Hold::Told, left } => ("held", Some(left.as_secs().max(1))),
            Standing::Held { hold: Hold::Spent, left } => ("spent", Some(left.as_secs().max(1))),
        };
        serde_json::json!({
            "state": state,
            "limit": s.limit,
            "remaining": s.remaining,
            "reserve": self.reserve,
            "retry_after_seconds": retry_after,
        })
    }

    /// Mirror the state in the gauges.
    fn export(&self, s: &State, now: Instant, wall: SystemTime) {
        let m = &crate::metrics::METRICS;
        if let Some(r) = s.remaining {
            m.upstream_ratelimit_remaining.with_label_values(&[&self.host]).set(r.min(i64::MAX as u64) as i64);
        }
        let until = match s.hold {
            Some((_, until)) => Some(until),
            None => s.reset_at,
        };
        let ts = until
            .map(|u| wall + u.saturating_duration_since(now))
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs() as i64);
        m.upstream_ratelimit_reset.with_label_values(&[&self.host]).set(ts);
    }
}

impl State {
    /// How long a spent budget is held when the registry did not say (see `MIN_GUESS`).
    fn guess(&self) -> Duration {
        match (self.window, self.limit) {
            (Some(w), Some(l)) if l > 0 => (w / l.min(u32::MAX as u64) as u32).clamp(MIN_GUESS, MAX_GUESS),
            (Some(w), _) => w.clamp(MIN_GUESS, MAX_GUESS),
            _ => DEFAULT_HOLD,
        }
    }
}

fn left(until: Instant, now: Instant) -> Duration {
    until.saturating_duration_since(now).max(Duration::from_secs(1))
}

/// The quota an answer announces, in any of the forms the module docs list.
pub fn parse_quota(h: &HeaderMap, wall: SystemTime) -> Quota {
    let mut q = Quota::default();
    let text = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
    if let Some(v) = text("ratelimit-limit") {
        let f = Fields::parse(v);
        q.limit = f.first.or(f.get(&["q", "limit"]));
        q.window = f.get(&["w"]).map(Duration::from_secs);
    }
    if let Some(v) = text("ratelimit-remaining") {
        let f = Fields::parse(v);
        q.remaining = f.first.or(f.get(&["r", "remaining"]));
        q.window = q.window.or(f.get(&["w"]).map(Duration::from_secs));
    }
    if let Some(v) = text("ratelimit-reset") {
        q.reset = Fields::parse(v).first.map(|n| reset_duration(n, wall));
    }
    if let Some(v) = text("ratelimit-policy") {
        let f = Fields::parse(v);
        q.limit = q.limit.or(f.first).or(f.get(&["q", "limit"]));
        q.window = q.window.or(f.get(&["w"]).map(Duration::from_secs));
    }
    // The later drafts' single field: `"default";r=50;t=30`, or `limit=100, remaining=50, reset=30`.
    if let Some(v) = text("ratelimit") {
        let f = Fields::parse(v);
        q.remaining = q.remaining.or(f.get(&["r", "remaining"]));
        q.limit = q.limit.or(f.get(&["limit"]));
        q.reset = q.reset.or(f.get(&["t", "reset"]).map(|n| reset_duration(n, wall)));
    }
    q
}

/// A reset given as seconds, or (as some registries do) as a Unix time.
fn reset_duration(n: u64, wall: SystemTime) -> Duration {
    const EPOCH_LIKE: u64 = 1_000_000_000;
    if n >= EPOCH_LIKE {
        (UNIX_EPOCH + Duration::from_secs(n)).duration_since(wall).unwrap_or_default()
    } else {
        Duration::from_secs(n)
    }
}

/// A header value's leading number and its `key=value` parameters.
struct Fields<'a> {
    first: Option<u64>,
    params: Vec<(&'a str, &'a str)>,
}

impl<'a> Fields<'a> {
    fn parse(v: &'a str) -> Fields<'a> {
        let first = v.split([';', ',']).next().and_then(|p| p.trim().parse().ok());
        let params = v
            .split([';', ','])
            .filter_map(|p| p.split_once('='))
            .map(|(k, val)| (k.trim(), val.trim().trim_matches('"')))
            .collect();
        Fields { first, params }
    }

    fn get(&self, keys: &[&str]) -> Option<u64> {
        self.params
            .iter()
            .find(|(k, _)| keys.iter().any(|w| k.eq_ignore_ascii_case(w)))
            .and_then(|(_, v)| v.parse().ok())
    }
}

/// `Retry-After`: delta-seconds, or an HTTP-date (IMF-fixdate) from which the wait is taken.
pub fn parse_retry_after(h: &HeaderMap, wall: SystemTime) -> Option<Duration> {
    let v = h.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = parse_http_date(v)?;
    Some(at.duration_since(wall).unwrap_or_default())
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form RFC 9110 requires senders to use.
fn parse_http_date(v: &str) -> Option<SystemTime> {
    let (_, rest) = v.split_once(", ")?;
    let mut it = rest.split(' ');
    let day: u64 = it.next()?.parse().ok()?;
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = it.next()?;
    let month = MONTHS.iter().position(|m| *m == month)? as u64 + 1;
    let year: u64 = it.next()?.parse().ok()?;
    let mut hms = it.next()?.split(':').map(|p| p.parse::<u64>().ok());
    let (hh, mm, ss) = (hms.next()??, hms.next()??, hms.next()??);
    if it.next()? != "GMT" || !(1..=31).contains(&day) || year < 1970 || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(UNIX_EPOCH + Duration::from_secs(days * 86_400 + hh * 3600 + mm * 60 + ss))
}

/// Days since 1970-01-01 of a Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn parses_docker_hub_headers() {
        let q = parse_quota(
            &headers(&[("ratelimit-limit", "100;w=21600"), ("ratelimit-remaining", "98;w=21600")]),
            SystemTime::now(),
        );
        assert_eq!(
            q,
            Quota { limit: Some(100), remaining: Some(98), window: Some(Duration::from_secs(21600)), reset: None }
        );
    }

    #[test]
    fn parses_ietf_draft_headers() {
        let now = SystemTime::now();
        let q = parse_quota(
            &headers(&[("RateLimit-Limit", "10"), ("RateLimit-Remaining", "0"), ("RateLimit-Reset", "30")]),
            now,
        );
        assert_eq!((q.limit, q.remaining, q.reset), (Some(10), Some(0), Some(Duration::from_secs(30))));
        let q = parse_quota(
            &headers(&[("RateLimit", "\"default\";r=50;t=7"), ("RateLimit-Policy", "\"default\";q=100;w=60")]),
            now,
        );
        assert_eq!(
            q,
            Quota {
                limit: Some(100),
                remaining: Some(50),
                window: Some(Duration::from_secs(60)),
                reset: Some(Duration::from_secs(7))
            }
        );
        let q = parse_quota(&headers(&[("RateLimit", "limit=10, remaining=3, reset=4")]), now);
        assert_eq!((q.limit, q.remaining, q.reset), (Some(10), Some(3), Some(Duration::from_secs(4))));
        assert_eq!(parse_quota(&headers(&[("RateLimit-Remaining", "lots")]), now), Quota::default());
    }

    #[test]
    fn parses_retry_after_in_seconds_and_as_a_date() {
        let wall = UNIX_EPOCH + Duration::from_secs(784111777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after(&headers(&[("retry-after", "120")]), wall), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after(&headers(&[("retry-after", "Sun, 06 Nov 1994 08:50:07 GMT")]), wall),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after(&headers(&[("retry-after", "Sun, 06 Nov 1994 08:00:00 GMT")]), wall),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(UNIX_EPOCH));
        assert_eq!(
            parse_http_date("Tue, 29 Feb 2028 23:59:59 GMT"),
            Some(UNIX_EPOCH + Duration::from_secs(1835481599))
        );
        for bad in [
            "soon",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 25:00:00 GMT",
            "",
        ] {
            assert_eq!(parse_retry_after(&headers(&[("retry-after", bad)]), wall), None, "{bad:?}");
        }
    }

    #[test]
    fn a_spent_budget_holds_counted_requests_until_budget_shows_again() {
        let b = Budget::new("hub.test", BudgetSettings { reserve: 10 });
        let (now, wall) = (Instant::now(), SystemTime::now());
        assert_eq!(b.standing_at(now), Standing::Open);
        b.observe_at(StatusCode::OK, &headers(&[("ratelimit-remaining", "50;w=21600")]), now, wall);
        assert_eq!(b.standing_at(now), Standing::Open);
        b.observe_at(StatusCode::OK, &headers(&[("ratelimit-remaining", "9;w=21600")]), now, wall);
        assert_eq!(b.standing_at(now), Standing::Low { remaining: 9 });
        // Below the reserve: uncached content waits (no limit known, so the window, capped);
        // a cached tag that moved may fetch its new manifest.
        assert_eq!(b.admit_at(Cost::Counted, now), Err(MAX_GUESS));
        assert_eq!(b.admit_at(Cost::Reserved, now), Ok(()));
        assert_eq!(b.admit_at(Cost::Uncounted, now), Ok(()));
        b.observe_at(
            StatusCode::OK,
            &headers(&[("ratelimit-limit", "100;w=21600"), ("ratelimit-remaining", "0;w=21600")]),
            now,
            wall,
        );
        // 21600 s / 100 requests: one frees every 216 s on average.
        assert_eq!(b.admit_at(Cost::Counted, now), Err(Duration::from_secs(216)));
        assert_eq!(b.admit_at(Cost::Uncounted, now), Ok(()));
        assert!(matches!(b.standing_at(now), Standing::Held { hold: Hold::Spent, .. }));
        // A HEAD shows budget again.
        b.observe_at(StatusCode::OK, &headers(&[("ratelimit-remaining", "40;w=21600")]), now, wall);
        assert_eq!(b.admit_at(Cost::Counted, now), Ok(()));
        assert_eq!(b.standing_at(now), Standing::Open);
    }

    #[test]
    fn retry_after_holds_everything_until_it_ends() {
        let b = Budget::new("hub.test", BudgetSettings { reserve: 0 });
        let (now, wall) = (Instant::now(), SystemTime::now());
        b.observe_at(StatusCode::TOO_MANY_REQUESTS, &headers(&[("retry-after", "30")]), now, wall);
        assert_eq!(b.admit_at(Cost::Uncounted, now), Err(Duration::from_secs(30)));
        assert_eq!(b.admit_at(Cost::Counted, now + Duration::from_secs(10)), Err(Duration::from_secs(20)));
        // Budget shown in another answer does not end what the registry told.
        b.observe_at(StatusCode::OK, &headers(&[("ratelimit-remaining", "5")]), now, wall);
        assert!(b.admit_at(Cost::Counted, now + Duration::from_secs(29)).is_err());
        assert_eq!(b.admit_at(Cost::Counted, now + Duration::from_secs(31)), Ok(()));
        assert_eq!(b.standing_at(now + Duration::from_secs(31)), Standing::Open);
        // A 503 without Retry-After is an outage, not a rate limit.
        b.observe_at(StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new(), now, wall);
        assert_eq!(b.admit_at(Cost::Counted, now + Duration::from_secs(32)), Ok(()));
        // A 429 without Retry-After waits for the reset the registry announced.
        b.observe_at(
            StatusCode::TOO_MANY_REQUESTS,
            &headers(&[("ratelimit-remaining", "0"), ("ratelimit-reset", "5")]),
            now,
            wall,
        );
        assert_eq!(b.admit_at(Cost::Uncounted, now), Err(Duration::from_secs(5)));
    }
}
