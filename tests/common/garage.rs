//! Garage (crates.io `garage`, a real S3 engine) single-node on loopback, with one bucket
//! and one key made at start (`server --single-node --default-bucket`), and an S3 client
//! for tests to look at (or damage) what pullthrough wrote there. Not part of `common`: only
//! the shared-tier tests include it (`#[path]`), so other test binaries do not compile the SDK.

use crate::common::{free_port, wait_until, Proc};
use std::process::Command;
use std::time::Duration;

pub const ACCESS_KEY: &str = "GK31c2f218a2e44f485b94239e";
pub const SECRET_KEY: &str = "b892c0665f0ada8a4755dae98baa3b133590e11dae3bcc1f9d769d67f16c3835";
pub const BUCKET: &str = "pullthrough";
pub const REGION: &str = "garage";

pub struct Garage {
    pub port: u16,
    pub proc: Proc,
    _dir: tempfile::TempDir,
}

impl Garage {
    pub async fn start() -> Garage {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, free_port()).await
    }

    /// Start on `dir` (keeping what an earlier run there stored) and `port`.
    pub async fn start_in(dir: tempfile::TempDir, port: u16) -> Garage {
        let rpc = free_port();
        let cfg = format!(
            "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"sqlite\"\nreplication_factor = 1\n\
             rpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\n\
             rpc_secret = \"{secret}\"\n\n[s3_api]\ns3_region = \"{REGION}\"\napi_bind_addr = \"127.0.0.1:{port}\"\n\
             root_domain = \".s3.garage.localhost\"\n",
            d = dir.path().display(),
            secret = "0f".repeat(32),
        );
        let cfg_path = dir.path().join("garage.toml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let mut cmd = Command::new(garage_bin());
        cmd.arg("-c")
            .arg(&cfg_path)
            .args(["server", "--single-node", "--default-bucket"])
            .env("GARAGE_DEFAULT_ACCESS_KEY", ACCESS_KEY)
            .env("GARAGE_DEFAULT_SECRET_KEY", SECRET_KEY)
            .env("GARAGE_DEFAULT_BUCKET", BUCKET)
            .env("RUST_LOG", "garage=info");
        let proc = Proc::spawn(cmd, dir.path().join(format!("garage-{port}.log")));
        let g = Garage { port, proc, _dir: dir };
        let client = g.client().await;
        wait_until("garage to serve its bucket", Duration::from_secs(30), async || {
            client.head_bucket().bucket(BUCKET).send().await.is_ok()
        })
        .await;
        g
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The `[shared.s3]` section for a pullthrough node using this bucket.
    pub fn toml(&self, prefix: &str) -> String {
        format!(
            "[shared.s3]\nbucket = \"{BUCKET}\"\nprefix = \"{prefix}\"\nregion = \"{REGION}\"\nendpoint_url = \"{}\"\npath_style = true\ntimeout = \"2s\"\n",
            self.endpoint()
        )
    }

    /// Give a pullthrough process the bucket's credentials through the environment, as the
    /// AWS default chain reads them (and never let it try instance metadata).
    pub fn credentials(mut cmd: Command) -> Command {
        cmd.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE");
        cmd
    }

    pub async fn client(&self) -> aws_sdk_s3::Client {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http)
            .region(aws_config::Region::new(REGION))
            .endpoint_url(self.endpoint())
            .credentials_provider(aws_sdk_s3::config::Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test"))
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder().operation_attempt_timeout(Duration::from_secs(5)).build(),
            )
            .load()
            .await;
        aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&sdk).force_path_style(true).build())
    }

    /// The bytes of an object, or `None` when it does not exist.
    pub async fn get(&self, key: &str) -> Option<Vec<u8>> {
        let out = self.client().await.get_object().bucket(BUCKET).key(key).send().await.ok()?;
        Some(out.body.collect().await.ok()?.into_bytes().to_vec())
    }

    pub async fn put(&self, key: &str, bytes: Vec<u8>) {
        self.client().await.put_object().bucket(BUCKET).key(key).body(bytes.into()).send().await.unwrap();
    }

    /// Wait until every blob in `digests` is in the bucket under `prefix`.
    pub async fn wait_blobs(&self, prefix: &str, digests: &[String]) {
        let client = self.client().await;
        for d in digests {
            let key = format!("{prefix}blobs/sha256/{}", d.trim_start_matches("sha256:"));
            wait_until(&format!("{key} in the bucket"), Duration::from_secs(30), async || {
                client.head_object().bucket(BUCKET).key(&key).send().await.is_ok()
            })
            .await;
        }
    }
}

/// The garage binary: on PATH, or where `cargo install` puts it.
fn garage_bin() -> String {
    if let Ok(p) = std::env::var("GARAGE_BIN") {
        return p;
    }
    let cargo_home =
        std::env::var("CARGO_HOME").unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap_or_default()));
    let installed = format!("{cargo_home}/bin/garage");
    if std::path::Path::new(&installed).exists() {
        return installed;
    }
    "garage".into()
}
