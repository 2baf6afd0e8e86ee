//! `[shared]`: the S3-compatible bucket every node shares as a second cache tier.

use super::serde_util::duration;
use serde::Deserialize;
use std::time::Duration;

/// `[shared]`: the tier behind every node's disk cache. Absent: none.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedConfig {
    pub s3: Option<S3Config>,
}

/// `[shared.s3]`: an S3-compatible bucket (AWS S3, Ceph RGW, MinIO, Garage). Credentials
/// come from the AWS default chain (environment, profile, web identity / IRSA, instance role).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix for every object ("cache/"); a trailing `/` is added when missing.
    #[serde(default)]
    pub prefix: String,
    #[serde(default = "default_s3_region")]
    pub region: String,
    /// Garage, MinIO, Ceph RGW, a VPC endpoint; default: AWS's endpoint for the region.
    pub endpoint_url: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), which most non-AWS engines need.
    #[serde(default)]
    pub path_style: bool,
    /// Time to a read's response headers and between its body chunks; past it, the
    /// upstream is asked instead.
    #[serde(default = "default_s3_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Background uploads at once.
    #[serde(default = "default_upload_concurrency")]
    pub upload_concurrency: usize,
}

fn default_s3_region() -> String {
    "us-east-1".into()
}

fn default_s3_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_upload_concurrency() -> usize {
    4
}
