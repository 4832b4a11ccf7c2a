//! A loopback TCP proxy in front of a coordinator that can cut every connection through it at
//! once, as a load balancer or a flaky network does to long-lived streams. New connections are
//! accepted again right after a cut; while its upstream is down, a connection is refused by
//! closing it at once.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

pub(crate) struct CuttingProxy {
    /// `http://127.0.0.1:PORT`, the address runners are given.
    pub(crate) base_url: String,
    connections: Arc<Mutex<JoinSet<()>>>,
    acceptor: tokio::task::JoinHandle<()>,
}

impl CuttingProxy {
    /// Forward every connection to `upstream` (`host:port`).
    pub(crate) async fn start(upstream: String) -> anyhow::Result<CuttingProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let connections: Arc<Mutex<JoinSet<()>>> = Arc::default();
        let accepted = Arc::clone(&connections);
        let acceptor = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let _ = inbound.set_nodelay(true);
                let upstream = upstream.clone();
                accepted
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .spawn(async move {
                        let Ok(mut outbound) = TcpStream::connect(&upstream).await else {
                            return;
                        };
                        let _ = outbound.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    });
            }
        });
        Ok(CuttingProxy {
            base_url: format!("http://{address}"),
            connections,
            acceptor,
        })
    }

    /// Cut every connection open now; answers how many there were.
    pub(crate) fn cut(&self) -> usize {
        let mut connections = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while connections.try_join_next().is_some() {}
        let open = connections.len();
        connections.abort_all();
        open
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .abort_all();
    }
}
