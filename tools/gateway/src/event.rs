//! API Gateway HTTP API payload 2.0: the event a request becomes, and the HTTP response a
//! function's answer becomes.
//! <https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-develop-integrations-lambda.html>

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, SET_COOKIE, TRANSFER_ENCODING};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value, json};

/// Made-up account of the local API (the events of `events/` use the same).
const ACCOUNT_ID: &str = "123456789012";
const API_ID: &str = "local";

/// What the gateway knows of a request besides its parts and body.
pub struct Invocation<'a> {
    pub route_key: &'a str,
    pub path_parameters: &'a BTreeMap<String, String>,
    /// API Gateway's `requestContext.requestId`.
    pub request_id: &'a str,
    pub source_ip: IpAddr,
    /// The port the gateway listens on (`x-forwarded-port`).
    pub port: u16,
    pub now: SystemTime,
}

/// The payload 2.0 event of a request, as API Gateway sends it to the function.
pub fn event(parts: &Parts, body: &[u8], invocation: &Invocation) -> Value {
    let (mut headers, cookies) = headers_and_cookies(&parts.headers);
    let source_ip = invocation.source_ip.to_string();
    // API Gateway appends the caller's address to any proxies' and says how it was reached.
    let forwarded_for = match headers.get("x-forwarded-for") {
        Some(earlier) => format!("{earlier}, {source_ip}"),
        None => source_ip.clone(),
    };
    headers.insert("x-forwarded-for".to_owned(), forwarded_for);
    headers.insert("x-forwarded-port".to_owned(), invocation.port.to_string());
    headers.insert("x-forwarded-proto".to_owned(), "http".to_owned());

    let domain_name = headers
        .get("host")
        .map(|host| host.rsplit_once(':').map_or(host.as_str(), |(name, _)| name).to_owned())
        .unwrap_or_else(|| "localhost".to_owned());
    let domain_prefix = domain_name.split('.').next().unwrap_or_default().to_owned();
    let path = parts.uri.path();
    let raw_query = parts.uri.query().unwrap_or_default();
    let epoch_ms = invocation.now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());

    let mut event = json!({
        "version": "2.0",
        "routeKey": invocation.route_key,
        "rawPath": path,
        "rawQueryString": raw_query,
        "headers": headers,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": API_ID,
            "domainName": domain_name,
            "domainPrefix": domain_prefix,
            "http": {
                "method": parts.method.as_str(),
                "path": path,
                "protocol": format!("{:?}", parts.version),
                "sourceIp": source_ip,
                "userAgent": headers.get("user-agent").map_or("", String::as_str),
            },
            "requestId": invocation.request_id,
            "routeKey": invocation.route_key,
            "stage": "$default",
            "time": clf_time(invocation.now),
            "timeEpoch": u64::try_from(epoch_ms).unwrap_or(u64::MAX),
        },
        "isBase64Encoded": false,
    });
    // Optional fields are left out when empty, as API Gateway does.
    let fields = event.as_object_mut().expect("an object");
    if !cookies.is_empty() {
        fields.insert("cookies".to_owned(), json!(cookies));
    }
    if parts.uri.query().is_some() {
        fields.insert("queryStringParameters".to_owned(), json!(query_parameters(raw_query)));
    }
    if !invocation.path_parameters.is_empty() {
        fields.insert("pathParameters".to_owned(), json!(invocation.path_parameters));
    }
    if !body.is_empty() {
        let text = std::str::from_utf8(body)
            .ok()
            .filter(|_| headers.get("content-type").is_none_or(|c| is_text(c)));
        let (body, encoded) = match text {
            Some(text) => (text.to_owned(), false),
            None => (B64.encode(body), true),
        };
        fields.insert("body".to_owned(), json!(body));
        fields.insert("isBase64Encoded".to_owned(), json!(encoded));
    }
    event
}

/// Headers by lowercase name, repeated ones joined with commas; the cookies apart, one per
/// entry (payload 2.0 moves them out of the headers).
fn headers_and_cookies(headers: &HeaderMap) -> (BTreeMap<String, String>, Vec<String>) {
    let mut by_name = BTreeMap::new();
    let mut cookies = Vec::new();
    for name in headers.keys() {
        let values = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        if name == COOKIE {
            for value in values {
                cookies.extend(
                    value
                        .split(';')
                        .map(str::trim)
                        .filter(|c| !c.is_empty())
                        .map(str::to_owned),
                );
            }
        } else {
            by_name.insert(name.as_str().to_owned(), values.collect::<Vec<_>>().join(","));
        }
    }
    (by_name, cookies)
}

