//! The optional metrics HTTP listener (`[metrics] listen`): `GET /metrics`
//! answers the Prometheus text ([`super::metrics`]); everything else gets
//! an error status. Meant for localhost (docs/metrics.md).
//!
//! A hostile client must not hurt the daemon, so the listener runs as its
//! own task and the daemon's loop only ever sees a metrics request:
//! - at most [`Limits::connections`] served at once (more wait in the
//!   listen backlog);
//! - the request head must arrive within [`Limits::timeout`] and fit in
//!   [`MAX_REQUEST`] bytes (431 beyond), and the whole exchange must end
//!   within the timeout too;
//! - only `GET /metrics` is answered (405 for other methods, 404 for
//!   other paths, 400 for what is not HTTP/1.x), one request per
//!   connection, no body read;
//! - the loop renders at most once per [`RENDER_EVERY`]; requests in
//!   between get the last text.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use super::control::Request;

/// Largest request head read; a scraper sends a few hundred bytes.
pub const MAX_REQUEST: usize = 8 * 1024;
/// Renders by the daemon's loop are at least this far apart.
pub const RENDER_EVERY: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub connections: usize,
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connections: 8,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Bind `addr` and serve metrics from the daemon behind `tx`; returns the
/// bound address.
pub fn serve(addr: SocketAddr, tx: mpsc::Sender<Request>) -> io::Result<SocketAddr> {
    serve_with(addr, tx, Limits::default())
}

fn serve_with(
    addr: SocketAddr,
    tx: mpsc::Sender<Request>,
    limits: Limits,
) -> io::Result<SocketAddr> {
    let std = std::net::TcpListener::bind(addr)?;
    std.set_nonblocking(true)?;
    let listener = TcpListener::from_std(std)?;
    let bound = listener.local_addr()?;
    let cache = Arc::new(Cache::default());
    super::accept::serve_capped(listener, limits.connections, move |stream| {
        let (tx, cache) = (tx.clone(), cache.clone());
        async move {
            match tokio::time::timeout(limits.timeout, answer(stream, &tx, &cache)).await {
                Ok(Err(e)) => tracing::debug!(error = %e, "metrics request failed"),
                Err(_) => tracing::debug!("metrics client too slow; dropped"),
                Ok(Ok(())) => {}
            }
        }
    });
    Ok(bound)
}

/// The last rendered text and when it was rendered.
#[derive(Default)]
struct Cache(Mutex<Option<(Instant, Arc<str>)>>);

impl Cache {
    async fn get(&self, tx: &mpsc::Sender<Request>) -> Option<Arc<str>> {
        if let Ok(slot) = self.0.lock()
            && let Some((at, text)) = slot.as_ref()
            && at.elapsed() < RENDER_EVERY
        {
            return Some(text.clone());
        }
        let (reply, rx) = oneshot::channel();
        tx.send(Request::Metrics { reply }).await.ok()?;
        let text: Arc<str> = rx.await.ok()?.into();
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some((Instant::now(), text.clone()));
        }
        Some(text)
    }
}

async fn answer(
    mut stream: TcpStream,
    tx: &mpsc::Sender<Request>,
    cache: &Cache,
) -> io::Result<()> {
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut len = 0;
    let route = loop {
        if len == buf.len() {
            break Route::TooLarge;
        }
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            return Ok(()); // gone before a whole request
        }
        len += n;
        if let Some(end) = head_end(&buf[..len]) {
            break route(&buf[..end]);
        }
    };
    let response = match route {
        Route::Metrics => match cache.get(tx).await {
            Some(text) => response(200, "OK", super::metrics::CONTENT_TYPE, &text, ""),
            None => plain(503, "Service Unavailable", "kith is stopping\n"),
        },
        Route::NotFound => plain(404, "Not Found", "kith serves only /metrics\n"),
        Route::MethodNotAllowed => response(
            405,
            "Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET /metrics\n",
            "Allow: GET\r\n",
        ),
        Route::BadRequest => plain(400, "Bad Request", "not an HTTP/1.x request\n"),
        Route::TooLarge => plain(
            431,
            "Request Header Fields Too Large",
            "request head over 8 KiB\n",
        ),
    };
    stream.write_all(&response).await?;
    stream.shutdown().await
}

/// What a request head asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Metrics,
    NotFound,
    MethodNotAllowed,
    BadRequest,
    TooLarge,
}

/// Where the head (request line and headers) ends: after the first blank
/// line, `\r\n\r\n` or a bare `\n\n`.
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The request line decides; headers are not looked at.
fn route(head: &[u8]) -> Route {
    let Ok(text) = std::str::from_utf8(head) else {
        return Route::BadRequest;
    };
    let line = text.lines().next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") || method.is_empty() {
        return Route::BadRequest;
    }
    if method != "GET" {
        return Route::MethodNotAllowed;
    }
    // Prometheus may add query parameters; they change nothing.
    match target.split('?').next() {
        Some("/metrics") => Route::Metrics,
        _ => Route::NotFound,
    }
}

