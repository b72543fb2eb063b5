//! A TCP proxy that a test can cut and restore, to take a database away from a running
//! gateway (as crates.io's ChaosProxy does). While cut, open connections are dropped and new
//! ones are accepted and closed at once, as a dead network path looks to a client.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

/// The running proxy; it stops when dropped.
pub struct ChaosProxy {
    pub address: SocketAddr,
    cut: watch::Sender<bool>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl ChaosProxy {
    /// Proxies a free local port to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let address = listener.local_addr().expect("proxy address");
        let (cut, cut_watch) = watch::channel(false);
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let tasks = TaskTracker::new();
        let connections = tasks.clone();
        tasks.spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = &mut stopped => return,
                };
                let Ok((client, _)) = accepted else { continue };
                if *cut_watch.borrow() {
                    drop(client);
                    continue;
                }
                let mut cut_watch = cut_watch.clone();
                connections.spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut_watch.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Self {
            address,
            cut,
            _stop: stop,
        }
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}
