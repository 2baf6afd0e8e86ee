//! `pullthrough export`: write cached images as an OCI image layout, a directory or a .tar.

use super::location::Location;
use anyhow::Context as _;
use std::path::Path;

pub fn run(
    images: &[String],
    out: &Path,
    loc: &Location,
    progress: &super::progress::ProgressArgs,
) -> anyhow::Result<()> {
    anyhow::ensure!(!images.is_empty(), "name at least one image to export");
    let r = loc.resolve()?;
    let refs = super::open::images(&r, images)?;
    let pt = super::open::offline(loc, &r, "export", "reading")?;
    let reporter = progress.reporter("export");
    let is_tar = out.extension().is_some_and(|e| e == "tar");
    let dir = if is_tar { super::stage_dir(out)? } else { out.to_path_buf() };
    let written = pt.export_layout(&refs, &dir, &reporter).map_err(anyhow::Error::from).and_then(|n| {
        if is_tar {
            write_tar(&dir, out, &reporter)?;
        }
        Ok(n)
    });
    if is_tar {
        let _ = std::fs::remove_dir_all(&dir); // the staging directory, not --out
    }
    let n = match written {
        Ok(n) => n,
        Err(e) => return Err(reporter.abort(e)),
    };
    reporter.finish(
        &format!("exported {} images ({n} blobs) to {}", refs.len(), out.display()),
        serde_json::json!({"command": "export", "images": refs.len(), "blobs": n, "out": out}),
    );
    Ok(())
}

/// Write the staged layout `dir` as the tar file `out`, as one more item of the run.
fn write_tar(dir: &Path, out: &Path, reporter: &super::progress::Reporter) -> anyhow::Result<()> {
    use pullthrough::core::progress::{Counted, Event, Progress as _};
    let name = out.display().to_string();
    reporter.event(Event::Planned { items: 1, bytes: None });
    reporter.event(Event::Started { name: &name });
    reporter.event(Event::Sized { bytes: tree_bytes(dir) });
    let written = (|| {
        let f = std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
        let mut tar = tar::Builder::new(Counted { inner: std::io::BufWriter::new(f), progress: reporter });
        tar.append_dir_all(".", dir)?;
        tar.into_inner()?.inner.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        Ok(())
    })();
    if written.is_ok() {
        reporter.event(Event::Finished { name: &name });
    }
    written
}

/// The bytes of the files under `dir` (for a progress estimate: unreadable entries count 0).
fn tree_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => tree_bytes(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}
