//! Debian's squid as the site's egress proxy, on loopback: no cache, everything in a temp
//! dir, and a `hosts_file` that gives names only squid can resolve (so a connection to them
//! succeeds only through the proxy). Optionally Basic auth against an htpasswd file, so the
//! proxy answers 407 to a client without its credentials.

use super::{wait_until, Proc};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The name squid resolves to 127.0.0.1 and nothing else does.
pub const HIDDEN: &str = "registry.squid.test";

pub struct Squid {
    pub port: u16,
    pub proc: Proc,
    dir: tempfile::TempDir,
}

impl Squid {
    /// Start squid; `user` set: every request needs that user's Basic credentials.
    pub async fn start(user: Option<(&str, &str)>) -> Squid {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // Squid runs as `proxy` once started as root: it must write its logs here.
        Command::new("chmod").arg("0777").arg(d).status().unwrap();
        std::fs::write(d.join("hosts"), format!("127.0.0.1 {HIDDEN}\n")).unwrap();
        let port = super::free_port();
        let auth = match user {
            Some((name, password)) => {
                htpasswd(d, name, password);
                format!(
                    "auth_param basic program /usr/lib/squid/basic_ncsa_auth {}\nacl authed proxy_auth REQUIRED\nhttp_access allow authed\n",
                    d.join("passwd").display()
                )
            }
            None => "http_access allow localhost\n".into(),
        };
        let conf = format!(
            "http_port 127.0.0.1:{port}\ncache deny all\nhosts_file {h}\npid_filename {p}\naccess_log stdio:{a}\n\
             cache_log {c}\ncoredump_dir {d}\ncache_effective_user proxy\npinger_enable off\n\
             shutdown_lifetime 0 seconds\n{auth}http_access deny all\n",
            h = d.join("hosts").display(),
            p = d.join("squid.pid").display(),
            a = d.join("access.log").display(),
            c = d.join("cache.log").display(),
            d = d.display(),
        );
        std::fs::write(d.join("squid.conf"), conf).unwrap();
        let mut cmd = Command::new("/usr/sbin/squid");
        cmd.arg("-N").arg("-f").arg(d.join("squid.conf"));
        let proc = Proc::spawn(cmd, d.join("squid.out"));
        wait_until("squid to accept connections", Duration::from_secs(30), async || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .await;
        Squid { port, proc, dir }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// squid's access log (one line per request, written when it ends).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// Requests (tunnels) squid served to `host_port` with status `code`: `"CONNECT h:p"` lines.
    pub fn tunnels(&self, host_port: &str, code: u16) -> usize {
        let want = format!("CONNECT {host_port} ");
        let status = format!("/{code} ");
        self.access_log().lines().filter(|l| l.contains(&want) && l.contains(&status)).count()
    }

    /// Wait (bounded) until squid has logged at least `n` tunnels to `host_port` (it logs a
    /// tunnel when it closes: when the client's pooled connection ends).
    pub async fn wait_tunnels(&self, host_port: &str, n: usize) {
        wait_until(&format!("{n} tunnels to {host_port} in squid's log"), Duration::from_secs(30), async || {
            self.access_log().lines().filter(|l| l.contains(&format!("CONNECT {host_port} "))).count() >= n
        })
        .await;
    }
}

/// An htpasswd file (`passwd`) for squid's basic_ncsa_auth, the hash made by openssl.
fn htpasswd(dir: &Path, name: &str, password: &str) {
    let out = Command::new("openssl").args(["passwd", "-apr1", password]).output().unwrap();
    assert!(out.status.success(), "openssl passwd failed");
    let hash = String::from_utf8(out.stdout).unwrap();
    std::fs::write(dir.join("passwd"), format!("{name}:{}\n", hash.trim())).unwrap();
}