fn plain(status: u16, reason: &str, body: &str) -> Vec<u8> {
    response(status, reason, "text/plain; charset=utf-8", body, "")
}

fn response(status: u16, reason: &str, content_type: &str, body: &str, extra: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n{extra}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_metrics_is_served() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics
        );
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Route::Metrics);
        assert_eq!(
            route(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Route::MethodNotAllowed
        );
        assert_eq!(
            route(b"HEAD /metrics HTTP/1.1\r\n\r\n"),
            Route::MethodNotAllowed
        );
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"GET /metricsx HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"GET /metrics\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"GET /metrics HTTP/2\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"GET  /metrics HTTP/1.1\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"\xff\xfe\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b""), Route::BadRequest);
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
    }

    proptest::proptest! {
        // Whatever a client sends: a route, never a panic, and only a
        // request line that is exactly GET /metrics is served.
        #[test]
        fn any_bytes_get_a_route(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let end = head_end(&bytes);
            if let Some(e) = end {
                proptest::prop_assert!(e <= bytes.len());
            }
            let r = route(&bytes[..end.unwrap_or(bytes.len())]);
            if r == Route::Metrics {
                proptest::prop_assert!(bytes.starts_with(b"GET /metrics"));
            }
        }
    }

    /// A listener on a free loopback port whose "daemon" answers every
    /// metrics request with `text`, counting them.
    async fn listener(limits: Limits, text: &'static str) -> (SocketAddr, Arc<Mutex<u32>>) {
        let (tx, mut rx) = mpsc::channel(8);
        let addr = serve_with("127.0.0.1:0".parse().unwrap(), tx, limits).unwrap();
        let renders = Arc::new(Mutex::new(0));
        let counted = renders.clone();
        tokio::spawn(async move {
            while let Some(req) = rx.recv().await {
                if let Request::Metrics { reply } = req {
                    *counted.lock().unwrap() += 1;
                    let _ = reply.send(text.to_string());
                }
            }
        });
        (addr, renders)
    }

    async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn a_scrape_gets_the_text_and_anything_else_an_error() {
        let (addr, renders) = listener(Limits::default(), "kith_peers 2\n").await;
        let ok = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("Content-Type: text/plain; version=0.0.4"),
            "{ok}"
        );
        assert!(ok.contains("Content-Length: 13\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nkith_peers 2\n"), "{ok}");
        let post = exchange(
            addr,
            b"POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        )
        .await;
        assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
        assert!(post.contains("Allow: GET\r\n"), "{post}");
        let other = exchange(addr, b"GET /admin HTTP/1.1\r\n\r\n").await;
        assert!(other.starts_with("HTTP/1.1 404 "), "{other}");
        let junk = exchange(addr, b"\x16\x03\x01 hello\r\n\r\n").await;
        assert!(junk.starts_with("HTTP/1.1 400 "), "{junk}");
        assert_eq!(
            *renders.lock().unwrap(),
            1,
            "only the GET reached the daemon"
        );
    }

    #[tokio::test]
    async fn an_oversized_request_is_refused_without_reaching_the_daemon() {
        let (addr, renders) = listener(Limits::default(), "x\n").await;
        // Headers that never end, exactly as many bytes as the listener
        // reads (so it closes with nothing unread and the answer is not
        // lost to a reset).
        let mut huge = b"GET /metrics HTTP/1.1\r\n".to_vec();
        huge.resize(MAX_REQUEST, b'a');
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&huge).await.unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
        assert_eq!(*renders.lock().unwrap(), 0);
    }

    #[tokio::test]
    async fn silent_clients_are_dropped_and_a_scraper_is_served_after_them() {
        let limits = Limits {
            connections: 4,
            timeout: Duration::from_millis(300),
        };
        let (addr, _) = listener(limits, "kith_peers 0\n").await;
        // Every slot held by a client that never finishes its request.
        let mut silent = Vec::new();
        for _ in 0..limits.connections + 2 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /metr").await.unwrap();
            silent.push(s);
        }
        let started = Instant::now();
        let ok = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK"), "{ok}");
        assert!(
            started.elapsed() >= limits.timeout / 2,
            "it waited for a slot"
        );
        // The silent ones were closed by the listener.
        for mut s in silent.drain(..limits.connections) {
            let mut rest = Vec::new();
            let n = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut rest))
                .await
                .expect("closed by the listener")
                .unwrap_or(0);
            assert_eq!(n, 0, "no answer to half a request");
        }
    }

    #[tokio::test]
    async fn scrapes_in_quick_succession_share_one_render() {
        let (addr, renders) = listener(Limits::default(), "kith_peers 1\n").await;
        for _ in 0..5 {
            let ok = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
            assert!(ok.ends_with("kith_peers 1\n"), "{ok}");
        }
        assert_eq!(*renders.lock().unwrap(), 1);
        tokio::time::sleep(RENDER_EVERY).await;
        exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert_eq!(*renders.lock().unwrap(), 2);
    }
}
