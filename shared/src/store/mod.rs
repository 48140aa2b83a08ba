//! The DynamoDB tables: one module per table, each with its own rules (keys, conditional writes,
//! TTL), and the one way their failures are classified and answered.

pub mod budgets;
pub mod conversations;
pub mod messages;
pub mod orders;
pub mod refunds;
pub mod sessions;
pub mod tokens;
pub mod transfers;

use std::time::Duration;

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use lambda_http::http::StatusCode;

use crate::ApiError;

/// Which table failed: the client hears which kind of store, never its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Sessions,
    Orders,
    Refunds,
    Transfers,
    Messages,
    Tokens,
}

impl Table {
    fn unavailable_code(self) -> &'static str {
        match self {
            Self::Sessions => "session_store_unavailable",
            Self::Orders | Self::Refunds | Self::Transfers => "order_store_unavailable",
            Self::Messages => "message_store_unavailable",
            Self::Tokens => "token_store_unavailable",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the DynamoDB table {name} does not exist or is not readable")]
    TableMissing { table: Table, name: String },
    #[error("the {table:?} store is unavailable: {detail}")]
    Unavailable { table: Table, detail: String },
    #[error("an item of the {table:?} table is malformed: {attribute}")]
    Malformed { table: Table, attribute: &'static str },
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::TableMissing { .. } | StoreError::Malformed { .. } => ApiError::misconfigured(e),
            StoreError::Unavailable { table, .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                table.unavailable_code(),
                "the data store is unavailable; try again",
            )
            .with_detail(e),
        }
    }
}

/// A string attribute.
pub(crate) fn s(value: &str) -> aws_sdk_dynamodb::types::AttributeValue {
    aws_sdk_dynamodb::types::AttributeValue::S(value.to_owned())
}

/// A number attribute.
pub(crate) fn n(value: u64) -> aws_sdk_dynamodb::types::AttributeValue {
    aws_sdk_dynamodb::types::AttributeValue::N(value.to_string())
}

/// Sends a DynamoDB request of `client` within the invocation's time budget and the client's
/// own operation timeout (`net/aws.rs` sets it; a client configured more patiently, as the
/// ledger test's on a loaded moto, is waited for as long).
pub(crate) async fn send<T, E, R>(
    client: &aws_sdk_dynamodb::Client,
    table: Table,
    name: &str,
    call: impl Future<Output = Result<T, SdkError<E, R>>>,
) -> Result<Result<T, SdkError<E, R>>, StoreError> {
    let timeout = crate::net::aws::operation_timeout(client.config().timeout_config());
    send_within(timeout, table, name, call).await
}

/// [`send`] with the client's own operation timeout.
pub(crate) async fn send_within<T, E, R>(
    timeout: Duration,
    table: Table,
    name: &str,
    call: impl Future<Output = Result<T, SdkError<E, R>>>,
) -> Result<Result<T, SdkError<E, R>>, StoreError> {
    crate::deadline::within(timeout, call)
        .await
        .ok_or_else(|| StoreError::Unavailable {
            table,
            detail: format!("no answer from {name} within the invocation's time budget"),
        })
}

/// Classifies a DynamoDB failure on the table `name`.
pub(crate) fn store_error<E: ProvideErrorMetadata + std::fmt::Debug, R>(
    table: Table,
    name: &str,
    e: SdkError<E, R>,
) -> StoreError {
    let code = e.code().unwrap_or_default();
    if code == "ResourceNotFoundException" || code == "AccessDeniedException" {
        StoreError::TableMissing {
            table,
            name: name.to_owned(),
        }
    } else {
        let detail = e.message().map(str::to_owned).unwrap_or_else(|| match &e {
            // Why the connection failed (refused, reset, the TLS failure), for the log.
            SdkError::DispatchFailure(failure) => match failure.as_connector_error() {
                Some(cause) => format!("{}: {}", aws_error_kind(&e), crate::net::error_chain(cause)),
                None => aws_error_kind(&e).to_string(),
            },
            _ => aws_error_kind(&e).to_string(),
        });
        StoreError::Unavailable {
            table,
            detail: match code {
                "" => format!("{name}: {detail}"),
                code => format!("{name}: {code} {detail}"),
            },
        }
    }
}

/// Where a walk through the pending index goes on from (DynamoDB's `LastEvaluatedKey`).
pub type PageStart = std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>;

