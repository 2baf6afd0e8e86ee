//! Test harness: real processes on loopback (Debian's docker-registry as the upstream,
//! the pullthrough binary, skopeo), deterministic test images, and a small HTTP client.
//! Every process is started by the test, killed when its handle drops, and every wait is
//! bounded.
#![allow(dead_code)]

pub mod artifact;
pub mod containerd;
pub mod fake;
pub mod image;
pub mod moto;
pub mod net;
pub mod relay;
pub mod squid;
pub mod token;
pub mod webhook;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use net::{get, get_hashed, Resp};

/// A loopback port that was free a moment ago, for a child that cannot bind port 0 and
/// report what it bound (docker-registry, garage, moto): its caller confirms that the child
/// itself listens there (its own log line) and retries with another port if it could not.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A loopback port held bound but never listening, for as long as the value lives: a
/// connection to it is refused (a dead upstream or peer), and no other process can take the
/// port meanwhile (no `SO_REUSEADDR`, so a listener cannot bind next to it).
pub struct DeadPort {
    _socket: tokio::net::TcpSocket,
    pub addr: SocketAddr,
}

impl DeadPort {
    pub fn new() -> DeadPort {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        DeadPort { _socket: socket, addr }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Fail the test with `what` unless `cond` becomes true within `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut cond: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

/// Wait (bounded) until `proc`'s log contains `needle`: the daemon's log writer does not
/// block, so a line lands a moment after what it reports.
pub async fn wait_log(proc: &Proc, needle: &str) {
    wait_until(&format!("{needle:?} in the log"), Duration::from_secs(10), async || proc.log_text().contains(needle))
        .await;
}

/// A child process killed (and reaped) on drop.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(mut cmd: Command, log: PathBuf) -> Proc {
        let out = std::fs::File::create(&log).unwrap();
        cmd.stdout(out.try_clone().unwrap()).stderr(out).stdin(Stdio::null());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e} (run .ci/run to install test dependencies)"));
        Proc { child, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status();
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Token-auth settings for a registry (`auth: token:`).
pub struct TokenAuth {
    pub realm: String,
    pub service: String,
    pub issuer: String,
    pub cert: PathBuf,
}

impl TokenAuth {
    pub fn yaml(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
            self.realm,
            self.service,
            self.issuer,
            self.cert.display()
        )
    }
}

/// A self-signed certificate and key for 127.0.0.1 (PEM files in `dir`), via openssl.
pub fn self_signed_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed (.ci/run installs it)");
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
    (cert, key)
}

fn openssl_in(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl is installed");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A key and a certificate for `cn` signed by the CA `ca_signed_cert` made as `ca_name`,
/// with extensions `ext` (one per line): `(cert, key)`.
pub fn sign_leaf(dir: &Path, ca_name: &str, cn: &str, ext: &str) -> (PathBuf, PathBuf) {
    let p = |f: &str| dir.join(format!("{ca_name}-{cn}-{f}")).display().to_string();
    let ca = |f: &str| dir.join(format!("{ca_name}-{f}")).display().to_string();
    std::fs::write(p("ext"), ext).unwrap();
    openssl_in(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            &p("key"),
            "-out",
            &p("csr"),
        ],
    );
    let args = ["x509", "-req", "-in", &p("csr"), "-CA", &ca("ca.crt"), "-CAkey", &ca("ca.key"), "-CAcreateserial"];
    openssl_in(dir, &[&args[..], &["-days", "2", "-extfile", &p("ext"), "-out", &p("crt")]].concat());
    (PathBuf::from(p("crt")), PathBuf::from(p("key")))
}

/// A test CA and a server certificate it signed for 127.0.0.1: `(ca, cert, key)`.
pub fn ca_signed_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let ca = |f: &str| dir.join(format!("{name}-{f}")).display().to_string();
    openssl_in(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=test-ca",
            "-keyout",
            &ca("ca.key"),
            "-out",
            &ca("ca.crt"),
        ],
    );
    let (cert, key) = sign_leaf(dir, name, "127.0.0.1", "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n");
    (PathBuf::from(ca("ca.crt")), cert, key)
}

/// A client certificate (clientAuth) for `cn`, signed by the CA made as `ca_name`.
pub fn client_cert(dir: &Path, ca_name: &str, cn: &str) -> (PathBuf, PathBuf) {
    sign_leaf(dir, ca_name, cn, "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n")
}

/// An `auth: htpasswd:` section for one user (bcrypt, as distribution requires).
pub fn htpasswd_yaml(dir: &Path, user: &str, password: &str) -> String {
    let file = dir.join("htpasswd");
    std::fs::write(&file, format!("{user}:{}\n", bcrypt::hash(password, 4).unwrap())).unwrap();
    format!("auth:\n  htpasswd:\n    realm: test\n    path: {}\n", file.display())
}

/// Debian's docker-registry (distribution 2.8) on a loopback port, filesystem storage.
pub struct Registry {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub proc: Proc,
}

impl Registry {
    pub async fn start(auth: Option<&TokenAuth>) -> Registry {
        let yaml = auth.map(TokenAuth::yaml).unwrap_or_default();
        Self::start_in(tempfile::tempdir().unwrap(), &yaml).await
    }

    /// Start on a given directory (with an `auth:` section in YAML, empty: none) on a fresh
    /// port: docker-registry cannot bind port 0 and report it, so a port taken by another
    /// process between the pick and the bind (the child exits) is retried with a new one.
    pub async fn start_in(dir: tempfile::TempDir, auth_yaml: &str) -> Registry {
        let mut dir = dir;
        for _ in 0..5 {
            match Self::try_start(dir, free_port(), auth_yaml).await {
                Ok(r) => return r,
                Err(d) => dir = d,
            }
        }
        panic!("docker-registry found no free port in 5 tries");
    }

    /// Start on `port`; `Err` (with the directory back) if the child exited because the port
    /// was taken. Ready means this child logged that it listens on the address and still runs:
    /// a connect would also succeed to another process's listener on the port.
    async fn try_start(dir: tempfile::TempDir, port: u16, auth_yaml: &str) -> Result<Registry, tempfile::TempDir> {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let cfg = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  secret: test-secret\n{auth_yaml}",
            dir.path().join("data").display()
        );
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve").arg(&cfg_path);
        let mut proc = Proc::spawn(cmd, dir.path().join(format!("registry-{port}.log")));
        let listening = format!("listening on {addr}");
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = proc.child.try_wait() {
                let log = proc.log_text();
                assert!(log.contains("address already in use"), "docker-registry exited with {status}:\n{log}");
                drop(proc);
                return Err(dir);
            }
            if proc.log_text().contains(&listening) {
                return Ok(Registry { addr, dir, proc });
            }
            assert!(start.elapsed() < Duration::from_secs(20), "docker-registry did not start:\n{}", proc.log_text());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many `GET` requests for `path` (e.g. `/v2/x/blobs/sha256:…`) the registry served.
    pub fn count_gets(&self, path: &str) -> usize {
        let needle = format!("\"GET {path} HTTP");
        self.proc.log_text().lines().filter(|l| l.contains(&needle)).count()
    }

    /// Stop the registry, keeping its data directory for `start_at`.
    pub fn stop(mut self) -> (tempfile::TempDir, u16) {
        self.proc.kill();
        (self.dir, self.addr.port())
    }
}

/// The pullthrough binary under test.
pub struct Proxy {
    pub addr: SocketAddr,
    /// The admin listener: /metrics, /healthz, /readyz.
    pub admin: SocketAddr,
    pub cache: PathBuf,
    pub proc: Proc,
    pub dir: tempfile::TempDir,
}

impl Proxy {
    /// Start with `[[upstream]]` sections given as TOML; server and cache are filled in.
    pub async fn start(upstreams_toml: &str) -> Proxy {
        Self::start_with("", upstreams_toml).await
    }

    /// Start with extra `[cache]` settings.
    pub async fn start_with(cache_toml: &str, upstreams_toml: &str) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let cfg_path = Self::write_config(dir.path(), cache_toml, upstreams_toml);
        Self::launch(dir, &cfg_path, |c| c).await
    }

    /// Write a config into `dir`; the cache is `dir/cache`, the listeners on port 0 (the
    /// daemon logs the addresses it bound, and `launch` reads them there).
    pub fn write_config(dir: &Path, cache_toml: &str, upstreams_toml: &str) -> PathBuf {
        let addr = "127.0.0.1:0";
        let admin = "127.0.0.1:0";
        let cache = dir.join("cache");
        let cfg = format!(
            "[server]\nlisten = \"{addr}\"\nadmin_listen = \"{admin}\"\nshutdown_grace = \"5s\"\n[cache]\ndir = \"{}\"\nmin_free = \"0\"\n{cache_toml}\n{upstreams_toml}",
            cache.display()
        );
        let cfg_path = dir.join("pullthrough.toml");
        std::fs::File::create(&cfg_path).unwrap().write_all(cfg.as_bytes()).unwrap();
        cfg_path
    }

    /// Start the binary on an existing config; `wrap` may put a command in front of it.
    pub async fn launch(dir: tempfile::TempDir, cfg_path: &Path, wrap: impl FnOnce(Command) -> Command) -> Proxy {
        Self::try_launch(dir, cfg_path, wrap).await.unwrap_or_else(|log| panic!("pullthrough exited:\n{log}"))
    }

    /// `launch`, but a daemon that exits before serving is `Err(its log)` (a caller that had
    /// to pick its ports ahead, as a cluster's peers must, retries on "cannot listen").
    pub async fn try_launch(
        dir: tempfile::TempDir,
        cfg_path: &Path,
        wrap: impl FnOnce(Command) -> Command,
    ) -> Result<Proxy, String> {
        let text = std::fs::read_to_string(cfg_path).unwrap();
        let value =
            |key: &str| text.lines().find_map(|l| l.strip_prefix(key)).unwrap().trim().trim_matches('"').to_string();
        let cache = PathBuf::from(value("dir = "));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pullthrough"));
        cmd.arg("serve").arg("--config").arg(cfg_path).env("RUST_LOG", "info,pullthrough=debug");
        static LAUNCHES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = LAUNCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut proc = Proc::spawn(wrap(cmd), dir.path().join(format!("pullthrough-{n}.log")));
        // Ready: this child logged the addresses it bound ("pullthrough serving", after the
        // listeners are bound), not "something on a port answers".
        let start = Instant::now();
        let (addr, admin) = loop {
            if let Some(addrs) = serving_addrs(&proc.log_text()) {
                break addrs;
            }
            if let Ok(Some(status)) = proc.child.try_wait() {
                return Err(format!("exit {status}:\n{}", proc.log_text()));
            }
            assert!(start.elapsed() < Duration::from_secs(20), "pullthrough did not start:\n{}", proc.log_text());
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Ok(Proxy { addr, admin, cache, proc, dir })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The value of one metric series (exact name with labels, as exposed); fails the test
    /// if the series does not exist (a renamed metric must not read as zero).
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.metrics_text().await;
        series_value(&text, series).unwrap_or_else(|| panic!("no metric series {series} in /metrics:\n{text}"))
    }

    /// The value of a series, or `None` when it is absent: for a labelled counter whose series
    /// appears only once it happens. (Checking that its family exists needs every family
    /// exposed from the start: issue 28 item 7.)
    pub async fn metric_opt(&self, series: &str) -> Option<f64> {
        series_value(&self.metrics_text().await, series)
    }

    async fn metrics_text(&self) -> String {
        get(&format!("http://{}/metrics", self.admin), &[]).await.unwrap().text()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("pullthrough.toml")
    }

    /// Kill (SIGKILL) and start again on the same config and cache.
    pub async fn restart(self) -> Proxy {
        let Proxy { mut proc, dir, .. } = self;
        proc.kill();
        drop(proc);
        let cfg = dir.path().join("pullthrough.toml");
        Self::launch(dir, &cfg, |c| c).await
    }

    /// Run a pullthrough subcommand against this proxy's config; (success, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_pullthrough"))
            .args(args)
            .arg("--config")
            .arg(self.config_path())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Total bytes of the files under the cache's `blobs/`.
    pub fn cached_bytes(&self) -> u64 {
        let root = self.cache.join("blobs");
        list_files(&root).iter().map(|p| std::fs::metadata(root.join(p)).map(|m| m.len()).unwrap_or(0)).sum()
    }

    /// Wait (bounded) until a blob is committed to the cache: clients get their last byte
    /// once it is verified, and the commit (fsync, rename) follows.
    pub async fn wait_cached(&self, digest: &str) {
        let hex = digest.trim_start_matches("sha256:").to_string();
        wait_until(&format!("{digest} to be committed"), Duration::from_secs(10), async || {
            self.cached_blobs().iter().any(|p| p.ends_with(&hex))
        })
        .await;
    }

    /// Every file under the cache's `blobs/` (relative paths), sorted.
    pub fn cached_blobs(&self) -> Vec<String> {
        list_files(&self.cache.join("blobs"))
    }
}

/// The value of `series` in a Prometheus text exposition.
fn series_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse().unwrap())
}

/// The client and admin addresses from the daemon's "pullthrough serving" log line
/// (`listen=ADDR ... admin=Some(ADDR)`).
pub fn serving_addrs(log: &str) -> Option<(SocketAddr, SocketAddr)> {
    let line = log.lines().find(|l| l.contains("pullthrough serving"))?;
    // Text (`listen=ADDR`) or JSON (`"listen":"ADDR"`) logs.
    let line = line.replace("\":\"", "=").replace(['"', ','], " ");
    let field = |key: &str| line.split(' ').find_map(|w| w.strip_prefix(key)).map(str::to_string);
    let listen = field("listen=")?.parse().ok()?;
    // No admin listener (`admin=None`): /metrics and the probes are on the client listener.
    let admin = match field("admin=Some(") {
        Some(a) => a.trim_end_matches(')').parse().ok()?,
        None => listen,
    };
    Some((listen, admin))
}

/// One plain-HTTP upstream section for a proxy config.
pub fn upstream_toml(host: &str, url: &str, extra: &str) -> String {
    format!("[[upstream]]\nhost = \"{host}\"\nurl = \"{url}\"\n{extra}\n")
}

/// All files below `root`, as sorted relative paths.
pub fn list_files(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// Run skopeo with `args`, failing the test with its output if it fails.
pub fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run skopeo: {e} (run .ci/run to install test dependencies)"));
    assert!(
        out.status.success(),
        "skopeo {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Push an OCI layout's `layout_tag` (all platforms) to `registry` as `name_tag`.
pub fn push(layout: &Path, layout_tag: &str, registry: &str, name_tag: &str, creds: Option<&str>) {
    let src = format!("oci:{}:{layout_tag}", layout.display());
    let dst = format!("docker://{registry}/{name_tag}");
    let mut args = vec!["copy", "--all", "--dest-tls-verify=false", "--preserve-digests"];
    if let Some(c) = creds {
        args.push("--dest-creds");
        args.push(c);
    }
    args.push(&src);
    args.push(&dst);
    skopeo(&args);
}

/// The sha256 digests of every blob in an OCI layout, sorted.
pub fn layout_digests(layout: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        list_files(&layout.join("blobs/sha256")).into_iter().map(|h| format!("sha256:{h}")).collect();
    v.sort();
    v
}

/// Sorted and deduplicated, to compare with `layout_digests`.
pub fn sorted_unique(v: &[String]) -> Vec<String> {
    let mut v = v.to_vec();
    v.sort();
    v.dedup();
    v
}

/// `skopeo copy` an image (`docker://…`, plain HTTP) into a fresh OCI layout; the layout
/// and the digests of every blob in it. skopeo verifies each digest as it copies.
pub fn skopeo_pull(from: &str, extra: &[&str]) -> (tempfile::TempDir, Vec<String>) {
    let out = tempfile::tempdir().unwrap();
    let dest = format!("oci:{}:x", out.path().display());
    let mut args = vec!["copy", "--src-tls-verify=false"];
    args.extend_from_slice(extra);
    args.push(from);
    args.push(&dest);
    skopeo(&args);
    let digests = layout_digests(out.path());
    (out, digests)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
