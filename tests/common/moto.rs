//! moto's server (PyPI `moto[server]`) on loopback: a real ECR API endpoint whose
//! GetAuthorizationToken returns `AWS:<account>-auth-token` with an `expiresAt` in the past.

use super::{free_port, get, wait_until, Proc};
use std::process::Command;
use std::time::Duration;

pub const ACCOUNT: &str = "123456789012";

pub fn password() -> String {
    format!("{ACCOUNT}-auth-token")
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
