//! The peer set: a static list, or the addresses behind a DNS name (a Kubernetes headless
//! Service) re-resolved every few seconds; plus a short back-off for peers that failed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// How often `peers_dns` is resolved again.
const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// How long a peer that failed is skipped.
const BACK_OFF: Duration = Duration::from_secs(10);

/// A peer's base URL (`http://10.0.0.7:5000`), normalised without a trailing slash.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Peer(Arc<str>);

impl Peer {
    pub fn new(url: &str) -> Peer {
        Peer(url.trim().trim_end_matches('/').into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub struct Members {
    me: Peer,
    fixed: Vec<Peer>,
    dns: Option<String>,
    /// The scheme peers found through DNS are reached with (the one `advertise` uses).
    scheme: String,
    resolved: Arc<RwLock<Vec<Peer>>>,
    failed: Mutex<HashMap<Peer, Instant>>,
}

impl Members {
    pub fn new(peers: &[String], dns: Option<String>, advertise: &str) -> Members {
        let scheme = advertise.split("://").next().unwrap_or("http").to_string();
        Members {
            me: Peer::new(advertise),
            fixed: peers.iter().map(|p| Peer::new(p)).collect(),
            dns,
            scheme,
            resolved: Arc::default(),
            failed: Mutex::default(),
        }
    }

    /// Every known peer, this node included, sorted and without duplicates.
    pub fn current(&self) -> Vec<Peer> {
        let mut all = self.fixed.clone();
        all.extend(self.resolved.read().expect("members lock").iter().cloned());
        all.push(self.me.clone());
        all.sort();
        all.dedup();
        all
    }

    pub fn backing_off(&self, p: &Peer) -> bool {
        self.failed.lock().expect("members lock").get(p).is_some_and(|until| Instant::now() < *until)
    }

    pub fn back_off(&self, p: &Peer) {
        let mut failed = self.failed.lock().expect("members lock");
        failed.retain(|_, until| Instant::now() < *until);
        failed.insert(p.clone(), Instant::now() + BACK_OFF);
    }

    /// Resolve `peers_dns` now and every `REFRESH_EVERY`; on a failed lookup the last
    /// answer stays.
    pub fn spawn_refresh(&self) {
        let Some(name) = self.dns.clone() else { return };
        let (resolved, scheme) = (self.resolved.clone(), self.scheme.clone());
        tokio::spawn(async move {
            loop {
                match tokio::net::lookup_host(name.as_str()).await {
                    Ok(addrs) => {
                        let mut peers: Vec<Peer> = addrs.map(|a| Peer::new(&format!("{scheme}://{a}"))).collect();
                        peers.sort();
                        peers.dedup();
                        let mut cur = resolved.write().expect("members lock");
                        if *cur != peers {
                            tracing::info!(peers = ?peers.iter().map(Peer::as_str).collect::<Vec<_>>(), "cluster peer set changed");
                            *cur = peers;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(name = %name, error = %e, "cannot resolve peers_dns; keeping the last peer set")
                    }
                }
                tokio::time::sleep(REFRESH_EVERY).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn includes_this_node_and_backs_off() {
        let m = Members::new(&["http://a:1/".into(), "http://b:1".into()], None, "http://c:1");
        let names: Vec<String> = m.current().iter().map(|p| p.to_string()).collect();
        assert_eq!(names, ["http://a:1", "http://b:1", "http://c:1"]);
        let a = Peer::new("http://a:1");
        assert!(!m.backing_off(&a));
        m.back_off(&a);
        assert!(m.backing_off(&a));
    }
}
