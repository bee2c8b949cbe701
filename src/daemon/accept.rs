//! Serving a listener's connections, a bounded number at once: the control
//! socket and the metrics HTTP listener share this.

use std::future::Future;
use std::io;
use std::sync::Arc;

/// A listener whose connections [`serve_capped`] hands out.
pub(super) trait Listener: Send + 'static {
    type Stream: Send + 'static;
    fn accept_one(&self) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

impl Listener for tokio::net::UnixListener {
    type Stream = tokio::net::UnixStream;
    async fn accept_one(&self) -> io::Result<Self::Stream> {
        self.accept().await.map(|(s, _)| s)
    }
}

impl Listener for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn accept_one(&self) -> io::Result<Self::Stream> {
        self.accept().await.map(|(s, _)| s)
    }
}

/// Serve `listener`'s connections with `serve`, each in a task of its own,
/// at most `max` at once: more wait in the listen backlog, so clients that
/// hang around cost a bounded number of tasks and never the daemon's loop.
pub(super) fn serve_capped<L, F, Fut>(listener: L, max: usize, serve: F)
where
    L: Listener,
    F: Fn(L::Stream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(max));
    tokio::spawn(async move {
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let Ok(stream) = listener.accept_one().await else {
                continue;
            };
            let task = serve(stream);
            tokio::spawn(async move {
                let _slot = slot;
                task.await;
            });
        }
    });
}
