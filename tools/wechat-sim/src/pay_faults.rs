//! Faults of the WeChat Pay APIv3 endpoints, beyond the generic ones of [`crate::Fault`]:
//! a signed WeChat Pay error instead of processing (`pay_error`), a connection dropped before or
//! after processing (`cut`), and a wait after processing (`delay_after_ms`).
//!
//! They are played by [`crate::pay::v3_begin`], so every APIv3 endpoint has them. The `api` names
//! a fault is queued under: `pay_jsapi`, `pay_query` (both query URLs), `pay_close`, `refund`,
//! `refund_query`, `transfer_create`, `transfer_query` (both query URLs), `transfer_cancel`.
//! (`pay_unifiedorder`, APIv2, only has `bad_signature`.)
//!
//! What happens after processing cannot be done by the handler, which must first return its
//! answer: the handler marks its answer with an [`Aftermath`] and the [`aftermath`] middleware
//! waits and cuts.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// A WeChat Pay error answer: `{"code","message"}` with an HTTP status (429 FREQUENCY_LIMITED,
/// 500 SYSTEM_ERROR, 403 NOT_ENOUGH, 400 PARAM_ERROR ...), signed like any answer.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PayError {
    pub status: u16,
    pub code: String,
    #[serde(default = "injected")]
    pub message: String,
}

fn injected() -> String {
    "injected fault".into()
}

/// When the connection is dropped: `before` the request is processed (it never landed) or
/// `after` (it landed and took effect, but its answer is lost).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Cut {
    Before,
    After,
}

/// What to do to an answer once the request has been processed; carried from the handler to the
/// [`aftermath`] middleware in the response's extensions.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Aftermath {
    pub delay_ms: u64,
    pub cut: bool,
}

impl Aftermath {
    /// Marks `response` for the middleware, unless there is nothing to do.
    pub fn mark(self, mut response: Response) -> Response {
        if self != Aftermath::default() {
            response.extensions_mut().insert(self);
        }
        response
    }
}

/// Middleware over the whole router: plays the [`Aftermath`] an answer is marked with.
pub async fn aftermath(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let Some(after) = response.extensions_mut().remove::<Aftermath>() else {
        return response;
    };
    if after.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(after.delay_ms)).await;
    }
    if after.cut { severed() } else { response }
}

/// An answer that never arrives: its body fails at once, so hyper aborts the connection
/// before the buffered status line is flushed, and the client sees the connection closed.
pub fn severed() -> Response {
    (StatusCode::OK, Body::new(Severed)).into_response()
}

struct Severed;

impl http_body::Body for Severed {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Poll::Ready(Some(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "injected fault: connection cut",
        ))))
    }
}
