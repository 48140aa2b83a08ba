//! Login sessions in DynamoDB.
//!
//! The client holds an opaque token of 256 random bits; the table is keyed on the SHA-256 of
//! it, so a dump of the table yields no usable *token*. It does yield every user's session_key
//! (which decrypts that user's open data and signs checksession calls): the table is encrypted at
//! rest and only the functions that need it may read it. One `PutItem` per login, one consistent
//! `GetItem` per authenticated request. `expires_at` is the table's TTL attribute, and an item
//! past it is refused even before DynamoDB's TTL sweep deletes it (which can take days).
//!
//! Open data that fails to decrypt or verify costs the session: the failures are counted in the
//! item with an atomic `ADD`, and at [`FAILURE_BUDGET`] the session is deleted, which bounds a
//! padding-oracle or signature probe to a handful of requests per login.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use super::{StoreError, Table, applied, is_condition_failure, send, store_error};
use crate::clock::now_unix;
use crate::redacted::Secret;

/// Failed open-data decryptions or signature checks a session survives; the one that reaches it
/// deletes the session.
pub const FAILURE_BUDGET: u64 = 5;

/// Attribute names of a session item; `template.yaml` and `scripts/local_aws.py` use the same.
pub mod attr {
    pub const TOKEN_HASH: &str = "token_hash";
    pub const OPENID: &str = "openid";
    pub const UNIONID: &str = "unionid";
    pub const SESSION_KEY: &str = "session_key";
    pub const CREATED_AT: &str = "created_at";
    pub const EXPIRES_AT: &str = "expires_at";
    pub const FAILURES: &str = "open_data_failures";
}

#[derive(Debug, Clone)]
pub struct Session {
    /// The table key: hex SHA-256 of the client's token.
    pub token_hash: String,
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

#[derive(Clone)]
pub struct SessionStore {
    client: Client,
    table: String,
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

    fn failed(
        &self,
        e: aws_sdk_dynamodb::error::SdkError<impl ProvideErrorMetadata + std::fmt::Debug, impl Sized>,
    ) -> StoreError {
        store_error(Table::Sessions, &self.table, e)
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
        let expires_at = created_at.saturating_add(ttl.as_secs());
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
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            // The condition makes an overwrite impossible. 256 random bits never collide, so an
            // item already there is ours: an earlier attempt that wrote it before its answer was
            // lost (a timeout or throttling answer, retried by the SDK).
            .condition_expression("attribute_not_exists(#k)")
            .expression_attribute_names("#k", attr::TOKEN_HASH);
        match send(&self.client, Table::Sessions, &self.table, request.send()).await? {
            Ok(_) => Ok(IssuedToken { token, expires_at }),
            Err(e) if is_condition_failure(&e) => Ok(IssuedToken { token, expires_at }),
            Err(e) => Err(self.failed(e)),
        }
    }

    /// The live session behind `token`, or `None` for an unknown, malformed, expired or revoked
    /// token (one consistent `GetItem`, none for a malformed token).
    pub async fn get(&self, token: &str) -> Result<Option<Session>, StoreError> {
        if !is_well_formed_token(token) {
            return Ok(None);
        }
        let request = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::TOKEN_HASH, AttributeValue::S(token_hash(token)))
            // A token used right after login must be found.
            .consistent_read(true);
        let output = send(&self.client, Table::Sessions, &self.table, request.send())
            .await?
            .map_err(|e| self.failed(e))?;
        let Some(item) = output.item else {
            return Ok(None);
        };
        let failures = number(&item, attr::FAILURES).unwrap_or(0);
        let session = session_from_item(&item)?;
        // A session at its failure budget is revoked even if deleting it failed.
        Ok((session.expires_at > now_unix() && failures < FAILURE_BUDGET).then_some(session))
    }

