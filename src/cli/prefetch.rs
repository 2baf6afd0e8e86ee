//! `pullthrough prefetch`: fetch images into the cache ahead of need, beside a running
//! daemon; one image failing does not stop the run.

use anyhow::Context as _;
use std::path::PathBuf;

/// How `prefetch` fetches each image.
pub struct PrefetchOptions {
    pub platforms: pullthrough::core::Platforms,
    pub pin: bool,
    pub with_referrers: bool,
    pub concurrency: usize,
}

/// The platforms `--platform`/`--all-platforms` ask for; by default this machine's.
pub fn platforms_arg(platforms: Vec<String>, all_platforms: bool) -> pullthrough::core::Platforms {
    if all_platforms {
        pullthrough::core::Platforms::All
    } else if platforms.is_empty() {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        pullthrough::core::Platforms::Only(vec![format!("linux/{arch}")])
    } else {
        pullthrough::core::Platforms::Only(platforms)
    }
}

/// The images named on the command line and in `--file` (one a line, # comments), as
/// written.
fn prefetch_list(mut images: Vec<String>, file: Option<PathBuf>) -> anyhow::Result<Vec<String>> {
    if let Some(f) = file {
        let text = std::fs::read_to_string(&f).with_context(|| format!("cannot read {}", f.display()))?;
        images.extend(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from));
    }
    anyhow::ensure!(!images.is_empty(), "name at least one image (or --file)");
    Ok(images)
}

/// Why one image of a prefetch failed; the run goes on with the next.
enum ImageFailure {
    Image(pullthrough::core::CoreError),
    Referrers(pullthrough::core::CoreError),
}

impl std::fmt::Display for ImageFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // The whole cause chain: a core error keeps its cause as its source.
            ImageFailure::Image(e) => write!(f, "{}", pullthrough::error_text::error_chain(e)),
            ImageFailure::Referrers(e) => write!(f, "referrers: {}", pullthrough::error_text::error_chain(e)),
        }
    }
}

/// Run `prefetch`: every image in turn; an error (non-zero exit) when any failed.
pub fn run(
    images: Vec<String>,
    file: Option<PathBuf>,
    how: &PrefetchOptions,
    loc: &super::location::Location,
    progress: &super::progress::ProgressArgs,
) -> anyhow::Result<()> {
    use pullthrough::core::progress::{Event, Progress as _};
    let written = prefetch_list(images, file)?;
    let r = loc.resolve()?;
    let refs = super::open::images(&r, &written)?;
    let pt = super::open::writer(loc, &r, "prefetch")?;
    let rt = super::runtime()?;
    let reporter = progress.reporter("prefetch");
    reporter.event(Event::Planned { items: refs.len(), bytes: None });
    let (mut failed, mut retryable) = (0, 0);
    rt.block_on(async {
        pt.start_background();
        for (i, r) in refs.iter().enumerate() {
            let name = r.to_string();
            reporter.event(Event::Started { name: &name });
            match prefetch_one(&pt, r, (i + 1, refs.len()), how, &reporter).await? {
                Ok(()) => reporter.event(Event::Finished { name: &name }),
                Err(f) => {
                    failed += 1;
                    // Failures another run could get past (the upstream was unreachable, a
                    // transfer broke off), as opposed to definite answers (not found, refused).
                    let (ImageFailure::Image(e) | ImageFailure::Referrers(e)) = &f;
                    retryable += usize::from(may_pass_next_time(e));
                    reporter.event(Event::Failed { name: &name, error: &f });
                }
            }
        }
        Ok::<_, anyhow::Error>(())
    })?;
    // Pull times of images this run pulled more than once (see core::pulls).
    pt.flush_pulls();
    let n = refs.len();
    let fetched = super::human_bytes(reporter.total_bytes());
    reporter.finish(
        &format!("prefetched {} of {n} images, {fetched} fetched", n - failed),
        serde_json::json!({"command": "prefetch", "images": n, "failed": failed}),
    );
    anyhow::ensure!(retryable == 0, "{failed} of {n} images failed; run again to resume (cached blobs are kept)");
    anyhow::ensure!(
        failed == 0,
        "{failed} of {n} images failed (see above: the upstream does not have them, or refused access)"
    );
    Ok(())
}

/// Prefetch one image (`i` of `n`), pin it and fetch its referrers as asked, and report the
/// result. The outer error ends the run; the inner one is this image's alone.
async fn prefetch_one(
    pt: &pullthrough::core::PullThrough,
    r: &pullthrough::oci::ImageRef,
    (i, n): (usize, usize),
    how: &PrefetchOptions,
    reporter: &super::progress::Reporter,
) -> anyhow::Result<Result<(), ImageFailure>> {
    use pullthrough::core::progress::Progress as _;
    let rep = match pt.prefetch_with(r, &how.platforms, how.concurrency, reporter).await {
        Ok(rep) => rep,
        Err(e) => return Ok(Err(ImageFailure::Image(e))),
    };
    let fetched = super::human_bytes(rep.fetched_bytes);
    reporter.result(
        &format!(
            "[{i}/{n}] {} {} — {} manifests, {} blobs, {fetched} fetched",
            rep.image, rep.digest, rep.manifests, rep.blobs
        ),
        serde_json::json!({"command": "prefetch", "index": i, "items": n, "report": rep}),
    );
    let digest: pullthrough::oci::Digest = rep.digest.parse()?;
    if how.pin {
        let pinned =
            pullthrough::oci::ImageRef { reference: pullthrough::oci::Reference::Digest(digest.clone()), ..r.clone() };
        pt.add_pin(&pinned)?;
    }
    if how.with_referrers {
        let reps = match pt.prefetch_referrers(r, &digest, how.concurrency).await {
            Ok(reps) => reps,
            Err(e) => return Ok(Err(ImageFailure::Referrers(e))),
        };
        let (blobs, bytes) = (reps.iter().map(|x| x.blobs).sum::<usize>(), reps.iter().map(|x| x.fetched_bytes).sum());
        // Fetched without a progress of their own (small: signatures, SBOMs): counted now,
        // so the run's total is every byte fetched.
        reporter.bytes(bytes);
        reporter.result(
            &format!("      + {} referrers, {blobs} blobs, {} fetched", reps.len(), super::human_bytes(bytes)),
            serde_json::json!({"command": "prefetch", "index": i, "items": n, "referrers": reps}),
        );
    }
    Ok(Ok(()))
}

/// Whether running a failed prefetch again may succeed: the upstream was unavailable, a
/// transfer or the cache failed; not when the upstream answered no.
fn may_pass_next_time(e: &pullthrough::core::CoreError) -> bool {
    e.is_transient()
}
