//! A Lambda function as the shared crate sees it: its name, the parts it uses ([`Parts`]) and
//! its entry: HTTP routes (behind API Gateway), ops (a JSON command the merchant's back office
//! invokes through IAM), or a schedule. [`Function::handle`] is the one place an HTTP request is
//! routed, authenticated, given the invocation's deadline, and answered (errors as JSON carrying
//! the request id); [`Function::invoke`] the same for an invoked or scheduled event. Both run
//! the invocation as a [`metrics::scope`](crate::metrics::scope): its metrics name the function.
//!
//! `template.yaml` is the one list of functions and routes; a test holds [`FUNCTIONS`] against it.

use std::pin::Pin;

use lambda_http::http::{Method, StatusCode};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};

use crate::at_init::AtInit;
use crate::config::Parts;
use crate::store::sessions::Session;
use crate::{ApiError, AppState};

/// What a handler answers: a response, or an error that becomes the JSON error response.
pub type Answer = Result<Response<Body>, ApiError>;
pub type BoxAnswer<'a> = Pin<Box<dyn Future<Output = Answer> + Send + 'a>>;

/// A route's work, given the request (and, for an authenticated route, the caller's session).
#[derive(Clone, Copy)]
pub enum Handler {
    /// No login token (`/login`, WeChat Pay's notifications).
    Public(for<'a> fn(&'a AppState, &'a Request) -> BoxAnswer<'a>),
    /// Needs `Authorization: Bearer <token>`; runs with the caller's session.
    Authed(for<'a> fn(&'a AppState, &'a Session, &'a Request) -> BoxAnswer<'a>),
}

#[derive(Clone)]
pub struct Route {
    pub method: Method,
    /// The path as API Gateway routes it (`template.yaml`'s `Path`).
    pub path: &'static str,
    pub handler: Handler,
}

impl Route {
    pub const fn get(path: &'static str, handler: Handler) -> Self {
        Self {
            method: Method::GET,
            path,
            handler,
        }
    }

    pub const fn post(path: &'static str, handler: Handler) -> Self {
        Self {
            method: Method::POST,
            path,
            handler,
        }
    }
}

/// What an invoked or scheduled function answers: `{"ok": value}`, or the JSON error.
pub type Outcome = Result<serde_json::Value, ApiError>;
pub type BoxOutcome<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// One command of an invoked function: `{"op": name, ...fields}`.
#[derive(Clone, Copy)]
pub struct Op {
    pub name: &'static str,
    pub handler: for<'a> fn(&'a AppState, &'a serde_json::Value) -> BoxOutcome<'a>,
}

/// How a function is reached.
#[derive(Clone, Copy)]
pub enum Entry {
    /// HTTP routes of the API (`HttpApi` events in template.yaml).
    Routes(&'static [Route]),
    /// Invoked directly (Lambda Invoke, IAM-authorised) with a JSON command; no route.
    Ops(&'static [Op]),
    /// Run on a schedule (a `Schedule` event in template.yaml); the event's content is ignored.
    Scheduled(for<'a> fn(&'a AppState) -> BoxOutcome<'a>),
}

pub struct Function {
    /// The binary's name (`functions/<name>`, `template.yaml`'s `Binary`).
    pub name: &'static str,
    pub parts: Parts,
    /// What its containers prepare at init, before the first request.
    pub at_init: AtInit,
    pub entry: Entry,
}

/// `public!(login)`: a [`Handler::Public`] for `async fn login(&AppState, &Request) -> Answer`.
#[macro_export]
macro_rules! public {
    ($f:path) => {
        $crate::function::Handler::Public(|state, request| Box::pin($f(state, request)))
    };
}

/// `authed!(werun)`: a [`Handler::Authed`] for `async fn werun(&AppState, &Session, &Request) -> Answer`.
#[macro_export]
macro_rules! authed {
    ($f:path) => {
        $crate::function::Handler::Authed(|state, session, request| Box::pin($f(state, session, request)))
    };
}

/// Every function of the product.
pub const FUNCTIONS: &[&Function] = &[
    &crate::handlers::login::FUNCTION,
    &crate::handlers::session::FUNCTION,
    &crate::handlers::decrypt_phone::FUNCTION,
    &crate::handlers::werun::FUNCTION,
    &crate::handlers::share_info::FUNCTION,
    &crate::handlers::user_info::FUNCTION,
    &crate::handlers::qrcode::FUNCTION,
    &crate::handlers::card_sign::FUNCTION,
    &crate::handlers::pay_sign::FUNCTION,
    &crate::handlers::pay_notify::FUNCTION,
    &crate::handlers::content::FUNCTION,
    &crate::handlers::wechat_push::FUNCTION,
    &crate::handlers::merchant::FUNCTION,
    &crate::handlers::reconciler::FUNCTION,
];

/// `op!(create_order)`: an [`Op`] named `create_order` for
/// `async fn create_order(&AppState, &Value) -> Outcome`.
#[macro_export]
macro_rules! op {
    ($f:ident) => {
        $crate::function::Op {
            name: stringify!($f),
            handler: |state, event| Box::pin($f(state, event)),
        }
    };
}

impl Function {
    /// The HTTP routes (none for an invoked or scheduled function).
    pub fn routes(&self) -> &'static [Route] {
        match self.entry {
            Entry::Routes(routes) => routes,
            Entry::Ops(_) | Entry::Scheduled(_) => &[],
        }
    }

    /// The ops of an invoked function (none otherwise).
    pub fn ops(&self) -> &'static [Op] {
        match self.entry {
            Entry::Ops(ops) => ops,
            Entry::Routes(_) | Entry::Scheduled(_) => &[],
        }
    }

