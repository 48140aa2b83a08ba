//! CloudWatch metrics in Embedded Metric Format (EMF): one JSON object on one line of stdout per
//! event, which Lambda forwards to CloudWatch Logs, where the metric is extracted. No client, no
//! API call, nothing to wait for.
//!
//! Namespace `WxaServerless`; every metric is a `Count` of 1 with the dimension `Function` (the
//! Lambda function's name, `AWS_LAMBDA_FUNCTION_NAME`, else the name the function is registered
//! under); `WechatErrors` also has `["Function", "ErrCode"]`. A document carries only these
//! names, `Function`, `ErrCode` and the `request_id` of the invocation: never a secret, a token,
//! an openid, a phone number or an amount.
//!
//! A metric is emitted within an invocation ([`scope`], which `Function::handle` and
//! `Function::invoke` open) or in a process that Lambda runs (the env variable is set). Where
//! lines go: stdout once [`to_stdout`] is called (`runtime::serve` does, at a cold start), the
//! lines of a [`capture`] while one is open (tests), else nowhere — so a tool or test using the
//! shared crate prints nothing of its own.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

pub const NAMESPACE: &str = "WxaServerless";

/// What is counted. The names are a contract: CloudWatch alarms in `template.yaml` use them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// A session issued by `POST /login`.
    Logins,
    /// A WeChat or WeChat Pay call that failed, by `ErrCode` ([`wechat_error`]).
    WechatErrors,
    /// Open data or a `rawData` signature that does not check out (`invalid_open_data`).
    OpenDataFailures,
    /// A session deleted at its failure budget, or because its key went stale.
    SessionsRevoked,
    /// An order changed to PAID (a notification, the reconciler, a query); repeats are not.
    PaymentsSettled,
    /// A payment notification or a message push refused.
    NotificationsRejected,
    /// A refund WeChat Pay accepted when applied for.
    Refunds,
    /// A payment kept for the merchant's attention (amount, payer or transaction mismatch).
    PaymentAnomalies,
    /// A call refused because its caller spent their budget on the route (`429`).
    CallersThrottled,
}

impl Metric {
    pub const ALL: [Metric; 9] = [
        Metric::Logins,
        Metric::WechatErrors,
        Metric::OpenDataFailures,
        Metric::SessionsRevoked,
        Metric::PaymentsSettled,
        Metric::NotificationsRejected,
        Metric::Refunds,
        Metric::PaymentAnomalies,
        Metric::CallersThrottled,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Metric::Logins => "Logins",
            Metric::WechatErrors => "WechatErrors",
            Metric::OpenDataFailures => "OpenDataFailures",
            Metric::SessionsRevoked => "SessionsRevoked",
            Metric::PaymentsSettled => "PaymentsSettled",
            Metric::NotificationsRejected => "NotificationsRejected",
            Metric::Refunds => "Refunds",
            Metric::PaymentAnomalies => "PaymentAnomalies",
            Metric::CallersThrottled => "CallersThrottled",
        }
    }
}

/// The invocation a metric belongs to.
struct Invocation {
    /// The name the function is registered under (`Function::name`).
    function: &'static str,
    request_id: String,
}

tokio::task_local! {
    static INVOCATION: Invocation;
}

/// Runs `work` as one invocation of `function` (its registered name): metrics emitted in it carry
/// the function and `request_id` (none when empty).
pub async fn scope<T>(function: &'static str, request_id: &str, work: impl Future<Output = T>) -> T {
    let invocation = Invocation {
        function,
        request_id: request_id.to_owned(),
    };
    INVOCATION.scope(invocation, work).await
}

/// Counts one `metric` (for `WechatErrors`, use [`wechat_error`]: this one says `ErrCode`
/// `unknown`).
pub fn count(metric: Metric) {
    let err_code = (metric == Metric::WechatErrors).then_some("unknown");
    emit(metric, err_code);
}

/// Counts one failed WeChat or WeChat Pay call under `code`: WeChat's errcode, WeChat Pay's error
/// code, `http_<status>`, `unreachable`, ... (letters, digits, `-`, `_` and `.` are kept, at most
/// 64 of them, so an answer cannot make up dimension values of any size).
pub fn wechat_error(code: &str) {
    emit(Metric::WechatErrors, Some(&err_code_label(code)));
}

fn err_code_label(code: &str) -> String {
    let label: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(64)
        .collect();
    if label.is_empty() { "unknown".to_owned() } else { label }
}

/// `AWS_LAMBDA_FUNCTION_NAME`, read once.
fn lambda_function_name() -> Option<&'static str> {
    static NAME: OnceLock<Option<String>> = OnceLock::new();
    NAME.get_or_init(|| std::env::var("AWS_LAMBDA_FUNCTION_NAME").ok().filter(|n| !n.is_empty()))
        .as_deref()
}

