//! `pullthrough verify [--repair] [--rate 50MiB/s]`: re-hash every cached blob and manifest,
//! report and quarantine the files that no longer match their digest, and with `--repair`
//! fetch each of them again from its upstream.
//!
//! Runs beside a running daemon (see `store::lock`): the hashing and the quarantine take no
//! lock (a quarantine moves only the file that was hashed, and a daemon that meets the gap
//! fills the digest again); `--repair` adds content, so it takes the writers' lock like
//! `prefetch` (a daemon's lifecycle pass waits a turn), and only for the refetch, not for
//! the hours a paced pass over a large cache may take. `--rate` keeps the disk for the
//! daemon's clients.
//!
//! Exit status: non-zero when corrupt files were found and are not back in the cache
//! (without `--repair`, or a repair failed), or files could not be read.

use super::location::Location;
use super::progress::ProgressArgs;
use anyhow::Context as _;
use pullthrough::config::ByteRate;
use pullthrough::core::integrity::{Corruption, Detector, Pace, Rate, ScrubReport};
use pullthrough::core::PullThrough;
use pullthrough::oci::Digest;
use pullthrough::store::Quarantined;
use serde_json::json;

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// Fetch each corrupt file again from the upstream it came from (the configuration's
    /// upstreams), verified like any fill.
    #[arg(long)]
    pub repair: bool,
    /// Hash at most this fast, e.g. 50MiB/s, to leave the disk to a running daemon's
    /// clients (default: as fast as the disk allows).
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub rate: Option<ByteRate>,
    #[command(flatten)]
    pub loc: Location,
    #[command(flatten)]
    pub progress: ProgressArgs,
}

fn parse_rate(s: &str) -> Result<ByteRate, String> {
    ByteRate::parse(s)
}

/// Run `verify`; an error (non-zero exit) when corruption remains or files are unreadable.
pub fn run(args: &VerifyArgs) -> anyhow::Result<()> {
    let r = args.loc.resolve()?;
    args.loc.announce("verify", if args.repair { "verifying and repairing" } else { "verifying" }, &r);
    anyhow::ensure!(
        r.cache_dir.is_dir(),
        "cache directory {} does not exist; pass --cache-dir or --config",
        r.cache_dir.display()
    );
    let pt = pullthrough::build_pull_through(&r.config, &r.cache_dir)?;
    let reporter = args.progress.reporter("verify");
    let mut pace = Pace::new(args.rate.and_then(|b| Rate::bytes_per_second(b.0)));
    let report = pt.scrub(&mut pace, Detector::Scrub, &reporter);
    for c in &report.corrupt {
        reporter.result(&found_line(c), found_json(c));
    }
    for (d, e) in &report.unreadable {
        reporter.error(&format!("unreadable: {} ({d}): {e}", pt.store().blob_path(d).display()));
    }
    // Files another process replaced or removed meanwhile need nothing more from us.
    let moved = report.corrupt.iter().filter(|c| matches!(c.outcome, Quarantined::Moved(_))).count();
    let todo = to_repair(&pt, &report)?;
    // Quarantined before this run (by an earlier `verify` or the daemon) and not cached again.
    let earlier = todo.len() - moved;
    // Every quarantined file not back in the cache counts, this run's and earlier ones':
    // a second run stays non-zero until the corruption is repaired.
    let (mut left, mut repaired) = (todo.len(), 0);
    if args.repair {
        repaired = repair(&pt, &todo, &reporter)?;
        left -= repaired;
    }
    let counts = Counts { repaired, earlier, repair: args.repair };
    reporter.finish(&summary(&report, &counts), summary_json(&report, &counts));
    anyhow::ensure!(
        report.unreadable.is_empty(),
        "{} cached files could not be read (see above)",
        report.unreadable.len()
    );
    anyhow::ensure!(
        left == 0,
        "{left} corrupt files were quarantined and are not back in the cache: {}",
        if args.repair {
            "they could not be fetched again (see above); clients' next pulls try again"
        } else {
            "run `pullthrough verify --repair`, or let clients' next pulls fetch them again"
        }
    );
    Ok(())
}