    /// Answers one invocation of an invoked or scheduled function: `{"ok": ...}` or
    /// `{"error": {"code", "message", "request_id"}}`, within the invocation's deadline.
    pub async fn invoke(
        &self,
        state: &AppState,
        event: serde_json::Value,
        context: &lambda_http::Context,
    ) -> serde_json::Value {
        let work = self.invoke_within(state, event, context);
        let work = crate::state::as_declared(self.parts.in_effect(&state.config), work);
        crate::metrics::scope(self.name, &context.request_id, work).await
    }

    async fn invoke_within(
        &self,
        state: &AppState,
        event: serde_json::Value,
        context: &lambda_http::Context,
    ) -> serde_json::Value {
        let deadline = crate::deadline::from_epoch_millis(context.deadline);
        let work = async {
            match self.entry {
                Entry::Ops(ops) => {
                    let name = event["op"].as_str().unwrap_or_default();
                    let op = ops.iter().find(|op| op.name == name).ok_or_else(|| {
                        let names: Vec<&str> = ops.iter().map(|op| op.name).collect();
                        ApiError::bad_request("unknown_op", format!("op must be one of: {}", names.join(", ")))
                    })?;
                    (op.handler)(state, &event).await
                }
                Entry::Scheduled(run) => run(state).await,
                Entry::Routes(_) => Err(ApiError::bad_request(
                    "not_invokable",
                    "this function answers HTTP requests, not commands",
                )),
            }
        };
        let outcome = crate::deadline::run(deadline, Box::pin(work)).await.unwrap_or_else(|| {
            Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "deadline_exceeded",
                "the command could not be finished in time; try again",
            )
            .with_detail("the command was still busy at the invocation's deadline"))
        });
        match outcome {
            Ok(value) => serde_json::json!({ "ok": value }),
            Err(error) => {
                log_refusal(&error, &context.request_id);
                error.to_json(&context.request_id)
            }
        }
    }

    /// Answers one request: finds its route, applies the invocation's deadline, authenticates
    /// when the route needs it, and turns an error into its JSON answer.
    pub async fn handle(&self, state: &AppState, req: Request) -> Response<Body> {
        let request_id = request_id(&req);
        let answer = self.answer(state, req, &request_id);
        let answer = crate::state::as_declared(self.parts.in_effect(&state.config), answer);
        crate::metrics::scope(self.name, &request_id, answer).await
    }

    async fn answer(&self, state: &AppState, req: Request, request_id: &str) -> Response<Body> {
        let deadline = req
            .lambda_context_ref()
            .and_then(|c| crate::deadline::from_epoch_millis(c.deadline));
        // Boxed: SDK call futures are large, and a caller's stack (a test's) should not carry them.
        let answer = crate::deadline::run(deadline, Box::pin(self.dispatch(state, &req))).await;
        let answer = answer.unwrap_or_else(|| {
            Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "deadline_exceeded",
                "the request could not be finished in time; try again",
            )
            .with_detail("the handler was still busy at the invocation's deadline"))
        });
        respond(answer, request_id)
    }

    async fn dispatch(&self, state: &AppState, req: &Request) -> Answer {
        let route = self.route(req)?;
        match route.handler {
            Handler::Public(handler) => handler(state, req).await,
            Handler::Authed(handler) => {
                let session = state.authenticate(req).await?;
                handler(state, &session, req).await
            }
        }
    }

    /// The route of `req`: by API Gateway's `routeKey` when there is one (deployed, and in the
    /// events), else by the end of the path (a stage or base path may come before it).
    fn route(&self, req: &Request) -> Result<&Route, ApiError> {
        let route_key = match req.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(context)) => context.route_key.clone(),
            _ => None,
        };
        let path = match route_key.as_deref().and_then(|key| key.split_once(' ')) {
            Some((_, path)) => path.to_owned(),
            None => req.uri().path().trim_end_matches('/').to_owned(),
        };
        let on_path: Vec<&Route> = self
            .routes()
            .iter()
            .filter(|r| path == r.path || path_matches(&path, r.path))
            .collect();
        // The longest match wins, should a base path end like another route.
        let Some(longest) = on_path.iter().map(|r| r.path.len()).max() else {
            return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route"));
        };
        let on_path: Vec<&Route> = on_path.into_iter().filter(|r| r.path.len() == longest).collect();
        on_path
            .iter()
            .find(|r| r.method == req.method())
            .copied()
            .ok_or_else(|| {
                let allow: Vec<&str> = on_path.iter().map(|r| r.method.as_str()).collect();
                ApiError::method_not_allowed(&allow.join(", "))
            })
    }
}