/// Decoded query parameters, repeated ones joined with commas.
fn query_parameters(raw: &str) -> BTreeMap<String, String> {
    let mut parameters: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in form_urlencoded::parse(raw.as_bytes()) {
        parameters
            .entry(name.into_owned())
            .and_modify(|joined| {
                joined.push(',');
                joined.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    parameters
}

/// A body of this content type is passed as text (when it is UTF-8); any other is base64. The
/// same list as lambda_http's, so that what the function takes for text arrives as text.
fn is_text(content_type: &str) -> bool {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    [
        "text/",
        "application/json",
        "application/javascript",
        "application/xml",
        "application/yaml",
    ]
    .iter()
    .any(|prefix| mime.starts_with(prefix))
        || ["+json", "+xml", "+yaml"].iter().any(|suffix| mime.ends_with(suffix))
}

/// `requestContext.time`: `25/Nov/2026:12:00:00 +0000` (the common log format).
fn clf_time(now: SystemTime) -> String {
    // httpdate gives `Wed, 25 Nov 2026 12:00:00 GMT`: the same fields in another order.
    let http_date = httpdate::fmt_http_date(now);
    match http_date.split(' ').collect::<Vec<_>>()[..] {
        [_, day, month, year, time, _] => format!("{day}/{month}/{year}:{time} +0000"),
        _ => unreachable!("httpdate's format is fixed: {http_date}"),
    }
}

/// Why a function's answer is not one API Gateway would turn into a response.
#[derive(Debug)]
pub enum BadAnswer {
    /// The function failed: Lambda's `{"errorType", "errorMessage"}`.
    Failed(String),
    Malformed(String),
}

/// The HTTP response of a function's payload 2.0 answer.
pub fn response(payload: &[u8]) -> Result<Response<Body>, BadAnswer> {
    let malformed = |what: String| BadAnswer::Malformed(format!("the function's answer {what}"));
    let value: Value = serde_json::from_slice(payload).map_err(|e| malformed(format!("is not JSON: {e}")))?;
    let Some(answer) = value.as_object().filter(|o| o.contains_key("statusCode")) else {
        if let Some(failure) = failure(&value) {
            return Err(BadAnswer::Failed(failure));
        }
        // API Gateway's format 2.0 inference: other JSON is the body of a 200.
        let mut response = Response::new(Body::from(payload.to_vec()));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return Ok(response);
    };
    let status = answer["statusCode"]
        .as_u64()
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or_else(|| malformed(format!("has statusCode {}", answer["statusCode"])))?;

    let mut headers = HeaderMap::new();
    let mut add = |name: &str, value: &Value| {
        let value = match value {
            Value::String(s) => s.clone(),
            Value::Number(_) | Value::Bool(_) => value.to_string(),
            other => return Err(malformed(format!("has header {name}: {other}"))),
        };
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| malformed(format!("has header {name:?}")))?;
        let value = HeaderValue::try_from(value).map_err(|_| malformed(format!("has a bad {name} value")))?;
        headers.append(name, value);
        Ok(())
    };
    for (name, value) in object(answer, "headers")? {
        add(name, value)?;
    }
    for (name, values) in object(answer, "multiValueHeaders")? {
        let values = values
            .as_array()
            .ok_or_else(|| malformed(format!("has multiValueHeaders.{name}: {values}")))?;
        for value in values {
            add(name, value)?;
        }
    }
    for cookie in answer.get("cookies").and_then(Value::as_array).into_iter().flatten() {
        add(SET_COOKIE.as_str(), cookie)?;
    }
    // The length is the decoded body's, set by the server; the function's framing is not ours.
    for name in [CONTENT_LENGTH, TRANSFER_ENCODING, CONNECTION] {
        headers.remove(name);
    }

    let body = match answer.get("body") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(body)) if answer["isBase64Encoded"] == true => B64
            .decode(body)
            .map_err(|e| malformed(format!("has a body that is not base64: {e}")))?,
        Some(Value::String(body)) => body.clone().into_bytes(),
        Some(other) => return Err(malformed(format!("has a body that is not a string: {other}"))),
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

/// An object field of the answer; absent or null is empty.
fn object<'a>(answer: &'a Map<String, Value>, field: &str) -> Result<&'a Map<String, Value>, BadAnswer> {
    static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);
    match answer.get(field) {
        None | Some(Value::Null) => Ok(&EMPTY),
        Some(Value::Object(o)) => Ok(o),
        Some(other) => Err(BadAnswer::Malformed(format!(
            "the function's answer has {field}: {other}"
        ))),
    }
}

/// `errorType: errorMessage` of a Lambda error document (what a failed invocation answers).
pub fn failure(value: &Value) -> Option<String> {
    let error_type = value.get("errorType")?.as_str()?;
    let message = value.get("errorMessage").and_then(Value::as_str).unwrap_or_default();
    Some(format!("{error_type}: {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_is_in_the_common_log_format() {
        let at = UNIX_EPOCH + std::time::Duration::from_millis(1_795_608_000_000);
        assert_eq!(clf_time(at), "25/Nov/2026:12:00:00 +0000");
    }

    #[test]
    fn text_types_are_lambda_https() {
        for text in [
            "application/json",
            "application/json; charset=utf-8",
            "text/xml",
            "application/ld+json",
        ] {
            assert!(is_text(text), "{text}");
        }
        for binary in [
            "application/octet-stream",
            "image/png",
            "application/x-www-form-urlencoded",
        ] {
            assert!(!is_text(binary), "{binary}");
        }
    }

    #[test]
    fn repeated_query_parameters_are_joined() {
        let parameters = query_parameters("a=1&b=x%20y&a=3&flag");
        assert_eq!(json!(parameters), json!({"a": "1,3", "b": "x y", "flag": ""}));
    }

    #[test]
    fn an_answer_without_status_is_inferred_and_a_failure_is_one() {
        let inferred = response(br#"{"ok":true}"#).unwrap();
        assert_eq!(inferred.status(), StatusCode::OK);
        assert_eq!(inferred.headers()[CONTENT_TYPE], "application/json");
        let failed = response(br#"{"errorType":"Runtime.ExitError","errorMessage":"exit 1"}"#);
        assert!(matches!(failed, Err(BadAnswer::Failed(f)) if f == "Runtime.ExitError: exit 1"));
        assert!(matches!(
            response(br#"{"statusCode":"x"}"#),
            Err(BadAnswer::Malformed(_))
        ));
        assert!(matches!(response(b"not json"), Err(BadAnswer::Malformed(_))));
    }
}
