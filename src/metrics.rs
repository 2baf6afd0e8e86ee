//! Prometheus metrics: the few that tell an operator what the cache is doing.
//!
//! One process-wide registry (`METRICS`), so every layer can count without threading a
//! handle through; gauges that mirror state (cache size, fills in flight) are set when
//! `/metrics` is scraped rather than on every change.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::LazyLock;

pub struct Metrics {
    pub registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub cache_requests: IntCounterVec,
    pub cache_bytes: IntCounterVec,
    pub upstream_requests: IntCounterVec,
    pub upstream_duration: HistogramVec,
    pub upstream_errors: IntCounterVec,
    pub fill_verification_failures: IntCounterVec,
    pub fills_joined: IntCounter,
    pub follow_bytes: IntCounterVec,
    pub fills_in_flight: IntGauge,
    pub uncached_blobs: IntCounterVec,
    pub evictions: IntCounter,
    pub evicted_bytes: IntCounter,
    pub cache_size_bytes: IntGauge,
    pub cache_blobs: IntGauge,
    pub cache_budget_bytes: IntGauge,
    pub token_refreshes: IntCounterVec,
    pub token_forced_refreshes: IntCounterVec,
    pub token_refreshes_suppressed: IntCounterVec,
    pub stale_serves: IntCounterVec,
    pub vouch_checks: IntCounterVec,
    pub upstream_up: IntGaugeVec,
    pub upstream_ratelimit_remaining: IntGaugeVec,
    pub upstream_ratelimit_reset: IntGaugeVec,
    pub upstream_ratelimit_held: IntCounterVec,
    pub tag_refreshes: IntCounterVec,
    pub tier_requests: IntCounterVec,
    pub tier_bytes: IntCounterVec,
    pub tier_verification_failures: IntCounterVec,
    pub fill_resumes: IntCounterVec,
    pub shared_uploads: IntCounterVec,
    pub shared_up: IntGauge,
    pub peer_requests: IntCounterVec,
    pub peer_streams: IntGauge,
    pub peer_streams_peak: IntGauge,
    pub peer_referrals: IntCounterVec,
    pub peer_sent_bytes: IntCounter,
    pub build_info: IntGaugeVec,
    pub scrub_bytes: IntCounter,
    pub corruptions_found: IntCounterVec,
    pub corruptions_repaired: IntCounter,
    pub events_sent: IntCounterVec,
    pub events_dropped: IntCounterVec,
    pub events_retries: IntCounterVec,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn histogram(r: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let buckets = vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels).expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn plain_counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let r = Registry::new();
    let build_info =
        IntGaugeVec::new(Opts::new("pullthrough_build_info", "Build information; always 1."), &["version"])
            .expect("valid metric");
    r.register(Box::new(build_info.clone())).expect("unique metric");
    build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    Metrics {
        http_requests: counter(
            &r,
            "pullthrough_http_requests_total",
            "Client requests by route kind, method and status.",
            &["route", "method", "status"],
        ),
        http_duration: histogram(
            &r,
            "pullthrough_http_request_duration_seconds",
            "Time to response headers, by route kind.",
            &["route"],
        ),
        cache_requests: counter(
            &r,
            "pullthrough_cache_requests_total",
            "Blob and manifest requests by upstream, kind and result (hit, miss, uncached).",
            &["upstream", "kind", "result"],
        ),
        cache_bytes: counter(
            &r,
            "pullthrough_cache_served_bytes_total",
            "Blob bytes served by upstream and result (hit, miss, uncached).",
            &["upstream", "result"],
        ),
        upstream_requests: counter(
            &r,
            "pullthrough_upstream_requests_total",
            "Requests to upstreams by upstream, method and status.",
            &["upstream", "method", "status"],
        ),
        upstream_duration: histogram(
            &r,
            "pullthrough_upstream_request_duration_seconds",
            "Upstream time to response headers.",
            &["upstream"],
        ),
        upstream_errors: counter(
            &r,
            "pullthrough_upstream_errors_total",
            "Upstream requests that failed without a response, by kind (connect, timeout, transfer).",
            &["upstream", "kind"],
        ),
        fill_verification_failures: counter(
            &r,
            "pullthrough_fill_verification_failures_total",
            "Blob fills discarded because the bytes did not match the digest or size.",
            &["upstream"],
        ),
        follow_bytes: counter(
            &r,
            "pullthrough_follow_bytes_total",
            "Blob bytes sent to clients, by where they were read: memory (a running fill's recent chunks), fill_file (a running fill's temp file, for a client behind them), blob (a verified blob's file).",
            &["from"],
        ),
        fills_joined: plain_counter(
            &r,
            "pullthrough_fill_joins_total",
            "Requests that joined a blob fill already in progress instead of fetching again.",
        ),
        fills_in_flight: gauge(&r, "pullthrough_fills_in_flight", "Blob fills in progress."),
        uncached_blobs: counter(
            &r,
            "pullthrough_uncached_blobs_total",
            "Blobs relayed without caching because the cache had no room.",
            &["upstream"],
        ),
        evictions: plain_counter(
            &r,
            "pullthrough_evictions_total",
            "Blobs evicted to keep the cache within its budget.",
        ),
        evicted_bytes: plain_counter(
            &r,
            "pullthrough_evicted_bytes_total",
            "Bytes evicted to keep the cache within its budget.",
        ),
        cache_size_bytes: gauge(&r, "pullthrough_cache_size_bytes", "Bytes of committed blobs in the cache."),
        cache_blobs: gauge(&r, "pullthrough_cache_blobs", "Committed blobs in the cache."),
        cache_budget_bytes: gauge(&r, "pullthrough_cache_budget_bytes", "The configured max_size (0: no size cap)."),
        token_refreshes: counter(
            &r,
            "pullthrough_token_refreshes_total",
            "Upstream token fetches by upstream, kind (bearer, ecr) and result.",
            &["upstream", "kind", "result"],
        ),
        token_forced_refreshes: counter(
            &r,
            "pullthrough_token_forced_refreshes_total",
            "Credentials replaced because the registry refused them (concurrent refusals share one).",
            &["upstream"],
        ),
        token_refreshes_suppressed: counter(
            &r,
            "pullthrough_token_refreshes_suppressed_total",
            "Credential or token fetches not made during a cooldown (refused credentials, failing token endpoint); the request failed at once.",
            &["upstream"],
        ),
        stale_serves: counter(
            &r,
            "pullthrough_stale_manifest_serves_total",
            "Tags served from the cache because the upstream was unavailable.",
            &["upstream"],
        ),
        vouch_checks: counter(
            &r,
            "pullthrough_vouch_checks_total",
            "HEAD requests asking an upstream whether it has cached content in the repository a client asked for (nothing recorded said so), by result (confirmed, refused).",
            &["upstream", "result"],
        ),
        upstream_up: {
            let g = IntGaugeVec::new(
                Opts::new(
                    "pullthrough_upstream_up",
                    "Whether the last request reached the upstream (1) or not (0); absent until known.",
                ),
                &["upstream"],
            )
            .expect("valid metric");
            r.register(Box::new(g.clone())).expect("unique metric");
            g
        },
        upstream_ratelimit_remaining: gauge_vec(
            &r,
            "pullthrough_upstream_ratelimit_remaining",
            "Requests left in the upstream's rate-limit window, as its last answer said (RateLimit-Remaining); absent until known.",
            &["upstream"],
        ),
        upstream_ratelimit_reset: gauge_vec(
            &r,
            "pullthrough_upstream_ratelimit_reset_timestamp_seconds",
            "When the upstream's rate limit is expected to let counted requests through again (Unix time; 0 when unknown).",
            &["upstream"],
        ),
        upstream_ratelimit_held: counter(
            &r,
            "pullthrough_upstream_ratelimit_held_total",
            "Requests not sent to an upstream because its rate-limit budget was spent or its Retry-After ran (answered 429, or a cached tag served stale).",
            &["upstream"],
        ),
        tag_refreshes: counter(
            &r,
            "pullthrough_tag_background_revalidations_total",
            "Tags answered from the cache within stale_while_revalidate and revalidated in the background, by result (unchanged, moved, failed).",
            &["upstream", "result"],
        ),
        tier_requests: counter(
            &r,
            "pullthrough_tier_requests_total",
            "Lookups of blobs, manifests and tags in a cache tier (local, shared), by result (hit, miss, error).",
            &["tier", "kind", "result"],
        ),
        tier_bytes: counter(
            &r,
            "pullthrough_tier_fill_bytes_total",
            "Bytes filled into the local cache, by the tier they came from (shared, upstream).",
            &["tier"],
        ),
        tier_verification_failures: counter(
            &r,
            "pullthrough_tier_verification_failures_total",
            "Content that failed verification, by the tier it came from (shared, upstream).",
            &["tier"],
        ),
        fill_resumes: counter(
            &r,
            "pullthrough_fill_resumes_total",
            "Fills resumed at the byte received from the next source, by the tier of the source that broke (shared, peer, upstream) and why (reset, truncated, stalled, slow).",
            &["tier", "reason"],
        ),
        shared_uploads: counter(
            &r,
            "pullthrough_shared_uploads_total",
            "Background uploads to the shared tier, by kind (blob, manifest, tag) and result (ok, exists, error).",
            &["kind", "result"],
        ),
        peer_requests: counter(
            &r,
            "pullthrough_peer_requests_total",
            "Cluster peer requests: made by this node (result ok, not_found, failed_over) and served to peers (ok, error).",
            &["direction", "result"],
        ),
        peer_streams: gauge(
            &r,
            "pullthrough_peer_streams",
            "Blob streams this node is sending to peer nodes now (at most max_peer_streams per blob).",
        ),
        peer_streams_peak: gauge(
            &r,
            "pullthrough_peer_streams_peak",
            "The most streams of one blob this node has sent to peer nodes at once since it started.",
        ),
        peer_referrals: counter(
            &r,
            "pullthrough_peer_referrals_total",
            "Referrals: made (this node referred an asker to a receiving node), followed (this node was served by the node it was referred to), refused (this node refused a referred asker), fell_back (this node's referral failed; it asked the owner directly).",
            &["event"],
        ),
        peer_sent_bytes: plain_counter(
            &r,
            "pullthrough_peer_sent_bytes_total",
            "Blob bytes this node sent to peer nodes.",
        ),
        shared_up: gauge(
            &r,
            "pullthrough_shared_up",
            "Whether the last request to the shared tier succeeded (1) or not (0); 0 when none is configured.",
        ),
        events_sent: counter(
            &r,
            "pullthrough_events_sent_total",
            "Events delivered to a webhook, by webhook (host:port) and kind.",
            &["webhook", "kind"],
        ),
        events_dropped: counter(
            &r,
            "pullthrough_events_dropped_total",
            "Events not delivered to a webhook, by webhook, kind and reason (queue_full, undelivered, rejected, closed).",
            &["webhook", "kind", "reason"],
        ),
        events_retries: counter(
            &r,
            "pullthrough_events_retries_total",
            "Webhook delivery attempts that failed and were retried, by webhook.",
            &["webhook"],
        ),
        scrub_bytes: plain_counter(
            &r,
            "pullthrough_scrub_bytes_total",
            "Bytes of cached blobs and manifests re-hashed by the background scrub.",
        ),
        corruptions_found: counter(
            &r,
            "pullthrough_corruptions_found_total",
            "Cached files found not to match their digest and quarantined, by what found them (scrub, read).",
            &["found_by"],
        ),
        corruptions_repaired: plain_counter(
            &r,
            "pullthrough_corruptions_repaired_total",
            "Quarantined blobs and manifests fetched again from their upstream at once (verify --repair).",
        ),
        build_info,
        registry: r,
    }
});

