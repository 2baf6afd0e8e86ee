//! `pullthrough ls`: list the cached images, as a table or as JSON.

use super::location::Location;

pub fn run(loc: &Location, json: bool) -> anyhow::Result<()> {
    let (pt, _) = super::open::offline(loc, "ls", "reading")?;
    let images = pt.list_images()?;
    let stats = pt.store().stats();
    if json {
        let v = serde_json::json!({"images": images, "blobs": stats.blobs, "bytes": stats.bytes});
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("{:<16} {:<32} {:<20} {:<19} {:>10}  LAST PULLED", "UPSTREAM", "REPOSITORY", "TAGS", "DIGEST", "SIZE");
    for i in &images {
        let tags = if i.tags.is_empty() { "<none>".to_string() } else { i.tags.join(",") };
        let ago = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH + std::time::Duration::from_secs(i.pulled_at))
            .unwrap_or_default();
        println!(
            "{:<16} {:<32} {:<20} {:<19} {:>10}  {} ago",
            i.upstream,
            i.repository,
            tags,
            &i.digest[..19.min(i.digest.len())],
            super::human_bytes(i.size),
            humantime::format_duration(std::time::Duration::from_secs(ago.as_secs()))
        );
    }
    println!("{} images; {} blobs, {} in the cache", images.len(), stats.blobs, super::human_bytes(stats.bytes));
    Ok(())
}
