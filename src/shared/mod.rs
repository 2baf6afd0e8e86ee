//! The shared tier: an S3-compatible bucket (AWS S3, Ceph RGW, MinIO, Garage) that every
//! node of a cluster reads before its upstream and writes back to after a verified fill.
//!
//! This module is a *source*, like `store` and `upstream`: it moves bytes and records to and
//! from the bucket and never decides what to serve. `core` composes it (local disk → shared
//! tier → upstream) and verifies every byte read from here exactly like upstream bytes: the
//! bucket is shared and writable by many parties, so it is never trusted.
//!
//! Object layout under the configured prefix:
//! ```text
//! blobs/sha256/<hex>                   content by digest: layers, configs, manifests
//!                                      (a manifest's media type is its Content-Type)
//! tags/<upstream>/<repo>/_tags/<tag>   JSON: digest, media type, when upstream confirmed it
//! _probe/<node>                        written and removed by the start-up check
//! ```
//! Writes are idempotent (same key, same bytes), so concurrent nodes uploading one digest do
//! not need conditional writes (Garage ignores `If-None-Match` on PUT). Large blobs go up
//! as multipart uploads, completed only after the whole file was sent; a node killed
//! half-way leaves an incomplete upload that is never visible as an object (bound those with
//! an `AbortIncompleteMultipartUpload` lifecycle rule on the bucket).
//!
//! A bucket that fails is skipped for a short back-off (`health`), so a dead or slow tier
//! costs one timeout, not one per request.

mod client;
mod error;
mod health;
mod keys;
mod tags;
mod upload;

pub use error::SharedError;
pub use health::TierHealth;
pub use tags::SharedTag;

/// A tag record found in the bucket.
#[derive(Debug, Clone)]
pub struct TagEntry {
    pub upstream: String,
    pub name: RepoName,
    pub tag: Tag,
    pub record: SharedTag,
}

use crate::oci::{Digest, RepoName, Tag};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// What the shared tier needs to know, built from `[shared.s3]` at the edge.
#[derive(Debug, Clone)]
pub struct S3Settings {
    pub bucket: String,
    /// Key prefix, empty or ending in `/`.
    pub prefix: String,
    pub region: String,
    pub endpoint_url: Option<String>,
    pub path_style: bool,
    /// Time to a response's headers, and each gap between body chunks, on reads.
    pub timeout: Duration,
    /// Background uploads running at once.
    pub upload_concurrency: usize,
    /// How the S3 API is reached (the environment's proxy variables).
    pub egress: crate::egress::Egress,
}

/// An object being read from the bucket.
pub struct SharedBlob {
    /// The object's size, when the bucket announced it.
    pub len: Option<u64>,
    /// The `Content-Range` of a ranged read, as the bucket sent it (the reader checks it).
    pub content_range: Option<String>,
    pub body: ByteStream,
}

pub struct SharedTier {
    settings: S3Settings,
    keys: keys::Keys,
    clients: client::Clients,
    health: health::Health,
    uploads: upload::Uploads,
}

impl SharedTier {
    pub fn new(settings: S3Settings) -> Arc<SharedTier> {
        Arc::new(SharedTier {
            keys: keys::Keys::new(&settings.prefix),
            clients: client::Clients::new(settings.clone()),
            health: health::Health::default(),
            uploads: upload::Uploads::new(settings.upload_concurrency),
            settings,
        })
    }

    /// `s3://bucket/prefix`, for logs and `/readyz`.
    pub fn describe(&self) -> String {
        format!("s3://{}/{}", self.settings.bucket, self.settings.prefix)
    }

    pub fn health(&self) -> TierHealth {
        self.health.state()
    }

    /// How long a read may wait for headers or for the next chunk of a body.
    pub fn read_timeout(&self) -> Duration {
        self.settings.timeout
    }

    /// Check that the bucket takes writes and reads: put, get and delete a probe object.
    pub async fn probe(&self) -> Result<(), SharedError> {
        let key = self.keys.probe(&format!("{}-{}", std::process::id(), crate::oci::Digest::of_bytes(b"probe").hex()));
        let body = Bytes::from_static(b"pullthrough probe");
        let c = self.clients.writes().await;
        let r = async {
            c.put_object()
                .bucket(&self.settings.bucket)
                .key(&key)
                .body(ByteStream::from(body.clone()))
                .send()
                .await
                .map_err(|e| SharedError::sdk("put", &key, e))?;
            let got = self.read_small(&key, 1024).await?.ok_or_else(|| SharedError::Missing { key: key.clone() })?;
            if got.0 != body {
                return Err(SharedError::Mismatch { key: key.clone() });
            }
            self.delete(&key).await
        }
        .await;
        self.health.record(&r);
        r
    }

