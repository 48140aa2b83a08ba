//! An in-process stand-in for `cargo lambda watch`'s Lambda Invoke endpoint
//! (`POST /2015-03-31/functions/{name}/invocations`): the event is parsed as the Lambda runtime
//! parses it, the function of that name ([`FUNCTIONS`]) answers it with its own state (as its
//! container builds it: [`crate::Stack::state_for`]), and the answer goes back as the runtime
//! would send it: for an HTTP function the API Gateway
//! payload 2.0 response, for an invoked (ops) or scheduled one its JSON answer as it is. So the
//! real gateway (tools/gateway) can run in front of the real handlers without building a binary,
//! and the AWS SDK's `Invoke` (`wxa merchant`) can reach the merchant function.
//!
//! Also serves `POST /__test/token`: a new session of one user logged in through the stack, `{"token"}`, for
//! clients (schemathesis' auth hook) that need a live token at any time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use lambda_http::http::header::SET_COOKIE;
use lambda_http::{Body, RequestExt};
use serde_json::{Map, Value, json};
use wxa_shared::AppState;
use wxa_shared::function::{Entry, FUNCTIONS, Function};

use crate::Stack;

/// The header cargo-lambda (and the gateway) pass the Lambda request id in.
const REQUEST_ID_HEADER: &str = "lambda-runtime-aws-request-id";

/// Lambda's answer headers: the invocation's request id (the AWS SDK's `request_id()`), the
/// kind of a failed invocation (`function_error()`), and a service error's code.
const ANSWER_REQUEST_ID: HeaderName = HeaderName::from_static("x-amzn-requestid");
const FUNCTION_ERROR: HeaderName = HeaderName::from_static("x-amz-function-error");
const ERROR_TYPE: HeaderName = HeaderName::from_static("x-amzn-errortype");

/// A running stand-in; stops when dropped.
pub struct InvokeApi {
    /// `http://127.0.0.1:<port>`: the gateway's `lambda_url`.
    pub url: String,
    server: tokio::task::JoinHandle<()>,
}

struct Served {
    /// Each function's own state, as its container builds it (only the parts it declares).
    states: std::collections::HashMap<&'static str, Arc<AppState>>,
    http: reqwest::Client,
    sim_base: String,
    /// Each invocation's deadline from its start: template.yaml's `Timeout`, as deployed.
    timeout: Duration,
    users: AtomicU32,
    /// Numbers the request ids of invocations that come without one (the SDK sends none).
    invocations: AtomicU32,
}

impl InvokeApi {
    /// Serves `stack`'s functions on a free port of 127.0.0.1.
    pub async fn start(stack: &Stack) -> Self {
        let timeout = crate::template()["Globals"]["Function"]["Timeout"]
            .as_u64()
            .expect("template.yaml has a global Timeout");
        let served = Arc::new(Served {
            states: FUNCTIONS
                .iter()
                .map(|function| (function.name, Arc::new(stack.state_for(function))))
                .collect(),
            http: stack.http.clone(),
            sim_base: stack.sim.base_url(),
            timeout: Duration::from_secs(timeout),
            users: AtomicU32::new(0),
            invocations: AtomicU32::new(0),
        });
        let app = Router::new()
            .route("/2015-03-31/functions/{name}/invocations", post(invoke))
            .route("/__test/token", post(token))
            .with_state(served);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        InvokeApi { url, server }
    }
}

impl Drop for InvokeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// What an invocation answers: 200 with the function's answer, or with Lambda's error document
/// (`{"errorType", "errorMessage"}`) and `X-Amz-Function-Error` when the invocation failed.
type Invoked = Result<Value, (&'static str, String)>;

async fn invoke(
    Path(name): Path<String>,
    State(served): State<Arc<Served>>,
    headers: HeaderMap,
    payload: Bytes,
) -> (StatusCode, HeaderMap, String) {
    let mut answer = HeaderMap::new();
    answer.insert("content-type", "application/json".parse().expect("a header value"));
    let Some(function) = FUNCTIONS.iter().find(|f| f.name == name) else {
        // As Lambda answers it: a service error, which the SDK reads by its type header.
        answer.insert(ERROR_TYPE, "ResourceNotFoundException".parse().expect("a header value"));
        let document = json!({"Type": "User", "Message": format!("Function not found: {name}")});
        return (StatusCode::NOT_FOUND, answer, document.to_string());
    };
    let request_id = match headers.get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok()) {
        Some(id) => id.to_owned(),
        None => {
            let n = served.invocations.fetch_add(1, Ordering::Relaxed);
            format!("00000000-0000-4000-8000-{n:012x}")
        }
    };
    if let Ok(value) = request_id.parse() {
        answer.insert(ANSWER_REQUEST_ID, value);
    }
    let context = crate::invocation_context(served.timeout, &request_id);
    let invoked = match function.entry {
        Entry::Routes(_) => http_event(function, &served.states[function.name], &payload, context).await,
        // lambda_runtime hands these functions the event's JSON itself, not an HTTP request.
        Entry::Ops(_) | Entry::Scheduled(_) => match serde_json::from_slice(&payload) {
            Ok(event) => Ok(function.invoke(&served.states[function.name], event, &context).await),
            Err(e) => Err(("Runtime.UnmarshalError", e.to_string())),
        },
    };
    match invoked {
        Ok(value) => (StatusCode::OK, answer, value.to_string()),
        Err((error_type, message)) => {
            answer.insert(FUNCTION_ERROR, "Unhandled".parse().expect("a header value"));
            let document = json!({"errorType": error_type, "errorMessage": message});
            (StatusCode::OK, answer, document.to_string())
        }
    }
}

