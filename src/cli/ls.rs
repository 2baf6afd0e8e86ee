//! `pullthrough ls`: list the cached images, as a table or as JSON.

use super::location::Location;
use super::stdout::outln;

pub fn run(loc: &Location, json: bool) -> anyhow::Result<()> {
    let pt = super::open::offline(loc, &loc.resolve()?, "ls", "reading")?;
    let images = pt.list_images()?;
    let stats = pt.store().stats();
    if json {
        let v = serde_json::json!({"images": images, "blobs": stats.blobs, "bytes": stats.bytes});
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    outln!("{:<16} {:<32} {:<20} {:<19} {:>10}  LAST PULLED", "UPSTREAM", "REPOSITORY", "TAGS", "DIGEST", "SIZE");
    for i in &images {
        let tags = if i.tags.is_empty() { "<none>".to_string() } else { i.tags.join(",") };
        let ago = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH + std::time::Duration::from_secs(i.pulled_at))
            .unwrap_or_default();
        outln!(
            "{:<16} {:<32} {:<20} {:<19} {:>10}  {} ago",
            i.upstream,
            i.repository,
            tags,
            &i.digest[..19.min(i.digest.len())],
            super::human_bytes(i.size),
            humantime::format_duration(std::time::Duration::from_secs(ago.as_secs()))
        );
    }
    outln!("{} images; {} blobs, {} in the cache", images.len(), stats.blobs, super::human_bytes(stats.bytes));
    Ok(())
}