    /// Open a blob (or manifest) by digest; `None` when the bucket does not have it, or is
    /// being skipped after a recent failure.
    pub async fn open_blob(&self, digest: &Digest) -> Result<Option<SharedBlob>, SharedError> {
        self.open_blob_from(digest, 0).await
    }

    /// `open_blob` from byte `from` on (a ranged read when `from > 0`).
    pub async fn open_blob_from(&self, digest: &Digest, from: u64) -> Result<Option<SharedBlob>, SharedError> {
        if self.health.skipping() {
            return Ok(None);
        }
        let key = self.keys.blob(digest);
        let get = self.clients.reads().await.get_object().bucket(&self.settings.bucket).key(&key);
        let get = if from > 0 { get.range(format!("bytes={from}-")) } else { get };
        let r = match get.send().await {
            Ok(out) => Ok(Some(SharedBlob {
                len: out.content_length().and_then(|l| u64::try_from(l).ok()),
                content_range: out.content_range().map(str::to_string),
                body: out.body,
            })),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) if error::is_not_found(&e) => Ok(None),
            Err(e) => Err(SharedError::sdk("get", &key, e)),
        };
        self.health.record(&r);
        r
    }

    /// A manifest by digest, read whole (at most `limit` bytes), with its media type.
    /// Unverified: the caller hashes it.
    pub async fn read_manifest(
        &self,
        digest: &Digest,
        limit: usize,
    ) -> Result<Option<(Bytes, Option<String>)>, SharedError> {
        if self.health.skipping() {
            return Ok(None);
        }
        let r = self.read_small(&self.keys.blob(digest), limit).await;
        self.health.record(&r);
        r
    }

    async fn read_small(&self, key: &str, limit: usize) -> Result<Option<(Bytes, Option<String>)>, SharedError> {
        let r = self.clients.reads().await.get_object().bucket(&self.settings.bucket).key(key).send().await;
        let out = match r {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) if error::is_not_found(&e) => return Ok(None),
            Err(e) => return Err(SharedError::sdk("get", key, e)),
        };
        if out.content_length().is_some_and(|l| l < 0 || l as u64 > limit as u64) {
            return Err(SharedError::TooLarge { key: key.to_string(), limit });
        }
        let content_type = out.content_type().map(|t| t.split(';').next().unwrap_or("").trim().to_string());
        let mut body = out.body;
        let mut buf = bytes::BytesMut::new();
        loop {
            let chunk = tokio::time::timeout(self.settings.timeout, body.next())
                .await
                .map_err(|_| SharedError::Timeout { key: key.to_string(), after: self.settings.timeout })?;
            match chunk {
                None => break,
                Some(Ok(c)) => {
                    if buf.len() + c.len() > limit {
                        return Err(SharedError::TooLarge { key: key.to_string(), limit });
                    }
                    buf.extend_from_slice(&c);
                }
                Some(Err(e)) => return Err(SharedError::Body { key: key.to_string(), source: e }),
            }
        }
        Ok(Some((buf.freeze(), content_type)))
    }

    /// Delete an object that failed verification, so the next reader goes upstream and the
    /// next verified fill replaces it.
    pub async fn remove_corrupt(&self, digest: &Digest) {
        let key = self.keys.blob(digest);
        match self.delete(&key).await {
            Ok(()) => tracing::warn!(%key, "deleted an object that failed verification from the shared tier"),
            Err(e) => tracing::warn!(%key, error = %e, "could not delete a corrupt object from the shared tier"),
        }
    }

    /// The shared record of a tag, if any node has written one.
    pub async fn tag(&self, upstream: &str, name: &RepoName, tag: &Tag) -> Result<Option<SharedTag>, SharedError> {
        if self.health.skipping() {
            return Ok(None);
        }
        let key = self.keys.tag(upstream, name, tag);
        let r = match self.read_small(&key, tags::MAX_TAG_RECORD).await {
            Ok(Some((bytes, _))) => {
                SharedTag::decode(&bytes).map(Some).map_err(|message| SharedError::BadRecord { key, message })
            }
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        self.health.record(&r);
        r
    }

    /// Write a tag record in the background.
    pub fn put_tag(self: &Arc<Self>, upstream: &str, name: &RepoName, tag: &Tag, record: SharedTag) {
        let key = self.keys.tag(upstream, name, tag);
        let (me, body, k) = (self.clone(), Bytes::from(record.encode()), key.clone());
        self.uploads.spawn(key, upload::Kind::Tag, move || {
            let (me, body, key) = (me.clone(), body.clone(), k.clone());
            async move { me.put_bytes(&key, body, "application/json").await }
        });
    }

    /// Upload a verified manifest in the background (skipped when the object exists).
    pub fn upload_manifest(self: &Arc<Self>, digest: &Digest, media_type: &str, bytes: Bytes) {
        let key = self.keys.blob(digest);
        let (me, media_type, k) = (self.clone(), media_type.to_string(), key.clone());
        self.uploads.spawn(key, upload::Kind::Manifest, move || {
            let (me, bytes, media_type, key) = (me.clone(), bytes.clone(), media_type.clone(), k.clone());
            async move {
                if me.exists(&key, bytes.len() as u64).await {
                    return Ok(upload::Outcome::Exists);
                }
                me.put_bytes(&key, bytes, &media_type).await
            }
        });
    }

    /// Upload a verified, committed blob file in the background (skipped when the object
    /// exists with the same size; multipart when large).
    pub fn upload_blob(self: &Arc<Self>, digest: &Digest, path: std::path::PathBuf, len: u64) {
        let key = self.keys.blob(digest);
        let (me, k) = (self.clone(), key.clone());
        self.uploads.spawn(key, upload::Kind::Blob, move || {
            let (me, path, key) = (me.clone(), path.clone(), k.clone());
            async move {
                if me.exists(&key, len).await {
                    return Ok(upload::Outcome::Exists);
                }
                upload::file(me.clients.writes().await, &me.settings.bucket, &key, &path, len).await
            }
        });
    }

    async fn exists(&self, key: &str, len: u64) -> bool {
        let c = self.clients.writes().await;
        match c.head_object().bucket(&self.settings.bucket).key(key).send().await {
            Ok(h) => h.content_length() == Some(len as i64),
            Err(_) => false,
        }
    }

    async fn put_bytes(&self, key: &str, bytes: Bytes, content_type: &str) -> Result<upload::Outcome, SharedError> {
        let c = self.clients.writes().await;
        c.put_object()
            .bucket(&self.settings.bucket)
            .key(key)
            .content_type(content_type)
            .content_length(bytes.len() as i64)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| SharedError::sdk("put", key, e))?;
        Ok(upload::Outcome::Written)
    }

    /// Every tag record in the bucket, for lifecycle policies (`prune --shared`). Keys that
    /// do not parse as `tags/<upstream>/<repo>/_tags/<tag>` and records that do not decode
    /// are skipped (with a warning): the bucket is not ours alone.
    pub async fn tag_records(&self) -> Result<Vec<TagEntry>, SharedError> {
        let root = format!("{}tags/", self.settings.prefix);
        let c = self.clients.reads().await;
        let mut pages = c.list_objects_v2().bucket(&self.settings.bucket).prefix(&root).into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| SharedError::sdk("list", &root, e))?;
            for key in page.contents().iter().filter_map(|o| o.key()) {
                let Some(parsed) = key.strip_prefix(&root).and_then(keys::parse_tag) else {
                    tracing::warn!(%key, "not a tag record; skipped");
                    continue;
                };
                // `None`: deleted since the listing.
                if let Some((bytes, _)) = self.read_small(key, tags::MAX_TAG_RECORD).await? {
                    match SharedTag::decode(&bytes) {
                        Ok(record) => out.push(TagEntry { upstream: parsed.0, name: parsed.1, tag: parsed.2, record }),
                        Err(message) => tracing::warn!(%key, %message, "not a valid tag record; skipped"),
                    }
                }
            }
        }
        Ok(out)
    }

    /// Delete a tag record (a lifecycle policy expired its image).
    pub async fn remove_tag(&self, upstream: &str, name: &RepoName, tag: &Tag) -> Result<(), SharedError> {
        self.delete(&self.keys.tag(upstream, name, tag)).await
    }

    async fn delete(&self, key: &str) -> Result<(), SharedError> {
        let c = self.clients.writes().await;
        c.delete_object()
            .bucket(&self.settings.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| SharedError::sdk("delete", key, e))?;
        Ok(())
    }

    /// Uploads queued or running (for tests and shutdown).
    pub fn uploads_pending(&self) -> usize {
        self.uploads.pending()
    }
}
