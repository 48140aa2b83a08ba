//! Building responses: JSON with the headers every answer carries.

use lambda_http::http::{HeaderValue, StatusCode, header};
use lambda_http::{Body, Response};
use serde::Serialize;

/// A JSON answer, never cached by a proxy (it is per user).
pub fn json_response<T: Serialize + ?Sized>(status: StatusCode, body: &T) -> Response<Body> {
    // Serializing our own plain structs cannot fail; fall back to an empty object regardless.
    let text = serde_json::to_string(body).unwrap_or_else(|_| "{}".to_owned());
    let mut response = Response::new(Body::Text(text));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
