//! Connections opened at init, ahead of the first request.
//!
//! A cold start pays a TCP and a TLS handshake to every service its first request reaches, one
//! after the other as the request's data dependencies order them (the secret, then WeChat, then
//! DynamoDB). Opened at init, in parallel, they cost the slowest handshake once instead of the
//! sum. reqwest has no "connect now" call, so [`OpenAhead`] is a layer on the client's connector:
//! [`open_ahead`] sends a placeholder request inside a task-local scope; the layer opens the
//! connection (TCP + TLS), keeps it, and fails the placeholder before anything is written on
//! it. The next connection the client wants to the same origin is that one. Nothing reaches the
//! server but the handshake: no request, no quota.
//!
//! A kept connection is handed out only while younger than [`KEEP_FOR`]: an on-demand cold start
//! sends its first request right after init, whereas a connection opened long before (Lambda
//! initialising ahead of traffic) may have been closed by the server in the meantime; such a
//! connection is dropped and a new one opened, as without this layer.

use std::any::Any;
use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long a connection opened ahead waits for its first request before it is dropped unused.
pub const KEEP_FOR: Duration = Duration::from_secs(10);

tokio::task_local! {
    /// Set while [`open_ahead`] sends its placeholder: the connector keeps the connection it
    /// opens instead of handing it to the request.
    static OPENING_AHEAD: ();
}

/// The error a placeholder request ends with once its connection is kept.
#[derive(Debug, thiserror::Error)]
#[error("connection opened ahead of the first request")]
pub struct OpenedAhead;

/// Whether `error`, or one of its sources, is [`OpenedAhead`].
pub fn is_opened_ahead(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<OpenedAhead>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// Connections kept by origin (the connector's destination, as its `Debug` prints it: scheme
/// and authority), with the moment each was opened.
type Kept = Arc<Mutex<HashMap<String, (Instant, Box<dyn Any + Send>)>>>;

/// The connector layer (`reqwest::ClientBuilder::connector_layer`): one per client.
#[derive(Clone, Default)]
pub struct OpenAhead {
    kept: Kept,
}

impl<S> tower_layer::Layer<S> for OpenAhead {
    type Service = OpenAheadService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OpenAheadService {
            inner,
            kept: self.kept.clone(),
        }
    }
}

#[derive(Clone)]
pub struct OpenAheadService<S> {
    inner: S,
    kept: Kept,
}

impl<S> OpenAheadService<S> {
    fn take<C: 'static>(&self, origin: &str) -> Option<C> {
        let (opened, conn) = self
            .kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(origin)?;
        if opened.elapsed() > KEEP_FOR {
            return None;
        }
        conn.downcast::<C>().ok().map(|conn| *conn)
    }
}

impl<S, R> tower_service::Service<R> for OpenAheadService<S>
where
    S: tower_service::Service<R>,
    S::Response: Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    R: Debug,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, destination: R) -> Self::Future {
        let origin = format!("{destination:?}");
        // Read here, not in the future: `call` runs inside the placeholder's task.
        let ahead = OPENING_AHEAD.try_with(|_| ()).is_ok();
        if !ahead && let Some(conn) = self.take::<S::Response>(&origin) {
            return Box::pin(async move { Ok(conn) });
        }
        let connecting = self.inner.call(destination);
        let kept = self.kept.clone();
        Box::pin(async move {
            let conn = connecting.await.map_err(Into::into)?;
            if !ahead {
                return Ok(conn);
            }
            kept.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(origin, (Instant::now(), Box::new(conn)));
            Err(Box::new(OpenedAhead) as BoxError)
        })
    }
}

/// Opens (TCP + TLS) the connection `client` will use for `url`'s origin, and keeps it for
/// the client's next request there. `client` must carry the [`OpenAhead`] layer and have no idle
/// connection to that origin yet (at init it has none): a pooled connection would carry the
/// placeholder `HEAD` instead. Returns whether a connection is now kept; failures (unreachable,
/// TLS refused) are the first request's to meet and report.
pub async fn open_ahead(client: &reqwest::Client, url: &str) -> bool {
    match OPENING_AHEAD.scope((), client.head(url).send()).await {
        Err(error) if is_opened_ahead(&error) => true,
        Err(error) => {
            tracing::info!(error = %crate::net::error_chain(&error.without_url()), "could not connect ahead of the first request");
            false
        }
        Ok(_) => {
            tracing::warn!(
                "a placeholder request was answered: the client has no OpenAhead layer or an idle connection"
            );
            false
        }
    }
}

