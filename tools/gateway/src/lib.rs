//! `wxa-gateway`: the HTTP API of `template.yaml` on this machine, in front of `cargo lambda
//! watch`. Each request on a route becomes the payload 2.0 event API Gateway would send
//! (`routeKey` and all), is invoked through cargo-lambda's Lambda Invoke endpoint, and the
//! function's answer becomes the response. So locally the functions answer at the paths they
//! answer at deployed (`/login`, `/session/reset`, ...), and any body reaches them (cargo-lambda's
//! own function URLs refuse a body that is not UTF-8 with a 500).
//!
//! Requests to `/2015-03-31/functions/<name>/invocations` (the Lambda Invoke API) go through
//! unchanged, for functions invoked directly rather than by route.

pub mod event;
pub mod routes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST, TRANSFER_ENCODING};
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode};
use base64::Engine as _;
use serde_json::json;

use crate::event::{BadAnswer, Invocation};
use crate::routes::{Found, Routes};

/// API Gateway's payload limit.
const MAX_BODY: usize = 10 * 1024 * 1024;
const INVOKE_PREFIX: &str = "/2015-03-31/functions/";
/// The header cargo-lambda takes the Lambda request id from (it makes one when it is absent).
const LAMBDA_REQUEST_ID: &str = "lambda-runtime-aws-request-id";

pub struct Gateway {
    pub routes: Routes,
    /// Where cargo-lambda serves the Lambda Invoke API: `http://127.0.0.1:9001`.
    pub lambda_url: String,
    /// How long an invocation may take before the gateway answers 504 (a function that crashed
    /// mid-invocation leaves cargo-lambda waiting for ever).
    pub invoke_timeout: Duration,
}

struct Served {
    gateway: Gateway,
    client: reqwest::Client,
    port: u16,
}

/// Serves the gateway on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, gateway: Gateway) -> std::io::Result<()> {
    let port = listener.local_addr()?.port();
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(std::io::Error::other)?;
    let served = Arc::new(Served { gateway, client, port });
    let app = Router::new().fallback(handle).with_state(served);
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
}

async fn handle(
    State(served): State<Arc<Served>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response<Body> {
    let started = Instant::now();
    let request_id = api_request_id();
    let line = format!("{} {}", request.method(), request.uri().path());
    let (target, response) = if is_invoke_api(request.uri().path()) {
        ("invoke API".to_owned(), served.pass_through(request, &request_id).await)
    } else {
        let (target, mut response) = served.route(request, peer, &request_id).await;
        // Deployed, every answer of the HTTP API carries it too: the id to find the request by.
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert("apigw-requestid", value);
        }
        (target, response)
    };
    println!(
        "{line} -> {target}: {} in {} ms ({request_id})",
        response.status().as_u16(),
        started.elapsed().as_millis()
    );
    response
}

/// `/2015-03-31/functions/<name>/invocations`.
fn is_invoke_api(path: &str) -> bool {
    path.strip_prefix(INVOKE_PREFIX)
        .and_then(|rest| rest.strip_suffix("/invocations"))
        .is_some_and(|name| !name.is_empty() && !name.contains('/'))
}

