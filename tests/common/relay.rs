//! A TCP relay the test owns: a stable loopback address in front of a process that restarts
//! on a new port. A registry restarted "on the same port" could find it taken by another
//! test; behind a relay it never needs the same port. With no target the relay stops
//! listening, so connections are refused (an upstream that is down), and it listens on the
//! same address again once it has a target.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Mutex;
use tokio::net::{TcpListener, TcpStream};

pub struct Relay {
    pub addr: SocketAddr,
    /// The listening socket's descriptor and its accept loop, while listening.
    listening: Mutex<Option<(RawFd, tokio::task::JoinHandle<()>)>>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some((_, task)) = self.listening.lock().unwrap().take() {
            task.abort();
        }
    }
}

/// Accept on `listener`, relaying every connection to `target`, until the socket is shut.
fn serve(listener: TcpListener, target: SocketAddr) -> (RawFd, tokio::task::JoinHandle<()>) {
    let fd = listener.as_raw_fd();
    let task = tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut server) = TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    (fd, task)
}

impl Relay {
    pub async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        Relay { addr, listening: Mutex::new(Some(serve(listener, target))) }
    }

    /// Send new connections to `target`; `None` stops listening at once (before this
    /// returns), so connections are refused until a target is set again.
    pub fn point_to(&self, target: Option<SocketAddr>) {
        let mut listening = self.listening.lock().unwrap();
        if let Some((fd, task)) = listening.take() {
            // Shut the listening socket here, synchronously: connects are refused from now
            // on, and its accept loop ends (closing it) on its own.
            #[allow(unsafe_code)]
            // SAFETY: `fd` is the accept loop's listening socket, still open: the loop only
            // closes it after accept fails, which is what this shutdown causes.
            let rc = unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
            assert_eq!(rc, 0, "shutdown of the relay's listener: {}", std::io::Error::last_os_error());
            drop(task);
        }
        if let Some(to) = target {
            let std = std::net::TcpListener::bind(self.addr).expect("the relay's address is free again");
            std.set_nonblocking(true).unwrap();
            *listening = Some(serve(TcpListener::from_std(std).unwrap(), to));
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}
