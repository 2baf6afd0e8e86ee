//! AWS SDK plumbing shared by the ECR credentials (`upstream`) and the S3 tier (`shared`):
//! one HTTPS client (rustls with ring, the crypto provider of the rest of the binary) and the
//! default credential chain, with the caller's region, endpoint, retries and timeouts.

use aws_config::timeout::TimeoutConfig;

/// A config loader for one AWS service client.
pub fn loader(
    region: &str,
    endpoint_url: Option<&str>,
    attempts: u32,
    timeouts: TimeoutConfig,
) -> aws_config::ConfigLoader {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http)
        .region(aws_config::Region::new(region.to_string()))
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(attempts))
        .timeout_config(timeouts);
    if let Some(url) = endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader
}