/// An HTTP function's invocation: the event parsed as an API Gateway request, the answer the
/// payload 2.0 response.
async fn http_event(function: &Function, state: &AppState, payload: &[u8], context: lambda_http::Context) -> Invoked {
    let request = std::str::from_utf8(payload)
        .map_err(|e| e.to_string())
        .and_then(|text| lambda_http::request::from_str(text).map_err(|e| e.to_string()));
    // The runtime fails such an invocation before the handler runs.
    let request = request.map_err(|e| ("Runtime.UnmarshalError", e))?;
    let response = function.handle(state, request.with_lambda_context(context)).await;
    Ok(payload_2_answer(response))
}

/// What lambda_http's runtime answers for an API Gateway payload 2.0 event: a binary body in
/// base64, `set-cookie` moved to `cookies`, and one value per header (its first, as the runtime
/// serializes a header map).
fn payload_2_answer(response: lambda_http::Response<Body>) -> Value {
    let (parts, body) = response.into_parts();
    let mut headers = Map::new();
    for name in parts.headers.keys().filter(|name| **name != SET_COOKIE) {
        let value = String::from_utf8_lossy(parts.headers[name].as_bytes()).into_owned();
        headers.insert(name.as_str().to_owned(), Value::String(value));
    }
    let cookies: Vec<Value> = parts
        .headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let (body, is_base64_encoded) = match body {
        Body::Text(text) => (Value::String(text), false),
        Body::Binary(bytes) => (Value::String(B64.encode(bytes)), true),
        _ => (Value::Null, false),
    };
    json!({
        "statusCode": parts.status.as_u16(),
        "headers": headers,
        "multiValueHeaders": {},
        "cookies": cookies,
        "body": body,
        "isBase64Encoded": is_base64_encoded,
    })
}

/// A new user (`o_test_<n>`) logged in through the stack: `{"token"}`.
async fn token(State(served): State<Arc<Served>>) -> (StatusCode, String) {
    // One user, a new session each time: what one case created (a media check) the next case
    // may read back, and no case sees another's revoked or logged-out session.
    served.users.fetch_add(1, Ordering::Relaxed);
    let user = json!({ "openid": "o_test_client" });
    match crate::log_in(&served.states["login"], &served.http, &served.sim_base, user).await {
        Ok(token) => (StatusCode::OK, json!({ "token": token }).to_string()),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, json!({ "error": e }).to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_payload_2_responses() {
        let mut response = lambda_http::Response::new(Body::Binary(vec![0x89, b'P', 0xff]));
        *response.status_mut() = StatusCode::CREATED;
        let headers = response.headers_mut();
        headers.insert("content-type", "image/png".parse().unwrap());
        headers.append(SET_COOKIE, "a=1".parse().unwrap());
        headers.append(SET_COOKIE, "b=2".parse().unwrap());
        assert_eq!(
            payload_2_answer(response),
            json!({
                "statusCode": 201,
                "headers": {"content-type": "image/png"},
                "multiValueHeaders": {},
                "cookies": ["a=1", "b=2"],
                "body": "iVD/",
                "isBase64Encoded": true,
            })
        );
        let text = payload_2_answer(lambda_http::Response::new(Body::Text("{}".into())));
        assert_eq!((&text["body"], &text["isBase64Encoded"]), (&json!("{}"), &json!(false)));
        let empty = payload_2_answer(lambda_http::Response::new(Body::Empty));
        assert_eq!(empty["body"], Value::Null);
    }
}
