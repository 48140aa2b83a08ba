//! A keep-alive front for moto server.
//!
//! moto's HTTP server (werkzeug) answers every request with `Connection: close`, so a client
//! opens a new connection (and, behind a TLS proxy, a new TLS session) for each call, whereas
//! DynamoDB's and Secrets Manager's endpoints keep a connection open for many requests. Benches
//! and tests that count connections or time round trips put this front between the TLS proxy and
//! moto: it keeps its clients' connections open (HTTP/1.1) and forwards each request to moto.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The largest body forwarded (DynamoDB items are at most 400 KB).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Headers of one hop, never forwarded.
const HOP_BY_HOP: [HeaderName; 4] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::CONTENT_LENGTH,
    HeaderName::from_static("keep-alive"),
];

/// A plain HTTP/1.1 server on 127.0.0.1 that keeps connections alive and forwards every request
/// to `upstream` (`http://IP:PORT`). Stops when dropped.
pub struct KeepAliveFront {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl KeepAliveFront {
    /// Starts the front on the current tokio runtime.
    pub async fn start(upstream: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let addr = listener.local_addr().expect("bound");
        let app = axum::Router::new()
            .fallback(forward)
            .with_state((reqwest::Client::new(), upstream.trim_end_matches('/').to_owned()));
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
            let _ = tcp.set_nodelay(true);
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, task }
    }
}

impl Drop for KeepAliveFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(State((http, upstream)): State<(reqwest::Client, String)>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut headers = parts.headers;
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    let answer = http
        .request(parts.method, format!("{upstream}{path}"))
        .headers(headers)
        .body(body)
        .send()
        .await;
    let Ok(answer) = answer else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = answer.status();
    let mut headers = answer.headers().clone();
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    let Ok(bytes) = answer.bytes().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}