/// Runs `work` (an AWS SDK call) so that the connection it opens is kept for the next call to
/// the same endpoint instead of carrying this one: the call fails with [`OpenedAhead`] before
/// its request is written. The SDK resolves the endpoint (region, partition, FIPS, a local
/// `AWS_ENDPOINT_URL`) as for a real call, so the connection is the one the next call needs.
pub async fn open_ahead_for<T, E: std::error::Error + 'static>(work: impl Future<Output = Result<T, E>>) -> bool {
    match OPENING_AHEAD.scope((), work).await {
        Err(error) if is_opened_ahead(&error) => true,
        Err(error) => {
            tracing::info!(error = %crate::net::error_chain(&error), "could not connect ahead of the first request");
            false
        }
        Ok(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An HTTP/1.1 server that counts connections and requests and answers each request 200.
    async fn server() -> (u16, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (connections, requests) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (c, r) = (connections.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let r = r.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut seen = Vec::new();
                    loop {
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            r.fetch_add(1, Ordering::SeqCst);
                            let answer = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if tcp.write_all(answer.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (port, connections, requests)
    }

    fn client(layer: &OpenAhead) -> reqwest::Client {
        let tls = crate::net::tls_config(crate::net::TlsRoots::Bundled);
        reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connector_layer(layer.clone())
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn the_connection_opened_ahead_carries_the_first_request_and_no_placeholder_is_sent() {
        let (port, connections, requests) = server().await;
        let layer = OpenAhead::default();
        let http = client(&layer);
        let url = format!("http://127.0.0.1:{port}/");
        assert!(open_ahead(&http, &url).await);
        // Connected, but not a byte of a request was written.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(connections.load(Ordering::SeqCst), 1);
        assert_eq!(requests.load(Ordering::SeqCst), 0);
        for _ in 0..3 {
            let answer = http.post(format!("{url}work")).send().await.unwrap();
            assert_eq!(answer.text().await.unwrap(), "ok");
        }
        assert_eq!(
            connections.load(Ordering::SeqCst),
            1,
            "the kept connection served, then the pool"
        );
        assert_eq!(requests.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_connection_kept_for_one_origin_never_serves_another() {
        let (first, first_connections, _) = server().await;
        let (second, second_connections, second_requests) = server().await;
        let layer = OpenAhead::default();
        let http = client(&layer);
        assert!(open_ahead(&http, &format!("http://127.0.0.1:{first}/")).await);
        let answer = http.get(format!("http://127.0.0.1:{second}/")).send().await.unwrap();
        assert!(answer.status().is_success());
        assert_eq!(second_connections.load(Ordering::SeqCst), 1);
        assert_eq!(second_requests.load(Ordering::SeqCst), 1);
        assert_eq!(first_connections.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_unreachable_origin_is_reported_not_kept() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let layer = OpenAhead::default();
        let http = client(&layer);
        assert!(!open_ahead(&http, &format!("http://127.0.0.1:{port}/")).await);
        assert!(layer.kept.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_stale_kept_connection_is_dropped_and_a_new_one_opened() {
        let (port, connections, requests) = server().await;
        let layer = OpenAhead::default();
        let http = client(&layer);
        let url = format!("http://127.0.0.1:{port}/");
        assert!(open_ahead(&http, &url).await);
        // Age the kept connection past KEEP_FOR.
        for (opened, _) in layer.kept.lock().unwrap().values_mut() {
            *opened -= KEEP_FOR + Duration::from_secs(1);
        }
        http.get(&url).send().await.unwrap();
        assert_eq!(connections.load(Ordering::SeqCst), 2);
        assert_eq!(requests.load(Ordering::SeqCst), 1);
    }
}