impl Served {
    /// Routes a request to its function; says which one (or what stopped it) for the log.
    async fn route(&self, request: Request, peer: SocketAddr, request_id: &str) -> (String, Response<Body>) {
        let (route, path_parameters) = match self.gateway.routes.find(request.method(), request.uri().path()) {
            Found::Route(route, parameters) => (route, parameters),
            Found::NotFound => {
                let message = format!("no route for {}", request.uri().path());
                return (
                    "no route".to_owned(),
                    error(StatusCode::NOT_FOUND, "not_found", &message, request_id),
                );
            }
            Found::MethodNotAllowed(allow) => {
                let allow = allow.join(", ");
                let message = format!("{} takes {allow}", request.uri().path());
                let mut response = error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    &message,
                    request_id,
                );
                if let Ok(value) = HeaderValue::from_str(&allow) {
                    response.headers_mut().insert(ALLOW, value);
                }
                return ("no route".to_owned(), response);
            }
        };
        let function = route.function.clone();
        let (parts, body) = request.into_parts();
        let body = match read_body(body, request_id).await {
            Ok(body) => body,
            Err(too_large) => return (function, too_large),
        };
        let event = event::event(
            &parts,
            &body,
            &Invocation {
                route_key: &route.key(),
                path_parameters: &path_parameters,
                request_id,
                source_ip: peer.ip(),
                port: self.port,
                now: SystemTime::now(),
            },
        );
        let response = self.invoke(&function, event.to_string(), request_id).await;
        (function, response)
    }

    async fn invoke(&self, function: &str, event: String, request_id: &str) -> Response<Body> {
        let url = format!("{}{INVOKE_PREFIX}{function}/invocations", self.gateway.lambda_url);
        let sent = self
            .client
            .post(&url)
            .header(CONTENT_TYPE, "application/json")
            // Lambda's own request id for the invocation; the function's errors carry it.
            .header(LAMBDA_REQUEST_ID, lambda_request_id())
            .body(event)
            .timeout(self.gateway.invoke_timeout)
            .send()
            .await;
        let (status, payload) = match sent {
            Ok(answer) => {
                let status = answer.status();
                match answer.bytes().await {
                    Ok(payload) => (status, payload),
                    Err(e) => return self.unreachable(function, &e, request_id),
                }
            }
            Err(e) => return self.unreachable(function, &e, request_id),
        };
        if !status.is_success() {
            let reason = serde_json::from_slice(&payload)
                .ok()
                .and_then(|v| event::failure(&v))
                .unwrap_or_else(|| {
                    format!(
                        "{status} {}",
                        String::from_utf8_lossy(&payload[..payload.len().min(300)])
                    )
                });
            return failed(function, &reason, request_id);
        }
        match event::response(&payload) {
            Ok(response) => response,
            Err(BadAnswer::Failed(reason)) => failed(function, &reason, request_id),
            Err(BadAnswer::Malformed(reason)) => {
                eprintln!("wxa-gateway: {function}: {reason}");
                error(StatusCode::BAD_GATEWAY, "bad_gateway", &reason, request_id)
            }
        }
    }

    /// The Lambda Invoke API, passed to cargo-lambda as it came (but for the hop's own headers).
    async fn pass_through(&self, request: Request, request_id: &str) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let body = match read_body(body, request_id).await {
            Ok(body) => body,
            Err(too_large) => return too_large,
        };
        let path_and_query = parts.uri.path_and_query().map_or("", |p| p.as_str());
        let mut headers = parts.headers;
        headers.remove(HOST);
        strip_hop_headers(&mut headers);
        let sent = self
            .client
            .request(parts.method, format!("{}{path_and_query}", self.gateway.lambda_url))
            .headers(headers)
            .body(body)
            .timeout(self.gateway.invoke_timeout)
            .send()
            .await;
        let answer = match sent {
            Ok(answer) => answer,
            Err(e) => return self.unreachable("the invoke API", &e, request_id),
        };
        let status = answer.status();
        let mut headers = answer.headers().clone();
        strip_hop_headers(&mut headers);
        match answer.bytes().await {
            Ok(payload) => {
                let mut response = Response::new(Body::from(payload));
                *response.status_mut() = status;
                *response.headers_mut() = headers;
                response
            }
            Err(e) => self.unreachable("the invoke API", &e, request_id),
        }
    }

    /// cargo-lambda could not be reached, or did not answer in time.
    fn unreachable(&self, what: &str, e: &reqwest::Error, request_id: &str) -> Response<Body> {
        let lambda = &self.gateway.lambda_url;
        if e.is_timeout() {
            let message = format!(
                "{what} did not answer within {} s",
                self.gateway.invoke_timeout.as_secs_f32()
            );
            eprintln!("wxa-gateway: {message} (at {lambda})");
            return error(StatusCode::GATEWAY_TIMEOUT, "gateway_timeout", &message, request_id);
        }
        let message = format!("cannot invoke {what} at {lambda}: is `cargo lambda watch` running there?");
        eprintln!("wxa-gateway: {message} ({e})");
        error(StatusCode::BAD_GATEWAY, "bad_gateway", &message, request_id)
    }
}

/// The whole body, or the answer to one over API Gateway's limit.
async fn read_body(body: Body, request_id: &str) -> Result<Bytes, Response<Body>> {
    axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        let message = format!("the body is over {} MiB", MAX_BODY >> 20);
        error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", &message, request_id)
    })
}

fn failed(function: &str, reason: &str, request_id: &str) -> Response<Body> {
    let message = format!("the function {function} failed: {reason}");
    eprintln!("wxa-gateway: {message}");
    error(StatusCode::BAD_GATEWAY, "bad_gateway", &message, request_id)
}

/// The JSON error every function answers with, for what the gateway answers itself.
fn error(status: StatusCode, code: &str, message: &str, request_id: &str) -> Response<Body> {
    let body = json!({"error": {"code": code, "message": message, "request_id": request_id}});
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Headers about one connection, not the message: each hop sets its own.
fn strip_hop_headers(headers: &mut HeaderMap) {
    for name in [CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING] {
        headers.remove(name);
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0; N];
    getrandom::fill(&mut bytes).expect("the OS has randomness");
    bytes
}

/// Shaped like API Gateway's (`JKJaXmPLvHcESHA=`): 11 random bytes in base64.
fn api_request_id() -> String {
    base64::engine::general_purpose::STANDARD.encode(random::<11>())
}

/// Shaped like Lambda's: a random (version 4) UUID.
fn lambda_request_id() -> String {
    let mut bytes = random::<16>();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}
