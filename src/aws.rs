//! AWS SDK plumbing shared by the ECR credentials (`upstream`) and the S3 tier (`shared`):
//! one HTTPS client (rustls with ring, the crypto provider of the rest of the binary) and the
//! default credential chain, with the caller's region, endpoint, retries and timeouts.

use aws_config::timeout::TimeoutConfig;

/// A config loader for one AWS service client, its connections leaving as `egress` says
/// (the SDK's own proxy support: the environment's variables, a set proxy, or none).
pub fn loader(
    region: &str,
    endpoint_url: Option<&str>,
    attempts: u32,
    timeouts: TimeoutConfig,
    egress: &crate::egress::Egress,
) -> aws_config::ConfigLoader {
    let proxy = egress.aws_proxy_config();
    // The connector is built per the SDK's settings (timeouts, sleep), as `build_https` does,
    // with the proxy added: the HTTP client builder has no proxy setter of its own.
    let http = aws_smithy_http_client::Builder::new().build_with_connector_fn(move |settings, components| {
        let mut b = aws_smithy_http_client::Connector::builder();
        b.set_connector_settings(settings.cloned());
        if let Some(c) = components {
            b.set_sleep_impl(c.sleep_impl());
        }
        b.proxy_config(proxy.clone())
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build()
    });
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
