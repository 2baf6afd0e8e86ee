//! moto's server (PyPI `moto[server]`) on loopback: a real ECR API endpoint whose
//! GetAuthorizationToken returns `AWS:<account>-auth-token` with an `expiresAt` in the past.

use super::{free_port, get, wait_until, Proc};
use std::process::Command;
use std::time::Duration;

pub const ACCOUNT: &str = "123456789012";

pub fn password() -> String {
    format!("{ACCOUNT}-auth-token")
}

/// Give a pullthrough process moto's credentials through the environment, where the AWS
/// default chain finds them; nothing reaches for a profile or instance metadata.
pub fn credentials(cmd: &mut Command) {
    for v in ["AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"] {
        cmd.env_remove(v);
    }
    cmd.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent");
}

pub struct Moto {
    pub port: u16,
    pub proc: Proc,
    _dir: tempfile::TempDir,
}

impl Moto {
    pub async fn start_on(port: u16) -> Moto {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("python3");
        cmd.args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()]);
        let proc = Proc::spawn(cmd, dir.path().join("moto.log"));
        let url = format!("http://127.0.0.1:{port}/moto-api/");
        wait_until(
            "moto_server to answer",
            Duration::from_secs(30),
            async || matches!(get(&url, &[]).await, Ok(r) if r.status < 500),
        )
        .await;
        Moto { port, proc, _dir: dir }
    }

    pub async fn start() -> Moto {
        Self::start_on(free_port()).await
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// API calls served (every ECR call is a POST to /).
    pub fn calls(&self) -> usize {
        self.proc.log_text().lines().filter(|l| l.contains("\"POST / HTTP")).count()
    }
}
