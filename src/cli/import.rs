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
    let pt = super::open::writer(loc, "import")?;
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
    // Blobs already in the cache are verified but not written again: the count is of every
    // blob the images reference, the bytes of what was written.
    reporter.finish(
        &format!(
            "{} images, {} blobs verified; {} written to the cache (blobs it had already are not written again)",
            report.images.len(),
            report.blobs,
            super::human_bytes(report.bytes)
        ),
        serde_json::json!({"command": "import", "images": report.images.len(), "blobs": report.blobs,
                           "written_bytes": report.bytes}),
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