/// What `--repair` fetches again: what this pass quarantined, and what earlier passes (or
/// the daemon) quarantined that is not cached again yet; manifests first, as blobs are
/// vouched for through the manifests that reference them. `(digest, is a manifest)`.
fn to_repair(pt: &PullThrough, report: &ScrubReport) -> anyhow::Result<Vec<(Digest, bool)>> {
    let store = pt.store();
    let mut todo: Vec<(Digest, bool)> = report
        .corrupt
        .iter()
        .filter(|c| matches!(c.outcome, Quarantined::Moved(_)))
        .map(|c| (c.digest.clone(), c.manifest))
        .collect();
    let earlier = store.quarantined().with_context(|| format!("cannot list {}", store.quarantine_dir().display()))?;
    for d in earlier {
        if !store.contains(&d) && !todo.iter().any(|(t, _)| *t == d) {
            let manifest = store.is_manifest(&d);
            todo.push((d, manifest));
        }
    }
    todo.sort_by_key(|(_, manifest)| !manifest);
    Ok(todo)
}

/// Fetch each quarantined file again; how many came back.
fn repair(pt: &PullThrough, todo: &[(Digest, bool)], reporter: &super::progress::Reporter) -> anyhow::Result<usize> {
    if todo.is_empty() {
        return Ok(0);
    }
    pt.store().claim(pullthrough::store::Role::Writer)?;
    let rt = super::runtime().context("cannot start the runtime")?;
    let mut repaired = 0;
    rt.block_on(async {
        pt.start_background();
        for (digest, manifest) in todo {
            match pt.repair(digest, *manifest).await {
                Ok(r) => {
                    repaired += 1;
                    reporter.result(
                        &format!("repaired: {} from {}/{}", r.digest, r.upstream, r.repository),
                        json!({"repaired": r.digest.to_string(), "upstream": r.upstream, "repository": r.repository.to_string()}),
                    );
                }
                Err(e) => reporter.error(&format!("not repaired: {digest}: {}", super::error_text(&e.into()))),
            }
        }
    });
    Ok(repaired)
}

fn kind(c: &Corruption) -> &'static str {
    if c.manifest {
        "manifest"
    } else {
        "blob"
    }
}

fn found_line(c: &Corruption) -> String {
    let fate = match &c.outcome {
        Quarantined::Moved(to) => format!("quarantined to {}", to.display()),
        Quarantined::Replaced => "already replaced by a fresh copy".to_string(),
        Quarantined::Gone => "already removed".to_string(),
    };
    format!("corrupt: {} ({}): expected {}, actual {}; {fate}", c.path.display(), kind(c), c.digest, c.actual)
}

fn found_json(c: &Corruption) -> serde_json::Value {
    let quarantined = match &c.outcome {
        Quarantined::Moved(to) => Some(to.display().to_string()),
        _ => None,
    };
    json!({"corrupt": c.path.display().to_string(), "kind": kind(c), "expected": c.digest.to_string(),
           "actual": c.actual.to_string(), "quarantined": quarantined})
}

/// What the summary line says beside the scrub's own report.
struct Counts {
    repaired: usize,
    /// Quarantined before this run and not cached again.
    earlier: usize,
    repair: bool,
}

fn summary(r: &ScrubReport, c: &Counts) -> String {
    let mut s = format!("verified {} files ({}): {} corrupt", r.files, indicatif::HumanBytes(r.bytes), r.corrupt.len());
    if c.repair {
        s.push_str(&format!(", {} repaired", c.repaired));
    } else if c.earlier > 0 {
        s.push_str(&format!("; {} quarantined earlier and not cached again (--repair fetches them)", c.earlier));
    }
    if !r.unreadable.is_empty() {
        s.push_str(&format!(", {} unreadable", r.unreadable.len()));
    }
    s
}

fn summary_json(r: &ScrubReport, c: &Counts) -> serde_json::Value {
    json!({"files": r.files, "bytes": r.bytes, "corrupt": r.corrupt.len(), "repaired": c.repaired,
           "quarantined_earlier": c.earlier, "unreadable": r.unreadable.len()})
}
