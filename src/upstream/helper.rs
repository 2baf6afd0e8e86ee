//! Docker credential helpers (`credHelpers` and `credsStore` in a Docker `config.json`, or
//! `kind = "credential-helper"`): `docker-credential-<name> get`, given the registry's server
//! URL on stdin, answers `{"ServerURL": …, "Username": …, "Secret": …}` (the
//! docker-credential-helpers protocol).
//!
//! Helpers say nothing about how long an answer lasts, and those for cloud registries hand
//! out tokens that live hours: an answer is kept until the registry refuses it or
//! [`MAX_AGE`] passes, then the helper runs again, once for every request that needs it
//! (answers carry a generation, as ECR tokens do, so concurrent refusals share one run).
//! A helper that is missing, fails or answers nonsense is named in the error, with what it
//! printed.

use super::cooldown::Cooldown;
use super::error::UpstreamError;
use crate::secret::Secret;
use std::io::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a helper's answer is used before the helper is asked again.
pub const MAX_AGE: Duration = Duration::from_secs(30 * 60);

/// How long a helper may take to answer.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Helper output larger than this is refused (answers are small JSON documents).
const MAX_OUTPUT: usize = 64 * 1024;

#[derive(Clone)]
struct Answer {
    username: String,
    secret: Secret,
    generation: u64,
    at: Instant,
}

/// Credentials from one helper for one registry.
pub struct HelperCredentials {
    host: String,
    /// `docker-credential-<name>`, looked up on `PATH`.
    program: String,
    /// What the helper is asked for (the `auths`-style key: a host, or Docker Hub's URL).
    server: String,
    current: Mutex<Option<Answer>>,
    /// One run at a time; concurrent callers wait for it and reuse its answer.
    running: tokio::sync::Mutex<()>,
    next_generation: std::sync::atomic::AtomicU64,
    /// After a failed run, requests do not run the helper again until this ends.
    failing: Cooldown,
}

/// Basic credentials, and which answer they came from.
pub struct HelperAnswer {
    pub username: String,
    pub password: Secret,
    pub generation: u64,
}

impl HelperCredentials {
    pub fn new(host: &str, helper: &str, server: &str, cooldown: Duration) -> HelperCredentials {
        HelperCredentials {
            host: host.to_string(),
            program: format!("docker-credential-{helper}"),
            server: server.to_string(),
            current: Mutex::new(None),
            running: tokio::sync::Mutex::new(()),
            next_generation: 0.into(),
            failing: Cooldown::new(cooldown),
        }
    }

    fn valid(&self) -> Option<Answer> {
        self.current.lock().expect("helper lock").clone().filter(|a| a.at.elapsed() < MAX_AGE)
    }

    /// The current answer if it is young enough, else a new one from the helper.
    pub async fn credentials(&self) -> Result<HelperAnswer, UpstreamError> {
        let a = match self.valid() {
            Some(a) => a,
            None => {
                let _turn = self.running.lock().await;
                match self.valid() {
                    Some(a) => a,
                    None => self.run().await?,
                }
            }
        };
        Ok(HelperAnswer { username: a.username, password: a.secret, generation: a.generation })
    }