/// One page of the pending items of a table: their keys, oldest first, and where the next page
/// starts (`None`: this was the last).
#[derive(Debug, Default)]
pub struct PendingPage {
    pub keys: Vec<String>,
    pub next: Option<PageStart>,
}

/// A page of the items pending (`pending = kind`) since before `cutoff`, from the sparse
/// `PendingIndex` (a `Query`, never a scan), at most `limit`, from `start` on. `key` names the
/// table's key attribute.
pub(crate) async fn pending_page(
    client: &aws_sdk_dynamodb::Client,
    table: Table,
    name: &str,
    (kind, key): (&str, &str),
    cutoff: u64,
    limit: i32,
    start: Option<PageStart>,
) -> Result<PendingPage, StoreError> {
    use aws_sdk_dynamodb::types::AttributeValue;
    let request = client
        .query()
        .table_name(name)
        .index_name(orders::PENDING_INDEX)
        .key_condition_expression("#p = :kind AND #since < :cutoff")
        .expression_attribute_names("#p", orders::attr::PENDING)
        .expression_attribute_names("#since", orders::attr::PENDING_SINCE)
        .expression_attribute_values(":kind", AttributeValue::S(kind.to_owned()))
        .expression_attribute_values(":cutoff", AttributeValue::N(cutoff.to_string()))
        .set_exclusive_start_key(start)
        .limit(limit);
    let output = send(client, table, name, request.send())
        .await?
        .map_err(|e| store_error(table, name, e))?;
    let keys = output
        .items()
        .iter()
        .filter_map(|item| item.get(key)?.as_s().ok().cloned())
        .collect();
    Ok(PendingPage {
        keys,
        next: output.last_evaluated_key.filter(|k| !k.is_empty()),
    })
}

/// Backs a pending item off after the reconciler failed on it `attempts` times in a row: it is
/// looked at again from `next_attempt_at` on, and the index's sort key moves with it, so the
/// reconciler's query skips it until then and it never stands before items that can progress.
/// Conditional on the item still pending as `kind` (one settled meanwhile stays settled).
pub(crate) async fn defer(
    client: &aws_sdk_dynamodb::Client,
    table: Table,
    name: &str,
    (kind, key, value): (&str, &str, &str),
    attempts: u64,
    next_attempt_at: u64,
    grace: u64,
) -> Result<bool, StoreError> {
    let request = client
        .update_item()
        .table_name(name)
        .key(key, s(value))
        .update_expression("SET #since = :since, #next = :next, #attempts = :attempts")
        .condition_expression("#p = :kind")
        .expression_attribute_names("#p", orders::attr::PENDING)
        .expression_attribute_names("#since", orders::attr::PENDING_SINCE)
        .expression_attribute_names("#next", orders::attr::NEXT_ATTEMPT_AT)
        .expression_attribute_names("#attempts", orders::attr::ATTEMPTS)
        .expression_attribute_values(":kind", s(kind))
        // The reconciler looks at what has been pending longer than its grace period.
        .expression_attribute_values(":since", n(next_attempt_at.saturating_sub(grace)))
        .expression_attribute_values(":next", n(next_attempt_at))
        .expression_attribute_values(":attempts", n(attempts));
    applied(table, name, send(client, table, name, request.send()).await?)
}

/// How many times in a row the reconciler failed on a pending item (0 when it never did).
pub(crate) fn attempts_of(item: &std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>) -> u64 {
    item.get(orders::attr::ATTEMPTS)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The outcome of a conditional write: `true` applied, `false` its condition did not hold.
pub(crate) fn applied<T, E: ProvideErrorMetadata + std::fmt::Debug, R>(
    table: Table,
    name: &str,
    result: Result<T, SdkError<E, R>>,
) -> Result<bool, StoreError> {
    match result {
        Ok(_) => Ok(true),
        Err(e) if is_condition_failure(&e) => Ok(false),
        Err(e) => Err(store_error(table, name, e)),
    }
}

/// Whether a write failed only because its condition did not hold.
pub(crate) fn is_condition_failure<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.code() == Some("ConditionalCheckFailedException")
}

fn aws_error_kind<E, R>(e: &SdkError<E, R>) -> &'static str {
    match e {
        SdkError::ConstructionFailure(_) => "request construction failed",
        SdkError::TimeoutError(_) => "timed out",
        SdkError::DispatchFailure(_) => "could not connect",
        SdkError::ResponseError(_) => "unreadable response",
        SdkError::ServiceError(_) => "service error",
        _ => "unknown error",
    }
}
