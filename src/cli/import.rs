//! `pullthrough import`: load an OCI image layout (a directory or a .tar of one) into the
//! cache, verifying every blob.

use super::location::Location;
use anyhow::Context as _;
use std::path::Path;

pub fn run(
    path: &Path,
    as_repo: Option<&str>,
    loc: &Location,
    progress: &super::progress::ProgressArgs,
) -> anyhow::Result<()> {
    let pt = super::open::writer(loc, &loc.resolve()?, "import")?;
    let reporter = progress.reporter("import");
    let (layout, staged) = if path.is_file() {
        // In this process's own temp directory: nobody else removes it while we run.
        let stage = super::stage_dir(&pt.store().temp_dir().join("import"))?;
        if let Err(e) = unpack_tar(path, &stage, &reporter) {
            let _ = std::fs::remove_dir_all(&stage);
            return Err(reporter.abort(e));
        }
        (stage.clone(), Some(stage))
    } else {
        (path.to_path_buf(), None)
    };
    let result = pt.import_layout(&layout, as_repo, &reporter);
    if let Some(s) = staged {
        let _ = std::fs::remove_dir_all(s);
    }
    let report = match result {
        Ok(r) => r,
        Err(e) => return Err(reporter.abort(e.into())),
    };
    for i in &report.images {
        reporter.result(&format!("imported {i}"), serde_json::json!({"command": "import", "image": i}));
    }
    let failed = report.failed.len();
    let not_imported = if failed == 0 { String::new() } else { format!("; {failed} not imported (see above)") };
    // Blobs already in the cache are verified but not written again: the count is of every
    // blob the images reference, the bytes of what was written.
    reporter.finish(
        &format!(
            "{} images, {} blobs verified; {} written to the cache (blobs it had already are not written again){not_imported}",
            report.images.len(),
            report.blobs,
            super::human_bytes(report.bytes)
        ),
        serde_json::json!({"command": "import", "images": report.images.len(), "blobs": report.blobs,
                           "written_bytes": report.bytes, "failed": report.failed}),
    );
    // Each failure was named as it happened (stderr, or a "failed" line with --json).
    let names: Vec<&str> = report.failed.iter().map(|f| f.image.as_str()).collect();
    anyhow::ensure!(
        failed == 0,
        "{failed} of {} images were not imported: {}",
        failed + report.images.len(),
        names.join(", ")
    );
    Ok(())
}

/// Unpack the tar file `path` into `stage`, as the first item of an import's run.
fn unpack_tar(path: &Path, stage: &Path, reporter: &super::progress::Reporter) -> anyhow::Result<()> {
    use pullthrough::core::progress::{Counted, Event, Progress as _};
    let name = path.display().to_string();
    reporter.event(Event::Planned { items: 1, bytes: None });
    reporter.event(Event::Started { name: &name });
    let unpacked = (|| {
        let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        reporter.event(Event::Sized { bytes: f.metadata()?.len() });
        let read = Counted { inner: std::io::BufReader::new(f), progress: reporter };
        tar::Archive::new(read).unpack(stage).with_context(|| format!("{} is not a tar archive", path.display()))
    })();
    if unpacked.is_ok() {
        reporter.event(Event::Finished { name: &name });
    }
    unpacked
}
