//! The store's async face: the operations the async layers need, each run on the blocking
//! pool here, so no caller clones the store and its arguments into `spawn_blocking` itself.
//! The blocking methods they wrap (named in each doc) stay for blocking callers (the CLI,
//! housekeeping passes, work already on the pool); where `Store` itself has the blocking
//! method, its async twin has the same name with `_async`.

use super::records::TagRecord;
use super::Store;
use crate::oci::{Digest, RepoName, Tag};
use std::fs::File;
use std::io;
use std::sync::Arc;

impl Store {
    /// Run blocking store work on the blocking pool.
    pub async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Store) -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let store = self.clone();
        super::blocking(move || f(&store)).await
    }

    /// `open_blob`, off the async threads.
    pub async fn open_blob_async(self: &Arc<Self>, d: &Digest) -> io::Result<Option<(File, u64)>> {
        let d = d.clone();
        self.run(move |s| s.open_blob(&d)).await
    }

    /// `read_manifest`, off the async threads.
    pub async fn read_manifest_async(
        self: &Arc<Self>,
        d: &Digest,
        limit: usize,
    ) -> io::Result<Option<(Vec<u8>, Option<String>)>> {
        let d = d.clone();
        self.run(move |s| s.read_manifest(&d, limit)).await
    }

    /// `put_manifest`, off the async threads.
    pub async fn put_manifest_async(
        self: &Arc<Self>,
        d: &Digest,
        media_type: &str,
        bytes: impl Into<bytes::Bytes>,
    ) -> io::Result<()> {
        let (d, media_type, bytes) = (d.clone(), media_type.to_string(), bytes.into());
        self.run(move |s| s.put_manifest(&d, &media_type, &bytes)).await
    }

    /// `get_tag`, off the async threads.
    pub async fn get_tag_async(
        self: &Arc<Self>,
        upstream: &str,
        name: &RepoName,
        tag: &Tag,
    ) -> io::Result<Option<TagRecord>> {
        let (h, n, t) = (upstream.to_string(), name.clone(), tag.clone());
        self.run(move |s| s.records.get_tag(&h, &n, &t)).await
    }

    /// `put_tag`, off the async threads.
    pub async fn put_tag_async(
        self: &Arc<Self>,
        upstream: &str,
        name: &RepoName,
        tag: &Tag,
        rec: TagRecord,
    ) -> io::Result<()> {
        let (h, n, t) = (upstream.to_string(), name.clone(), tag.clone());
        self.run(move |s| s.records.put_tag(&h, &n, &t, &rec)).await
    }

    /// `note_pull`, off the async threads.
    pub async fn note_pull_async(
        self: &Arc<Self>,
        upstream: &str,
        name: &RepoName,
        d: &Digest,
        media_type: &str,
    ) -> io::Result<()> {
        let (h, n, d, t) = (upstream.to_string(), name.clone(), d.clone(), media_type.to_string());
        self.run(move |s| s.records.note_pull(&h, &n, &d, &t)).await
    }

    /// `vouched`, off the async threads.
    pub async fn vouched_async(self: &Arc<Self>, upstream: &str, name: &RepoName, d: &Digest) -> io::Result<bool> {
        let (h, n, d) = (upstream.to_string(), name.clone(), d.clone());
        self.run(move |s| s.vouched(&h, &n, &d)).await
    }

    /// `confirm`, off the async threads.
    pub async fn confirm_async(self: &Arc<Self>, upstream: &str, name: &RepoName, d: &Digest) -> io::Result<()> {
        let (h, n, d) = (upstream.to_string(), name.clone(), d.clone());
        self.run(move |s| s.confirm(&h, &n, &d)).await
    }

    /// `read_file`, off the async threads.
    pub async fn read_file_async(self: &Arc<Self>, relative: &str) -> io::Result<Option<Vec<u8>>> {
        let relative = relative.to_string();
        self.run(move |s| s.read_file(&relative)).await
    }

    /// `write_file`, off the async threads.
    pub async fn write_file_async(self: &Arc<Self>, relative: String, bytes: Vec<u8>) -> io::Result<()> {
        self.run(move |s| s.write_file(&relative, &bytes)).await
    }

    /// `probe_writable`, off the async threads.
    pub async fn probe_writable_async(self: &Arc<Self>) -> io::Result<()> {
        self.run(|s| s.probe_writable()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SpaceBudget;

    #[tokio::test]
    async fn the_async_face_reads_what_it_wrote_and_the_stats_count_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), SpaceBudget::unlimited()).unwrap());
        let bytes = b"{\"schemaVersion\":2}".to_vec();
        let d = Digest::of_bytes(&bytes);
        assert_eq!(store.stats(), crate::store::Stats { bytes: 0, blobs: 0 });
        assert!(store.read_manifest_async(&d, 1024).await.unwrap().is_none());
        store.put_manifest_async(&d, crate::oci::media::OCI_MANIFEST, bytes.clone()).await.unwrap();
        let (read, media_type) = store.read_manifest_async(&d, 1024).await.unwrap().unwrap();
        assert_eq!((read, media_type.as_deref()), (bytes.clone(), Some(crate::oci::media::OCI_MANIFEST)));
        assert_eq!(store.stats(), crate::store::Stats { bytes: bytes.len() as u64, blobs: 1 });
        let (_, len) = store.open_blob_async(&d).await.unwrap().unwrap();
        assert_eq!(len, bytes.len() as u64);
        store.probe_writable_async().await.unwrap();
    }
}