fn emit(metric: Metric, err_code: Option<&str>) {
    let (registered, request_id) = INVOCATION
        .try_with(|i| (Some(i.function), Some(i.request_id.clone()).filter(|id| !id.is_empty())))
        .unwrap_or((None, None));
    // Outside a function (a tool using the shared crate) there is nothing to count.
    let Some(function) = lambda_function_name().or(registered) else {
        return;
    };
    let line = document(metric, function, err_code, request_id.as_deref(), now_millis());
    write(line);
}

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One EMF document: `{"_aws": {"Timestamp", "CloudWatchMetrics": [{"Namespace", "Dimensions",
/// "Metrics"}]}, "Function", ["ErrCode",] <metric>: 1 [, "request_id"]}`.
fn document(
    metric: Metric,
    function: &str,
    err_code: Option<&str>,
    request_id: Option<&str>,
    timestamp_ms: u64,
) -> String {
    let dimensions = match err_code {
        None => serde_json::json!([["Function"]]),
        Some(_) => serde_json::json!([["Function"], ["Function", "ErrCode"]]),
    };
    let mut document = serde_json::json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": dimensions,
                "Metrics": [{ "Name": metric.name(), "Unit": "Count" }],
            }],
        },
        "Function": function,
        metric.name(): 1,
    });
    if let Some(code) = err_code {
        document["ErrCode"] = code.into();
    }
    if let Some(id) = request_id {
        document["request_id"] = id.into();
    }
    document.to_string()
}

static TO_STDOUT: AtomicBool = AtomicBool::new(false);

static CAPTURED: Mutex<Option<Vec<String>>> = Mutex::new(None);

fn captured() -> MutexGuard<'static, Option<Vec<String>>> {
    CAPTURED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// From now on, metrics go to stdout (a Lambda function's: CloudWatch Logs extracts them).
pub fn to_stdout() {
    TO_STDOUT.store(true, Ordering::Relaxed);
}

fn write(line: String) {
    if let Some(lines) = captured().as_mut() {
        lines.push(line);
        return;
    }
    if TO_STDOUT.load(Ordering::Relaxed) {
        let mut bytes = line.into_bytes();
        bytes.push(b'\n');
        // One write of the whole line under the lock: lines never interleave with the log's.
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(&bytes).and_then(|()| stdout.flush());
    }
}

/// Collects every metric line of the process, instead of writing it, until dropped (for tests:
/// captures are process-wide, so a test binary should open one at a time).
#[must_use = "the capture ends when dropped"]
pub struct Capture(());

/// Starts a [`Capture`].
pub fn capture() -> Capture {
    *captured() = Some(Vec::new());
    Capture(())
}

impl Capture {
    /// The lines so far, oldest first.
    pub fn lines(&self) -> Vec<String> {
        captured().clone().unwrap_or_default()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        *captured() = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn a_count_is_one_emf_document_on_one_line() {
        let line = document(Metric::Logins, "login", None, Some("req-1"), 1_795_665_600_123);
        assert!(!line.contains('\n'));
        let document: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            document,
            json!({
                "_aws": {
                    "Timestamp": 1_795_665_600_123u64,
                    "CloudWatchMetrics": [{
                        "Namespace": "WxaServerless",
                        "Dimensions": [["Function"]],
                        "Metrics": [{"Name": "Logins", "Unit": "Count"}],
                    }],
                },
                "Function": "login",
                "Logins": 1,
                "request_id": "req-1",
            })
        );
    }

    #[test]
    fn a_wechat_error_has_both_dimension_sets_and_its_code() {
        let line = document(Metric::WechatErrors, "session", Some("45011"), None, 1);
        let document: Value = serde_json::from_str(&line).unwrap();
        let directive = &document["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Dimensions"], json!([["Function"], ["Function", "ErrCode"]]));
        assert_eq!(directive["Metrics"], json!([{"Name": "WechatErrors", "Unit": "Count"}]));
        assert_eq!(document["ErrCode"], "45011");
        assert_eq!(document["WechatErrors"], 1);
        assert!(document.get("request_id").is_none(), "no request id, no property");
        let keys: Vec<&String> = document.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 4, "{keys:?}");
    }

    #[test]
    fn the_names_are_the_contract() {
        let names: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
        assert_eq!(
            names,
            [
                "Logins",
                "WechatErrors",
                "OpenDataFailures",
                "SessionsRevoked",
                "PaymentsSettled",
                "NotificationsRejected",
                "Refunds",
                "PaymentAnomalies",
                "CallersThrottled"
            ]
        );
    }

    #[test]
    fn err_codes_are_short_plain_labels() {
        assert_eq!(err_code_label("-1"), "-1");
        assert_eq!(err_code_label("ORDER_NOT_EXIST"), "ORDER_NOT_EXIST");
        assert_eq!(err_code_label("http_503"), "http_503");
        assert_eq!(err_code_label("a\"b}\n{c"), "abc");
        assert_eq!(err_code_label(""), "unknown");
        assert_eq!(err_code_label(&"X".repeat(500)).len(), 64);
    }

    /// The only test here that emits (captures are process-wide).
    #[tokio::test]
    async fn metrics_of_an_invocation_carry_its_function_and_request_id() {
        let capture = capture();
        if lambda_function_name().is_some() {
            return; // run inside a Lambda environment: the names would be its own
        }
        count(Metric::Logins); // outside an invocation: nothing
        scope("login", "req-7", async {
            count(Metric::Logins);
            wechat_error("45\"011");
        })
        .await;
        scope("reconciler", "", async { count(Metric::WechatErrors) }).await;
        let lines: Vec<Value> = capture
            .lines()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(
            (&lines[0]["Function"], &lines[0]["request_id"]),
            (&json!("login"), &json!("req-7"))
        );
        assert_eq!(
            (&lines[1]["ErrCode"], &lines[1]["WechatErrors"]),
            (&json!("45011"), &json!(1))
        );
        assert_eq!(lines[2]["Function"], "reconciler");
        assert_eq!(lines[2]["ErrCode"], "unknown");
        assert!(lines[2].get("request_id").is_none());
        drop(capture);
        scope("login", "", async { count(Metric::Logins) }).await; // neither captured nor printed
    }
}
