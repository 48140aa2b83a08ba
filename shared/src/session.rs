//! Login sessions in DynamoDB.
//!
//! The client holds an opaque token of 256 random bits; the table is keyed on the SHA-256 of
//! it, so a dump of the table yields no usable token. One `PutItem` per login, one consistent
//! `GetItem` per authenticated request. `expires_at` is the table's TTL attribute, and an item
//! past it is refused even before DynamoDB's TTL sweep deletes it (which can take days).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use lambda_http::http::StatusCode;
use sha2::{Digest, Sha256};

use crate::ApiError;
use crate::secret::Secret;

/// Attribute names of a session item; `template.yaml` and `scripts/local_aws.py` use the same.
pub mod attr {
    pub const TOKEN_HASH: &str = "token_hash";
    pub const OPENID: &str = "openid";
    pub const UNIONID: &str = "unionid";
    pub const SESSION_KEY: &str = "session_key";
    pub const CREATED_AT: &str = "created_at";
    pub const EXPIRES_AT: &str = "expires_at";
}

#[derive(Debug, Clone)]
pub struct Session {
    pub openid: String,
    pub unionid: Option<String>,
    pub session_key: Secret,
    pub created_at: u64,
    pub expires_at: u64,
}

/// A freshly issued login token and when it stops working.
#[derive(Debug)]
pub struct IssuedToken {
    pub token: Secret,
    pub expires_at: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the DynamoDB table {0} does not exist")]
    TableMissing(String),
    #[error("the session store is unavailable: {0}")]
    Unavailable(String),
    #[error("a session item is malformed: {0}")]
    Malformed(&'static str),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::TableMissing(_) | StoreError::Malformed(_) => ApiError::misconfigured(e.to_string()),
            StoreError::Unavailable(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "session_store_unavailable",
                "the session store is unavailable; try again",
            ),
        }
    }
}

#[derive(Clone)]
pub struct SessionStore {
    client: Client,
    table: String,
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// hex(SHA-256(token)): the table key.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// 32 random bytes from the OS, base64url without padding (43 characters).
fn new_token() -> Secret {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    Secret::new(URL_SAFE_NO_PAD.encode(bytes))
}

/// A token we issued is exactly 43 base64url characters; anything else is refused without a
/// DynamoDB read.
fn is_well_formed_token(token: &str) -> bool {
    token.len() == 43
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl SessionStore {
    pub fn new(client: Client, table: &str) -> Self {
        Self {
            client,
            table: table.to_owned(),
        }
    }

    /// Stores a new session and returns its token (one `PutItem`).
    pub async fn create(
        &self,
        openid: &str,
        unionid: Option<&str>,
        session_key: &Secret,
        ttl: Duration,
    ) -> Result<IssuedToken, StoreError> {
        let token = new_token();
        let created_at = now_unix();
        let expires_at = created_at + ttl.as_secs();
        let mut item = HashMap::from([
            (
                attr::TOKEN_HASH.to_owned(),
                AttributeValue::S(token_hash(token.expose())),
            ),
            (attr::OPENID.to_owned(), AttributeValue::S(openid.to_owned())),
            (
                attr::SESSION_KEY.to_owned(),
                AttributeValue::S(session_key.expose().to_owned()),
            ),
            (attr::CREATED_AT.to_owned(), AttributeValue::N(created_at.to_string())),
            (attr::EXPIRES_AT.to_owned(), AttributeValue::N(expires_at.to_string())),
        ]);
        if let Some(unionid) = unionid {
            item.insert(attr::UNIONID.to_owned(), AttributeValue::S(unionid.to_owned()));
        }
        let written = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            // The condition makes an overwrite impossible. 256 random bits never collide, so an
            // item already there is ours: an earlier attempt that wrote it before its answer was
            // lost (a timeout or throttling answer, retried by the SDK).
            .condition_expression("attribute_not_exists(#k)")
            .expression_attribute_names("#k", attr::TOKEN_HASH)
            .send()
            .await;
        match written {
            Ok(_) => Ok(IssuedToken { token, expires_at }),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(IssuedToken { token, expires_at }),
            Err(e) => Err(store_error(&self.table, e)),
        }
    }

    /// The live session behind `token`, or `None` for an unknown, malformed or expired token
    /// (one consistent `GetItem`, none for a malformed token).
    pub async fn get(&self, token: &str) -> Result<Option<Session>, StoreError> {
        if !is_well_formed_token(token) {
            return Ok(None);
        }
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::TOKEN_HASH, AttributeValue::S(token_hash(token)))
            // A token used right after login must be found.
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error(&self.table, e))?;
        let Some(item) = output.item else {
            return Ok(None);
        };
        let session = session_from_item(&item)?;
        Ok((session.expires_at > now_unix()).then_some(session))
    }

    /// Replaces the session key of the live session behind `token` (one conditional
    /// `UpdateItem`). `Ok(false)` when the session is gone or expired.
    pub async fn replace_session_key(&self, token: &str, session_key: &Secret) -> Result<bool, StoreError> {
        if !is_well_formed_token(token) {
            return Ok(false);
        }
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::TOKEN_HASH, AttributeValue::S(token_hash(token)))
            .update_expression("SET #sk = :sk")
            .condition_expression("attribute_exists(#k) AND #exp > :now")
            .expression_attribute_names("#k", attr::TOKEN_HASH)
            .expression_attribute_names("#sk", attr::SESSION_KEY)
            .expression_attribute_names("#exp", attr::EXPIRES_AT)
            .expression_attribute_values(":sk", AttributeValue::S(session_key.expose().to_owned()))
            .expression_attribute_values(":now", AttributeValue::N(now_unix().to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(false),
            Err(e) => Err(store_error(&self.table, e)),
        }
    }
}

/// Classifies a DynamoDB failure on `table`.
pub(crate) fn store_error<E: ProvideErrorMetadata + std::fmt::Debug, R>(table: &str, e: SdkError<E, R>) -> StoreError {
    let code = e.code().unwrap_or_default();
    if code == "ResourceNotFoundException" {
        StoreError::TableMissing(table.to_owned())
    } else {
        let detail = e
            .message()
            .map(str::to_owned)
            .unwrap_or_else(|| aws_error_kind(&e).to_string());
        StoreError::Unavailable(format!("{code} {detail}").trim().to_owned())
    }
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

fn session_from_item(item: &HashMap<String, AttributeValue>) -> Result<Session, StoreError> {
    let s = |name: &'static str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
    let n = |name: &'static str| {
        item.get(name)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Ok(Session {
        openid: s(attr::OPENID).ok_or(StoreError::Malformed(attr::OPENID))?,
        unionid: s(attr::UNIONID),
        session_key: Secret::new(s(attr::SESSION_KEY).ok_or(StoreError::Malformed(attr::SESSION_KEY))?),
        created_at: n(attr::CREATED_AT).ok_or(StoreError::Malformed(attr::CREATED_AT))?,
        expires_at: n(attr::EXPIRES_AT).ok_or(StoreError::Malformed(attr::EXPIRES_AT))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_256_bit_base64url_and_distinct() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert!(is_well_formed_token(a.expose()));
        assert_eq!(URL_SAFE_NO_PAD.decode(a.expose()).unwrap().len(), 32);
    }

    #[test]
    fn token_hash_is_sha256_hex() {
        // printf abc | sha256sum
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn malformed_tokens_are_not_looked_up() {
        for t in [
            "",
            "short",
            &"a".repeat(44),
            &format!("{}=", "a".repeat(42)),
            &format!("{}/", "a".repeat(42)),
        ] {
            assert!(!is_well_formed_token(t), "{t}");
        }
    }
}