/// A metric family's type, as the text exposition's `# TYPE` line names it.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// The outcomes a peer request is counted under: (direction, result).
const PEER_RESULTS: [(&str, &str); 5] =
    [("made", "ok"), ("made", "not_found"), ("made", "failed_over"), ("served", "ok"), ("served", "error")];
/// What finds a corrupt cached file.
const FOUND_BY: [&str; 2] = ["scrub", "read"];
/// What happens to a referral between peer nodes.
const REFERRAL_EVENTS: [&str; 4] = ["made", "followed", "refused", "fell_back"];
/// Where blob bytes sent to clients are read from.
const FOLLOW_FROM: [&str; 3] = ["memory", "fill_file", "blob"];

impl Metrics {
    /// Every family and its type, whether or not it has samples yet.
    fn families(&self) -> Vec<(&dyn prometheus::core::Collector, Kind)> {
        use Kind::{Counter as C, Gauge as G, Histogram as H};
        vec![
            (&self.upstream_up, G),
            (&self.upstream_ratelimit_remaining, G),
            (&self.upstream_ratelimit_reset, G),
            (&self.upstream_ratelimit_held, C),
            (&self.tag_refreshes, C),
            (&self.http_requests, C),
            (&self.http_duration, H),
            (&self.cache_requests, C),
            (&self.cache_bytes, C),
            (&self.upstream_requests, C),
            (&self.upstream_duration, H),
            (&self.upstream_errors, C),
            (&self.fill_verification_failures, C),
            (&self.fills_joined, C),
            (&self.follow_bytes, C),
            (&self.fills_in_flight, G),
            (&self.uncached_blobs, C),
            (&self.evictions, C),
            (&self.evicted_bytes, C),
            (&self.cache_size_bytes, G),
            (&self.cache_blobs, G),
            (&self.cache_budget_bytes, G),
            (&self.token_refreshes, C),
            (&self.token_forced_refreshes, C),
            (&self.token_refreshes_suppressed, C),
            (&self.stale_serves, C),
            (&self.vouch_checks, C),
            (&self.build_info, G),
            (&self.scrub_bytes, C),
            (&self.corruptions_found, C),
            (&self.corruptions_repaired, C),
            (&self.tier_requests, C),
            (&self.tier_bytes, C),
            (&self.tier_verification_failures, C),
            (&self.fill_resumes, C),
            (&self.shared_uploads, C),
            (&self.shared_up, G),
            (&self.peer_requests, C),
            (&self.peer_streams, G),
            (&self.peer_streams_peak, G),
            (&self.peer_referrals, C),
            (&self.peer_sent_bytes, C),
            (&self.events_sent, C),
            (&self.events_dropped, C),
            (&self.events_retries, C),
        ]
    }

