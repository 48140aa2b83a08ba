//! The fleet's shared WeChat credentials (the access token, the card `api_ticket`): one item per
//! credential in the tokens table, keyed by `name`, so that every container uses the same value
//! and only one of them asks WeChat for the next.
//!
//! An item holds the value sealed (AES-256-GCM under a key derived from the app secret: a read of
//! the table alone yields nothing usable), its `generation` (a random id per value: what an
//! invalidation names), when it expires and when its refresh is due, and the refresh lease: who is
//! refreshing it (`lease_owner`) until when (`lease_until_ms`). Every change is conditional.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;

use super::{StoreError, Table, applied, n, s, store_error};

pub mod attr {
    pub const NAME: &str = "name";
    pub const GENERATION: &str = "generation";
    pub const SEALED: &str = "sealed";
    pub const EXPIRES_AT_MS: &str = "expires_at_ms";
    pub const REFRESH_AT_MS: &str = "refresh_at_ms";
    pub const LEASE_OWNER: &str = "lease_owner";
    pub const LEASE_UNTIL_MS: &str = "lease_until_ms";
}

/// A credential as the table holds it.
#[derive(Clone, PartialEq)]
pub struct Stored {
    /// The sealed value and its generation: absent while the first refresh is under way.
    pub value: Option<SealedValue>,
    /// Who holds the refresh lease, until when (Unix ms).
    pub lease: Option<(String, u64)>,
}

/// A sealed value and what the fleet needs to know about it without opening it.
#[derive(Clone, PartialEq)]
pub struct SealedValue {
    pub generation: String,
    /// Nonce and AES-256-GCM ciphertext with its tag.
    pub sealed: Vec<u8>,
    /// When WeChat stops accepting it (Unix ms).
    pub expires_at_ms: u64,
    /// When one container should fetch the next (Unix ms).
    pub refresh_at_ms: u64,
}

impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stored")
            .field("generation", &self.value.as_ref().map(|v| &v.generation))
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
pub struct TokenStore {
    client: Client,
    table: String,
    /// The client's operation timeout, which bounds each call here too.
    call_timeout: std::time::Duration,
}

fn number(item: &HashMap<String, AttributeValue>, name: &'static str) -> Result<Option<u64>, StoreError> {
    item.get(name)
        .map(|v| {
            v.as_n().ok().and_then(|n| n.parse().ok()).ok_or(StoreError::Malformed {
                table: Table::Tokens,
                attribute: name,
            })
        })
        .transpose()
}

fn text(item: &HashMap<String, AttributeValue>, name: &'static str) -> Result<Option<String>, StoreError> {
    item.get(name)
        .map(|v| {
            v.as_s().cloned().map_err(|_| StoreError::Malformed {
                table: Table::Tokens,
                attribute: name,
            })
        })
        .transpose()
}

impl TokenStore {
    pub fn new(client: Client, table: &str) -> Self {
        Self {
            call_timeout: crate::net::aws::operation_timeout(client.config().timeout_config()),
            client,
            table: table.to_owned(),
        }
    }

    async fn send<T, E, R>(
        &self,
        call: impl Future<Output = Result<T, aws_sdk_dynamodb::error::SdkError<E, R>>>,
    ) -> Result<Result<T, aws_sdk_dynamodb::error::SdkError<E, R>>, StoreError> {
        super::send_within(self.call_timeout, Table::Tokens, &self.table, call).await
    }

    /// The credential `name` (a consistent read: a value published a moment ago is seen).
    pub async fn read(&self, name: &str) -> Result<Option<Stored>, StoreError> {
        let request = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::NAME, s(name))
            .consistent_read(true);
        let output = self
            .send(request.send())
            .await?
            .map_err(|e| store_error(Table::Tokens, &self.table, e))?;
        let Some(item) = output.item else {
            return Ok(None);
        };
        let value = match (
            text(&item, attr::GENERATION)?,
            item.get(attr::SEALED),
            number(&item, attr::EXPIRES_AT_MS)?,
            number(&item, attr::REFRESH_AT_MS)?,
        ) {
            (Some(generation), Some(AttributeValue::B(sealed)), Some(expires_at_ms), Some(refresh_at_ms)) => {
                Some(SealedValue {
                    generation,
                    sealed: sealed.clone().into_inner(),
                    expires_at_ms,
                    refresh_at_ms,
                })
            }
            (None, None, None, None) => None,
            _ => {
                return Err(StoreError::Malformed {
                    table: Table::Tokens,
                    attribute: attr::SEALED,
                });
            }
        };
        let lease = text(&item, attr::LEASE_OWNER)?.zip(number(&item, attr::LEASE_UNTIL_MS)?);
        Ok(Some(Stored { value, lease }))
    }

    /// Takes the refresh lease for `owner` until `until_ms`, if nobody holds an unexpired one and
    /// the item still holds `seen` (the generation the caller judged due, or no item/value at
    /// all): a container that refreshed meanwhile makes this fail, so nobody refreshes twice.
    pub async fn take_lease(
        &self,
        name: &str,
        owner: &str,
        now_ms: u64,
        until_ms: u64,
        seen: Option<&str>,
    ) -> Result<bool, StoreError> {
        let still = if seen.is_some() {
            "#gen = :seen"
        } else {
            "attribute_not_exists(#gen)"
        };
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::NAME, s(name))
            .update_expression("SET #owner = :me, #until = :until")
            .condition_expression(format!("(attribute_not_exists(#until) OR #until < :now) AND {still}"))
            .expression_attribute_names("#owner", attr::LEASE_OWNER)
            .expression_attribute_names("#until", attr::LEASE_UNTIL_MS)
            .expression_attribute_names("#gen", attr::GENERATION)
            .expression_attribute_values(":me", s(owner))
            .expression_attribute_values(":until", n(until_ms))
            .expression_attribute_values(":now", n(now_ms));
        if let Some(seen) = seen {
            request = request.expression_attribute_values(":seen", s(seen));
        }
        applied(Table::Tokens, &self.table, self.send(request.send()).await?)
    }

    /// Publishes `value` and ends the lease, if `owner` still holds it (a holder too slow to
    /// keep it publishes nothing: whoever took the lease over does).
    pub async fn publish(&self, name: &str, owner: &str, value: &SealedValue) -> Result<bool, StoreError> {
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(attr::NAME, s(name))
            .item(attr::GENERATION, s(&value.generation))
            .item(attr::SEALED, AttributeValue::B(Blob::new(value.sealed.clone())))
            .item(attr::EXPIRES_AT_MS, n(value.expires_at_ms))
            .item(attr::REFRESH_AT_MS, n(value.refresh_at_ms))
            .condition_expression("#owner = :me")
            .expression_attribute_names("#owner", attr::LEASE_OWNER)
            .expression_attribute_values(":me", s(owner));
        applied(Table::Tokens, &self.table, self.send(request.send()).await?)
    }

    /// Gives the lease back after a failed refresh, so that the next container tries at once
    /// instead of waiting for the lease to expire.
    pub async fn release_lease(&self, name: &str, owner: &str) -> Result<bool, StoreError> {
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::NAME, s(name))
            .update_expression("REMOVE #owner, #until")
            .condition_expression("#owner = :me")
            .expression_attribute_names("#owner", attr::LEASE_OWNER)
            .expression_attribute_names("#until", attr::LEASE_UNTIL_MS)
            .expression_attribute_values(":me", s(owner));
        applied(Table::Tokens, &self.table, self.send(request.send()).await?)
    }
}
