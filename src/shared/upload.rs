//! Background write-back to the bucket: bounded concurrency, one upload per key at a time,
//! retries with back-off. Upload failures never reach a client; they are logged and counted.

use super::SharedError;
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use std::collections::HashSet;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Blobs up to this size go up in one PUT; larger ones as multipart uploads.
const MULTIPART_THRESHOLD: u64 = 64 * 1024 * 1024;
/// Part size of multipart uploads (S3 allows at most 10,000 parts; larger blobs get larger
/// parts).
const PART_SIZE: u64 = 16 * 1024 * 1024;
const MAX_PARTS: u64 = 9_000;
/// Tries per upload, with back-off between them.
const ATTEMPTS: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_secs(2);

/// What is being uploaded: a metric label.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Blob,
    Manifest,
    Tag,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Blob => "blob",
            Kind::Manifest => "manifest",
            Kind::Tag => "tag",
        }
    }
}

/// How an upload ended.
pub enum Outcome {
    Written,
    /// The bucket already had the object (another node uploaded it).
    Exists,
}

pub struct Uploads {
    limit: Arc<tokio::sync::Semaphore>,
    /// Keys queued or uploading: a second request for one is dropped.
    pending: Arc<Mutex<HashSet<String>>>,
}

impl Uploads {
    pub fn new(concurrency: usize) -> Uploads {
        Uploads { limit: Arc::new(tokio::sync::Semaphore::new(concurrency.max(1))), pending: Arc::default() }
    }

    pub fn pending(&self) -> usize {
        self.pending.lock().expect("uploads lock").len()
    }

    /// Run `attempt` in the background until it succeeds or `ATTEMPTS` tries failed.
    pub fn spawn<F, Fut>(&self, key: String, kind: Kind, attempt: F)
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Outcome, SharedError>> + Send,
    {
        if !self.pending.lock().expect("uploads lock").insert(key.clone()) {
            return;
        }
        let (limit, pending) = (self.limit.clone(), self.pending.clone());
        tokio::spawn(async move {
            let _permit = limit.acquire_owned().await;
            let uploads = &crate::metrics::METRICS.shared_uploads;
            let mut backoff = FIRST_BACKOFF;
            for n in 1..=ATTEMPTS {
                match attempt().await {
                    Ok(Outcome::Written) => {
                        tracing::debug!(%key, "uploaded to the shared tier");
                        uploads.with_label_values(&[kind.as_str(), "ok"]).inc();
                        break;
                    }
                    Ok(Outcome::Exists) => {
                        uploads.with_label_values(&[kind.as_str(), "exists"]).inc();
                        break;
                    }
                    Err(e) if n == ATTEMPTS => {
                        tracing::warn!(%key, error = %e, "upload to the shared tier failed; other nodes will fetch this from the upstream");
                        uploads.with_label_values(&[kind.as_str(), "error"]).inc();
                    }
                    Err(e) => {
                        tracing::debug!(%key, error = %e, retry_in = ?backoff, "upload to the shared tier failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff *= 4;
                    }
                }
            }
            pending.lock().expect("uploads lock").remove(&key);
        });
    }
}

/// Upload a file of `len` bytes to `key`: one PUT, or a multipart upload that is completed
/// only after every part went up (and aborted otherwise, so no partial object appears).
pub async fn file(
    c: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    path: &Path,
    len: u64,
) -> Result<Outcome, SharedError> {
    let source = |e: aws_sdk_s3::primitives::ByteStreamError| SharedError::Source {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    };
    if len <= MULTIPART_THRESHOLD {
        let body = ByteStream::read_from().path(path).build().await.map_err(source)?;
        c.put_object()
            .bucket(bucket)
            .key(key)
            .content_type("application/octet-stream")
            .content_length(len as i64)
            .body(body)
            .send()
            .await
            .map_err(|e| SharedError::sdk("put", key, e))?;
        return Ok(Outcome::Written);
    }
    let created = c
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .content_type("application/octet-stream")
        .send()
        .await
        .map_err(|e| SharedError::sdk("create multipart upload", key, e))?;
    let id = created.upload_id().unwrap_or_default().to_string();
    let part_size = PART_SIZE.max(len.div_ceil(MAX_PARTS));
    let result = async {
        let mut parts = Vec::new();
        let mut offset = 0;
        let mut number = 1;
        while offset < len {
            let n = part_size.min(len - offset);
            let body = ByteStream::read_from()
                .path(path)
                .offset(offset)
                .length(Length::Exact(n))
                .build()
                .await
                .map_err(source)?;
            let part = c
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(&id)
                .part_number(number)
                .content_length(n as i64)
                .body(body)
                .send()
                .await
                .map_err(|e| SharedError::sdk("upload part", key, e))?;
            parts
                .push(CompletedPart::builder().part_number(number).set_e_tag(part.e_tag().map(str::to_string)).build());
            offset += n;
            number += 1;
        }
        c.complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(&id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(|e| SharedError::sdk("complete multipart upload", key, e))?;
        Ok(Outcome::Written)
    }
    .await;
    if result.is_err() {
        let _ = c.abort_multipart_upload().bucket(bucket).key(key).upload_id(&id).send().await;
    }
    result
}