    /// The generation the next answer will get.
    pub fn next_generation(&self) -> u64 {
        self.next_generation.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The registry refused the answer of generation `refused`: forget it (unless it was
    /// replaced already), so the next request runs the helper again.
    pub fn refused(&self, refused: u64) {
        let mut cur = self.current.lock().expect("helper lock");
        if cur.as_ref().is_some_and(|a| a.generation == refused) {
            *cur = None;
            crate::metrics::METRICS.token_forced_refreshes.with_label_values(&[&self.host]).inc();
        }
    }

    async fn run(&self) -> Result<Answer, UpstreamError> {
        if let Some(r) = self.failing.running() {
            crate::metrics::METRICS.token_refreshes_suppressed.with_label_values(&[&self.host]).inc();
            return Err(self.error(format!(
                "not running it again for {}s after a failure (the failure: {})",
                r.left.as_secs().max(1),
                r.reason
            )));
        }
        let (program, server) = (self.program.clone(), self.server.clone());
        let result = tokio::task::spawn_blocking(move || ask(&program, &server))
            .await
            .map_err(|e| format!("the helper's task failed: {e}"))
            .and_then(|r| r);
        let refreshes = &crate::metrics::METRICS.token_refreshes;
        match result {
            Ok((username, secret)) => {
                refreshes.with_label_values(&[&self.host, "helper", "ok"]).inc();
                self.failing.reset();
                let generation = self.next_generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let a = Answer { username, secret, generation, at: Instant::now() };
                *self.current.lock().expect("helper lock") = Some(a.clone());
                Ok(a)
            }
            Err(message) => {
                refreshes.with_label_values(&[&self.host, "helper", "error"]).inc();
                self.failing.trip(message.clone());
                tracing::warn!(upstream = %self.host, helper = %self.program, error = %message, "credential helper failed");
                Err(self.error(message))
            }
        }
    }

    fn error(&self, message: String) -> UpstreamError {
        UpstreamError::Token {
            host: self.host.clone(),
            message: format!("credential helper {}: {message}", self.program),
        }
    }
}

/// Run `program get` with `server` on stdin; its username and secret. Blocking.
fn ask(program: &str, server: &str) -> Result<(String, Secret), String> {
    use std::process::{Command, Stdio};
    let mut child = Command::new(program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                format!("{program} is not on PATH (install it, or fix credHelpers/credsStore)")
            }
            _ => format!("cannot run {program}: {e}"),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading closes the pipe; its exit status says why.
        let _ = stdin.write_all(server.as_bytes());
    }
    // Read only after it exits: answers are far smaller than a pipe's buffer.
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if started.elapsed() > TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer within {TIMEOUT:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("waiting for it: {e}")),
        }
    };
    let read = |r: Option<&mut dyn std::io::Read>| {
        let mut buf = Vec::new();
        if let Some(r) = r {
            let _ = r.take(MAX_OUTPUT as u64).read_to_end(&mut buf);
        }
        buf
    };
    use std::io::Read as _;
    let out = read(child.stdout.as_mut().map(|s| s as &mut dyn std::io::Read));
    let err = read(child.stderr.as_mut().map(|s| s as &mut dyn std::io::Read));
    if !status.success() {
        // Helpers print "credentials not found in native keychain" and the like on stdout.
        let said = String::from_utf8_lossy(if out.is_empty() { &err } else { &out }).trim().to_string();
        return Err(format!("`{program} get` for {server} failed ({status}): {said}"));
    }
    parse_answer(&out).map_err(|m| format!("`{program} get` for {server}: {m}"))
}

/// The username and secret of a helper's answer.
fn parse_answer(out: &[u8]) -> Result<(String, Secret), String> {
    #[derive(serde::Deserialize)]
    struct Reply {
        #[serde(rename = "Username")]
        username: String,
        #[serde(rename = "Secret")]
        secret: String,
    }
    let r: Reply =
        serde_json::from_slice(out).map_err(|e| format!("the answer is not the helper protocol's JSON: {e}"))?;
    if r.username == "<token>" {
        return Err(
            "the answer is an identity token, which pullthrough does not support; store a username and password".into(),
        );
    }
    if r.secret.is_empty() {
        return Err("the answer has an empty Secret".into());
    }
    Ok((r.username, Secret::new(r.secret)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_protocols_answer() {
        let (u, s) = parse_answer(br#"{"ServerURL":"r.io","Username":"AWS","Secret":"pw"}"#).unwrap();
        assert_eq!((u.as_str(), s.expose()), ("AWS", "pw"));
        assert!(parse_answer(br#"{"Username":"<token>","Secret":"x"}"#).unwrap_err().contains("identity token"));
        assert!(parse_answer(b"credentials not found").unwrap_err().contains("JSON"));
    }

    #[test]
    fn a_missing_helper_is_named() {
        let e = ask("docker-credential-surely-not-installed-pt", "r.io").unwrap_err();
        assert!(e.contains("docker-credential-surely-not-installed-pt is not on PATH"), "{e}");
    }
}