    /// The name of every metric family, whether or not it has samples yet.
    pub fn names(&self) -> Vec<String> {
        self.families().iter().flat_map(|(c, _)| c.desc()).map(|d| d.fq_name.clone()).collect()
    }

    /// Zero-valued series for the label values known at start, so a rate over them works
    /// from the first scrape: each of `upstreams` (the configured hosts) in the families
    /// labelled by upstream alone, and the fixed outcomes of the peer, corruption and
    /// follow counters. Families whose labels are learned as they happen (a status code, a
    /// webhook's event kind) have no series until then; `render` still lists them.
    pub fn init_series<'a>(&self, upstreams: impl IntoIterator<Item = &'a str>) {
        for host in upstreams {
            for c in [
                &self.upstream_ratelimit_held,
                &self.fill_verification_failures,
                &self.uncached_blobs,
                &self.token_forced_refreshes,
                &self.token_refreshes_suppressed,
                &self.stale_serves,
            ] {
                c.with_label_values(&[host]);
            }
            self.upstream_duration.with_label_values(&[host]);
        }
        for (direction, result) in PEER_RESULTS {
            self.peer_requests.with_label_values(&[direction, result]);
        }
        for found_by in FOUND_BY {
            self.corruptions_found.with_label_values(&[found_by]);
        }
        for from in FOLLOW_FROM {
            self.follow_bytes.with_label_values(&[from]);
        }
        for event in REFERRAL_EVENTS {
            self.peer_referrals.with_label_values(&[event]);
        }
    }
}

/// The text exposition of every metric. A family with no series yet (a labelled counter
/// before its first count) is listed by its `# HELP` and `# TYPE` lines, so every family
/// the README names is in /metrics from the start.
pub fn render() -> String {
    use std::fmt::Write as _;
    let gathered = METRICS.registry.gather();
    let mut buf = Vec::new();
    TextEncoder::new().encode(&gathered, &mut buf).expect("text encoding cannot fail");
    let mut text = String::from_utf8(buf).expect("metrics are UTF-8");
    let present: std::collections::HashSet<&str> = gathered.iter().map(|f| f.name()).collect();
    for (collector, kind) in METRICS.families() {
        for d in collector.desc().into_iter().filter(|d| !present.contains(d.fq_name.as_str())) {
            let help = d.help.replace('\\', "\\\\").replace('\n', "\\n");
            let _ = write!(text, "# HELP {name} {help}\n# TYPE {name} {}\n", kind.as_str(), name = d.fq_name);
        }
    }
    text
}
