//! A real containerd for tests: started as root with its own root, state and sockets in a
//! temp dir, the CRI plugin disabled; `ctr` talks to it.

use super::{wait_until, Proc};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

pub struct Containerd {
    sock: std::path::PathBuf,
    _proc: Proc,
}

pub async fn start_containerd(dir: &Path) -> Containerd {
    std::fs::create_dir_all(dir).unwrap();
    let sock = dir.join("c.sock");
    let cfg = dir.join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "version = 2\nroot = \"{}\"\nstate = \"{}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{}\"\n[ttrpc]\n  address = \"{}\"\n",
            dir.join("root").display(),
            dir.join("state").display(),
            sock.display(),
            dir.join("t.sock").display(),
        ),
    )
    .unwrap();
    let mut cmd = Command::new("containerd");
    cmd.arg("--config").arg(&cfg);
    let proc = Proc::spawn(cmd, dir.join("containerd.log"));
    wait_until("containerd's socket", Duration::from_secs(30), async || sock.exists()).await;
    let c = Containerd { sock, _proc: proc };
    wait_until("containerd to answer", Duration::from_secs(30), async || c.ctr(&["version"]).status.success()).await;
    c
}

impl Containerd {
    pub fn ctr(&self, args: &[&str]) -> std::process::Output {
        Command::new("ctr")
            .arg("--address")
            .arg(&self.sock)
            .args(["--namespace", "pt-test"])
            .args(args)
            .output()
            .expect("ctr is installed (.ci/run installs containerd)")
    }
}
