//! A TCP relay the test owns: a stable loopback address (bound once, held for the test's
//! life) in front of a process that restarts on a new port. A registry restarted "on the
//! same port" could find it taken by another test; behind a relay it never needs the same
//! port. With no target, connections are accepted and closed at once (an upstream that is
//! down).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};

pub struct Relay {
    pub addr: SocketAddr,
    target: Arc<Mutex<Option<SocketAddr>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    pub async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target = Arc::new(Mutex::new(Some(target)));
        let t = target.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let to = *t.lock().unwrap();
                tokio::spawn(async move {
                    let Some(to) = to else { return };
                    if let Ok(mut server) = TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Relay { addr, target, task }
    }

    /// Send new connections to `target` (`None`: close them at once).
    pub fn point_to(&self, target: Option<SocketAddr>) {
        *self.target.lock().unwrap() = target;
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}
