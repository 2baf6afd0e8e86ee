//! The S3 clients: one for reads, with short timeouts and few retries (a slow bucket must
//! fall back to the upstream quickly), one for background writes, with long timeouts (a
//! multipart part is many megabytes). Both use the AWS default credential chain
//! (environment, profile, web identity / IRSA, container and instance metadata).

use super::S3Settings;
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use std::time::Duration;
use tokio::sync::OnceCell;

pub struct Clients {
    settings: S3Settings,
    reads: OnceCell<aws_sdk_s3::Client>,
    writes: OnceCell<aws_sdk_s3::Client>,
}

impl Clients {
    pub fn new(settings: S3Settings) -> Clients {
        Clients { settings, reads: OnceCell::new(), writes: OnceCell::new() }
    }

    pub async fn reads(&self) -> &aws_sdk_s3::Client {
        self.reads.get_or_init(|| self.build(self.settings.timeout, 2)).await
    }

    pub async fn writes(&self) -> &aws_sdk_s3::Client {
        self.writes.get_or_init(|| self.build(Duration::from_secs(300), 3)).await
    }

    async fn build(&self, attempt_timeout: Duration, attempts: u32) -> aws_sdk_s3::Client {
        let s = &self.settings;
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(s.timeout.min(Duration::from_secs(5)))
            .operation_attempt_timeout(attempt_timeout)
            .build();
        let loader = crate::aws::loader(&s.region, s.endpoint_url.as_deref(), attempts, timeouts, &s.egress);
        let sdk = loader.load().await;
        // Checksums only where S3 requires them: S3-compatible engines differ in which of the
        // newer checksum headers and trailers they accept, and every byte read is verified
        // against its digest anyway.
        let cfg = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(s.path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        aws_sdk_s3::Client::from_conf(cfg)
    }
}
