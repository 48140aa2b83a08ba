//! What a container prepares at init, before its first `GET /next`: the connections and
//! credentials every request of its function needs, all at once.
//!
//! Lambda counts everything before the first `/next` as init, and an on-demand cold start pays
//! init and its first request back to back: a handshake moved into init saves time only because
//! here they run in parallel (the slowest one instead of the sum), or when Lambda initialises
//! ahead of traffic (provisioned concurrency, SnapStart-like pre-warming). Only what *every*
//! request needs is prepared: a round trip made for nothing costs a service call, or WeChat's
//! quota. Init waits at most [`BUDGET`]; what is still in flight then goes on in the
//! background (a task, never cancelled: a token refresh holds a lease), and an unreachable service
//! is the first request's to meet and report, never init's failure.

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;

use crate::AppState;
use crate::net::open_ahead::open_ahead_for;

/// What a function's container prepares at init ([`crate::function::Function::at_init`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AtInit {
    /// Open a connection to DynamoDB (every function with a table reads or writes it per request).
    pub dynamodb: bool,
    /// Read the app secret (Secrets Manager).
    pub app_secret: bool,
    /// Read the push secret (Secrets Manager).
    pub push_secret: bool,
    /// Get the fleet's access token (the app secret, then the tokens table; the DynamoDB
    /// connection with it).
    pub access_token: bool,
    /// Open a connection to WeChat's API.
    pub wechat: bool,
    /// Read the merchant's keys (the pay secret).
    pub merchant_keys: bool,
    /// Open a connection to WeChat Pay's API.
    pub wechat_pay: bool,
}

impl AtInit {
    pub const NOTHING: Self = Self {
        dynamodb: false,
        app_secret: false,
        push_secret: false,
        access_token: false,
        wechat: false,
        merchant_keys: false,
        wechat_pay: false,
    };

    /// Only the DynamoDB connection: functions whose requests read a table and call nobody else
    /// in the common case.
    pub const DYNAMODB: Self = Self {
        dynamodb: true,
        ..Self::NOTHING
    };
}

/// The longest init waits for its preparations. A healthy region's handshakes, even to WeChat's
/// mainland endpoints from abroad, take a small fraction of it; Lambda allows init 10 s.
pub const BUDGET: Duration = Duration::from_secs(1);

/// How one preparation ended: done, failed (the first request meets the failure again and
/// reports it), or still in flight when init stopped waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Failed,
    InFlight,
}

/// Starts every preparation `at_init` asks for (those of parts the function has), in parallel,
/// and waits for them at most `budget`. Returns each preparation with how it ended.
pub async fn prepare(state: &'static AppState, at_init: AtInit, budget: Duration) -> Vec<(&'static str, Outcome)> {
    let started = Instant::now();
    let mut tasks: Vec<(&'static str, tokio::task::JoinHandle<bool>)> = Vec::new();
    let mut start = |name, work: std::pin::Pin<Box<dyn Future<Output = bool> + Send>>| {
        tasks.push((name, tokio::spawn(work)));
    };
    let wechat = state.wechat().ok();
    let tokens = wechat.and_then(|w| w.tokens().ok()).filter(|_| at_init.access_token);
    if let Some(tokens) = tokens {
        start(
            "access_token",
            Box::pin(async move { logged("access_token", tokens.get().await) }),
        );
    } else if let Some(secrets) = wechat.map(|w| &*w.secrets).filter(|_| at_init.app_secret) {
        start(
            "app_secret",
            Box::pin(async move { logged("app_secret", secrets.get().await) }),
        );
    }
    if let Some(secrets) = state.push_secrets().ok().filter(|_| at_init.push_secret) {
        start(
            "push_secret",
            Box::pin(async move { logged("push_secret", secrets.get().await) }),
        );
    }
    // The token's read opens the DynamoDB connection already.
    if at_init.dynamodb
        && tokens.is_none()
        && let Some(table) = state.any_table()
    {
        start(
            "dynamodb",
            Box::pin(open_ahead_for(
                state
                    .dynamodb()
                    .get_item()
                    .table_name(table)
                    .key("open-ahead", AttributeValue::S("-".into()))
                    .send(),
            )),
        );
    }
    if let Some(wechat) = wechat.filter(|_| at_init.wechat) {
        start("wechat", Box::pin(wechat.client.connect_ahead()));
    }
    let pay = state.pay().ok();
    if let Some(pay) = pay.filter(|_| at_init.merchant_keys) {
        start(
            "merchant_keys",
            Box::pin(async move { logged("merchant_keys", pay.merchant.get().await) }),
        );
    }
    if let Some((client, _)) = pay.and_then(|p| p.client.as_ref()).filter(|_| at_init.wechat_pay) {
        start("wechat_pay", Box::pin(client.connect_ahead()));
    }

    let deadline = started + budget;
    let mut outcomes = Vec::new();
    for (name, task) in tasks {
        let left = deadline.saturating_duration_since(Instant::now());
        // A task not awaited to its end goes on: dropping its handle does not cancel it.
        let outcome = match tokio::time::timeout(left, task).await {
            Ok(Ok(true)) => Outcome::Done,
            Ok(_) => Outcome::Failed,
            Err(_) => Outcome::InFlight,
        };
        outcomes.push((name, outcome));
    }
    tracing::info!(
        prepared = ?outcomes,
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
        "init: connections and credentials prepared"
    );
    outcomes
}

/// Whether `result` is a success; a failure is logged (its text names no secret).
fn logged<T, E: std::fmt::Display>(name: &str, result: Result<T, E>) -> bool {
    match result {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(preparation = name, error = %e, "init could not prepare this; the first request will try again");
            false
        }
    }
}