    /// Replaces the session key of a live session (one conditional `UpdateItem`). `Ok(false)`
    /// when the session is gone or expired.
    pub async fn replace_session_key(&self, session: &Session, session_key: &Secret) -> Result<bool, StoreError> {
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::TOKEN_HASH, AttributeValue::S(session.token_hash.clone()))
            .update_expression("SET #sk = :sk")
            .condition_expression("attribute_exists(#k) AND #exp > :now")
            .expression_attribute_names("#k", attr::TOKEN_HASH)
            .expression_attribute_names("#sk", attr::SESSION_KEY)
            .expression_attribute_names("#exp", attr::EXPIRES_AT)
            .expression_attribute_values(":sk", AttributeValue::S(session_key.expose().to_owned()))
            .expression_attribute_values(":now", AttributeValue::N(now_unix().to_string()));
        applied(
            Table::Sessions,
            &self.table,
            send(&self.client, Table::Sessions, &self.table, request.send()).await?,
        )
    }

    /// Counts one failed decryption or signature check against `session` (an atomic `ADD`) and
    /// deletes the session when the count reaches [`FAILURE_BUDGET`]. Returns whether the session
    /// was revoked (or was already gone).
    pub async fn record_failure(&self, session: &Session) -> Result<bool, StoreError> {
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::TOKEN_HASH, AttributeValue::S(session.token_hash.clone()))
            .update_expression("ADD #f :one")
            .condition_expression("attribute_exists(#k)")
            .expression_attribute_names("#k", attr::TOKEN_HASH)
            .expression_attribute_names("#f", attr::FAILURES)
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .return_values(ReturnValue::UpdatedNew);
        let failures = match send(&self.client, Table::Sessions, &self.table, request.send()).await? {
            Ok(output) => output
                .attributes
                .as_ref()
                .and_then(|a| number(a, attr::FAILURES))
                .unwrap_or(FAILURE_BUDGET),
            Err(e) if is_condition_failure(&e) => return Ok(true),
            Err(e) => return Err(self.failed(e)),
        };
        if failures >= FAILURE_BUDGET {
            self.revoke(session).await?;
            tracing::warn!(
                openid = %session.openid,
                failures,
                "session revoked: too many open-data failures"
            );
            // Counted by the failure that reached the budget (a concurrent one past it deletes
            // the session too, but is not another revocation).
            if failures == FAILURE_BUDGET {
                crate::metrics::count(crate::metrics::Metric::SessionsRevoked);
            }
            return Ok(true);
        }
        Ok(false)
    }

    /// Deletes a session whose key no longer works — WeChat holds another (the user ran
    /// `wx.login` again), or the stored one is not a key — and counts it (`SessionsRevoked`).
    /// A logout is [`revoke`](Self::revoke).
    pub async fn revoke_stale(&self, session: &Session) -> Result<(), StoreError> {
        self.revoke(session).await?;
        crate::metrics::count(crate::metrics::Metric::SessionsRevoked);
        Ok(())
    }

    /// Deletes the session (one `DeleteItem`): its token stops working at once.
    pub async fn revoke(&self, session: &Session) -> Result<(), StoreError> {
        let request = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(attr::TOKEN_HASH, AttributeValue::S(session.token_hash.clone()));
        send(&self.client, Table::Sessions, &self.table, request.send())
            .await?
            .map_err(|e| self.failed(e))?;
        Ok(())
    }
}

use aws_sdk_dynamodb::error::ProvideErrorMetadata;

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> Option<u64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

fn session_from_item(item: &HashMap<String, AttributeValue>) -> Result<Session, StoreError> {
    let malformed = |attribute| StoreError::Malformed {
        table: Table::Sessions,
        attribute,
    };
    let s = |name: &'static str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
    Ok(Session {
        token_hash: s(attr::TOKEN_HASH).ok_or(malformed(attr::TOKEN_HASH))?,
        openid: s(attr::OPENID).ok_or(malformed(attr::OPENID))?,
        unionid: s(attr::UNIONID),
        session_key: Secret::new(s(attr::SESSION_KEY).ok_or(malformed(attr::SESSION_KEY))?),
        created_at: number(item, attr::CREATED_AT).ok_or(malformed(attr::CREATED_AT))?,
        expires_at: number(item, attr::EXPIRES_AT).ok_or(malformed(attr::EXPIRES_AT))?,
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
