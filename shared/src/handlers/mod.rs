//! One module per Lambda function: each takes the container's [`AppState`](crate::AppState) and
//! a request, and always answers (errors become JSON responses, never a panic or a `500`).

pub mod login;
pub mod session;

use lambda_http::{Body, Response};

use crate::ApiError;

/// Turns a handler's result into the response, logging refusals at the right level.
pub(crate) fn respond(result: Result<Response<Body>, ApiError>) -> Response<Body> {
    match result {
        Ok(response) => response,
        Err(error) => {
            if error.status.is_server_error() {
                tracing::error!(status = error.status.as_u16(), code = error.code, message = %error.message, "request failed");
            } else {
                tracing::info!(status = error.status.as_u16(), code = error.code, "request refused");
            }
            error.into_response()
        }
    }
}