/// Whether `path` (perhaps after a stage or base path) is `pattern`, whose `{name}` segments
/// match any one segment.
fn path_matches(path: &str, pattern: &str) -> bool {
    let want: Vec<&str> = pattern.split('/').collect();
    let have: Vec<&str> = path.split('/').collect();
    have.len() >= want.len()
        && have[have.len() - want.len()..]
            .iter()
            .zip(&want)
            .all(|(h, w)| (w.starts_with('{') && w.ends_with('}') && !h.is_empty()) || h == w)
}

/// The value of the path parameter `name` (`{out_trade_no}` of the route), percent-decoded: from
/// API Gateway's `pathParameters`, else the last segment of the path.
pub fn path_parameter<'a>(req: &'a Request, name: &str) -> Option<std::borrow::Cow<'a, str>> {
    let raw = match req.path_parameters_ref().and_then(|p| p.first(name)) {
        Some(value) => value,
        None => req.uri().path().trim_end_matches('/').rsplit('/').next()?,
    };
    Some(percent_decode(raw))
}

fn percent_decode(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains('%') {
        return std::borrow::Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    std::borrow::Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// The id an operator finds the log line by: Lambda's request id, else API Gateway's.
fn request_id(req: &Request) -> String {
    if let Some(context) = req.lambda_context_ref()
        && !context.request_id.is_empty()
    {
        return context.request_id.clone();
    }
    match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context.request_id.clone().unwrap_or_default(),
        _ => String::new(),
    }
}

/// Turns an answer into the response, logging refusals at the right level (the detail goes to
/// the log only).
pub fn respond(answer: Answer, request_id: &str) -> Response<Body> {
    match answer {
        Ok(response) => response,
        Err(error) => {
            log_refusal(&error, request_id);
            error.into_response(request_id)
        }
    }
}

fn log_refusal(error: &ApiError, request_id: &str) {
    let detail = error.detail().unwrap_or_default();
    if error.status.is_server_error() {
        tracing::error!(
            status = error.status.as_u16(),
            code = error.code,
            request_id,
            detail,
            "request failed"
        );
    } else {
        tracing::info!(
            status = error.status.as_u16(),
            code = error.code,
            request_id,
            detail,
            "request refused"
        );
    }
}
