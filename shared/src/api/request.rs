//! Reading requests: JSON bodies, single-use codes, the bearer token.

use lambda_http::http::{StatusCode, header};
use lambda_http::{Body, Request};
use serde::de::{Deserialize, DeserializeOwned, Deserializer};

use crate::ApiError;

/// Request bodies are small JSON objects; anything larger is refused before parsing. The largest
/// valid one is a content check's 2500 characters, each escaped as two `\uXXXX` (30 KB).
pub const MAX_BODY_BYTES: usize = 32 * 1024;

/// Parses a JSON request body into `T`: at most [`MAX_BODY_BYTES`], UTF-8, `application/json`
/// when a content type is given.
pub fn parse_json_body<T: DeserializeOwned>(req: &Request) -> Result<T, ApiError> {
    if let Some(content_type) = req.headers().get(header::CONTENT_TYPE) {
        let essence = content_type
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with content-type: application/json",
            ));
        }
    }
    let bytes: &[u8] = match req.body() {
        Body::Empty => &[],
        Body::Text(text) => text.as_bytes(),
        Body::Binary(bytes) => bytes,
        _ => &[],
    };
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!(
                "the request body is {} bytes; the limit is {MAX_BODY_BYTES}",
                bytes.len()
            ),
        ));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("missing_body", "the request needs a JSON body"));
    }
    if std::str::from_utf8(bytes).is_err() {
        return Err(ApiError::bad_request(
            "invalid_json",
            "the request body is not valid UTF-8",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("the request body is not the expected JSON: {e}"),
        )
    })
}

/// For an optional body field (`#[serde(default, deserialize_with = "present")]`): absent is
/// `None`, and `null` is refused like any other value of the wrong type, as openapi.yaml says (it
/// has no nullable field).
pub fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

/// For a small whole-number body field (`#[serde(deserialize_with = "whole_u8")]`): any JSON
/// number that is a whole number from 0 to 255, so `1.0` is 1 as JSON Schema's `integer` says.
pub fn whole_u8<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u8, D::Error> {
    let number = f64::deserialize(deserializer)?;
    if number.fract() == 0.0 && (0.0..=255.0).contains(&number) {
        Ok(number as u8)
    } else {
        Err(serde::de::Error::custom(format!(
            "{number} is not a whole number from 0 to 255"
        )))
    }
}

/// A single-use code from the mini-program (`wx.login`, the getPhoneNumber button): trimmed, 1 to
/// 128 printable ASCII characters. Anything else never reaches WeChat.
pub fn one_time_code<'a>(code: &'a str, source: &str) -> Result<&'a str, ApiError> {
    let code = code.trim();
    if code.is_empty() || code.len() > 128 || !code.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("code must be the code {source} gave (1 to 128 printable ASCII characters)"),
        ));
    }
    Ok(code)
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(req: &Request) -> Result<&str, ApiError> {
    let value = req.headers().get(header::AUTHORIZATION).ok_or_else(|| {
        ApiError::unauthorized("missing_token", "send the login token as Authorization: Bearer <token>")
    })?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("invalid_token", "the Authorization header is not valid text"))?;
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value, ""));
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(ApiError::unauthorized(
            "invalid_token",
            "the Authorization header must be: Bearer <token>",
        ));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Body1 {
        code: String,
    }

    fn request(content_type: Option<&str>, body: Body) -> Request {
        let mut builder = lambda_http::http::Request::builder().method("POST").uri("/login");
        if let Some(ct) = content_type {
            builder = builder.header("content-type", ct);
        }
        builder.body(body).unwrap()
    }

    #[test]
    fn parses_json_with_or_without_content_type() {
        let ok: Body1 = parse_json_body(&request(
            Some("application/json; charset=utf-8"),
            r#"{"code":"a"}"#.into(),
        ))
        .unwrap();
        assert_eq!(ok.code, "a");
        let ok: Body1 = parse_json_body(&request(None, Body::Binary(br#"{"code":"b"}"#.to_vec()))).unwrap();
        assert_eq!(ok.code, "b");
    }

    #[test]
    fn rejects_bad_bodies_with_distinct_codes() {
        let cases: Vec<(Option<&str>, Body, StatusCode, &str)> = vec![
            (
                Some("text/plain"),
                r#"{"code":"a"}"#.into(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
            ),
            (None, Body::Empty, StatusCode::BAD_REQUEST, "missing_body"),
            (None, "  \n".into(), StatusCode::BAD_REQUEST, "missing_body"),
            (
                None,
                Body::Binary(vec![b'"', 0xff, b'"']),
                StatusCode::BAD_REQUEST,
                "invalid_json",
            ),
            (None, "{code:1}".into(), StatusCode::BAD_REQUEST, "invalid_json"),
            (None, r#"{"code":1}"#.into(), StatusCode::BAD_REQUEST, "invalid_json"),
            (
                None,
                r#"{"code":"a","x":1}"#.into(),
                StatusCode::BAD_REQUEST,
                "invalid_json",
            ),
            (
                None,
                Body::Text(format!(r#"{{"code":"{}"}}"#, "a".repeat(MAX_BODY_BYTES))),
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
            ),
        ];
        for (ct, body, status, code) in cases {
            let err = parse_json_body::<Body1>(&request(ct, body)).unwrap_err();
            assert_eq!((err.status, err.code), (status, code), "{err}");
        }
    }

    #[test]
    fn bearer_token_extraction() {
        let with = |v: &str| {
            lambda_http::http::Request::builder()
                .header("authorization", v)
                .body(Body::Empty)
                .unwrap()
        };
        assert_eq!(bearer_token(&with("Bearer abc")).unwrap(), "abc");
        assert_eq!(bearer_token(&with("bearer  abc ")).unwrap(), "abc");
        assert_eq!(bearer_token(&with("Basic abc")).unwrap_err().code, "invalid_token");
        assert_eq!(bearer_token(&with("Bearer ")).unwrap_err().code, "invalid_token");
        let none = lambda_http::http::Request::builder().body(Body::Empty).unwrap();
        assert_eq!(bearer_token(&none).unwrap_err().code, "missing_token");
    }

    #[test]
    fn error_response_has_the_documented_shape() {
        let response = ApiError::unauthorized("missing_token", "log in first").into_response("req-1");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let Body::Text(text) = response.body() else {
            panic!("text body expected")
        };
        let json: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"error": {"code": "missing_token", "message": "log in first", "request_id": "req-1"}})
        );
    }
}
