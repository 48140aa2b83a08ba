//! The DynamoDB tables: one module per table, each with its own rules (keys, conditional writes,
//! TTL), and the one way their failures are classified and answered.

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

/// The longest a DynamoDB call may take: the SDK's own operation timeout (see `net/aws.rs`).
pub(crate) const CALL_TIMEOUT: Duration = crate::net::aws::OPERATION_TIMEOUT;

/// Sends a DynamoDB request within the invocation's time budget.
pub(crate) async fn send<T, E, R>(
    table: Table,
    name: &str,
    call: impl Future<Output = Result<T, SdkError<E, R>>>,
) -> Result<Result<T, SdkError<E, R>>, StoreError> {
    send_within(CALL_TIMEOUT, table, name, call).await
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

/// The keys of items pending (`pending = kind`) since before `cutoff`, from the sparse
/// `PendingIndex` (a `Query`, never a scan), oldest first, at most `limit`.
pub(crate) async fn pending_keys(
    client: &aws_sdk_dynamodb::Client,
    table: Table,
    name: &str,
    kind: &str,
    cutoff: u64,
    limit: i32,
) -> Result<Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>>, StoreError> {
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
        .limit(limit);
    let output = send(table, name, request.send())
        .await?
        .map_err(|e| store_error(table, name, e))?;
    Ok(output.items.unwrap_or_default())
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
