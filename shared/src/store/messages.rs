//! What WeChat tells us and we keep, in one table keyed by `pk` with a TTL (`expires_at`):
//! - `push#<key>`: a message push being handled or handled (WeChat retries and duplicates them),
//!   claimed with a conditional write before its effect, marked done after it, given back if it
//!   failed, taken over if its invocation died;
//! - `sub#<openid>#<template_id>`: which subscribe-message templates a user accepted, and how many
//!   one-time sends remain (WeChat's own count is the truth: a send's answer corrects ours);
//! - `media#<trace_id>`: an asynchronous content check, its caller and, once pushed, its verdict.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;

use super::{StoreError, Table, applied, n, s, send, store_error};

pub mod attr {
    pub const PK: &str = "pk";
    pub const EXPIRES_AT: &str = "expires_at";
    pub const OPENID: &str = "openid";
    pub const REMAINING: &str = "remaining";
    pub const STATUS: &str = "status";
    pub const SUGGEST: &str = "suggest";
    pub const LABEL: &str = "label";
    pub const UPDATED_AT: &str = "updated_at";
    pub const CLAIM_ID: &str = "claim_id";
    pub const CLAIMED_AT: &str = "claimed_at";
    /// The push a plain-mode signature was first seen with (see `bind_push_signature`).
    pub const PUSH_KEY: &str = "push_key";
}

/// A push's claim: being handled, then handled.
const PROCESSING: &str = "processing";
const DONE: &str = "done";

/// What claiming a push found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Ours: apply its effect, then finish (or release) it.
    Mine,
    /// Handled before: a duplicate.
    Done,
    /// Another delivery is handling it now: WeChat should ask again.
    Busy,
}

/// How long a handled push is remembered: WeChat's retries end within minutes.
pub const PUSH_MEMORY: Duration = Duration::from_secs(2 * 24 * 3600);
/// A claim still `processing` this long after it was made belongs to an invocation that died
/// (longer than the Lambda timeout): the next delivery takes it over.
pub const PUSH_CLAIM_STALE: Duration = Duration::from_secs(30);
/// How long a subscription record and a media check are kept.
pub const RECORD_LIFETIME: Duration = Duration::from_secs(366 * 24 * 3600);
pub const MEDIA_CHECK_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// A user's record for one template.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Subscription {
    pub template_id: String,
    /// `accept`, `reject`, `ban`... as WeChat reported it last.
    pub status: String,
    /// One-time sends left.
    pub remaining: u64,
}

/// An asynchronous media check.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaCheck {
    pub openid: Option<String>,
    /// `pending`, then `done`.
    pub status: String,
    pub suggest: Option<String>,
    /// A number or a string, as WeChat pushed it.
    pub label: Option<String>,
}

#[derive(Clone)]
pub struct MessageStore {
    client: Client,
    table: String,
}

impl MessageStore {
    pub fn new(client: Client, table: &str) -> Self {
        Self {
            client,
            table: table.to_owned(),
        }
    }

    /// The customer-service conversations kept in the same table.
    pub fn conversations(&self) -> super::conversations::ConversationStore {
        super::conversations::ConversationStore::new(self.client.clone(), &self.table)
    }

    fn failed<E: ProvideErrorMetadata + std::fmt::Debug, R>(&self, e: SdkError<E, R>) -> StoreError {
        store_error(Table::Messages, &self.table, e)
    }

    /// Claims a push by its key before its effect, for `claim_id` (one per delivery handled). A
    /// claim is `processing` until [`MessageStore::finish_push`] marks it `done`; a claim left
    /// `processing` past [`PUSH_CLAIM_STALE`] (its invocation died) may be taken over, and the
    /// SDK's own retry of this write (the first attempt's answer lost) finds its own claim.
    pub async fn claim_push(&self, key: &str, claim_id: &str, now: u64) -> Result<Claim, StoreError> {
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(attr::PK, s(&format!("push#{key}")))
            .item(attr::STATUS, s(PROCESSING))
            .item(attr::CLAIM_ID, s(claim_id))
            .item(attr::CLAIMED_AT, n(now))
            .item(attr::EXPIRES_AT, n(now + PUSH_MEMORY.as_secs()))
            .condition_expression("attribute_not_exists(#pk) OR #claim = :me OR (#st = :processing AND #at < :stale)")
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_names("#claim", attr::CLAIM_ID)
            .expression_attribute_names("#st", attr::STATUS)
            .expression_attribute_names("#at", attr::CLAIMED_AT)
            .expression_attribute_values(":me", s(claim_id))
            .expression_attribute_values(":processing", s(PROCESSING))
            .expression_attribute_values(":stale", n(now.saturating_sub(PUSH_CLAIM_STALE.as_secs())));
        if applied(
            Table::Messages,
            &self.table,
            send(&self.client, Table::Messages, &self.table, request.send()).await?,
        )? {
            return Ok(Claim::Mine);
        }
        // Someone else's: finished, or still being handled.
        let request = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::PK, s(&format!("push#{key}")))
            .consistent_read(true);
        let output = send(&self.client, Table::Messages, &self.table, request.send())
            .await?
            .map_err(|e| self.failed(e))?;
        let status = output
            .item
            .as_ref()
            .and_then(|item| item.get(attr::STATUS))
            .and_then(|v| v.as_s().ok());
        Ok(match status.map(String::as_str) {
            Some(DONE) => Claim::Done,
            _ => Claim::Busy,
        })
    }

    /// Binds a plain-mode push's `(timestamp, nonce, signature)`, hashed to `signature_key`, to
    /// the one push (`push_key`) it first came with. Plain mode signs no body, so a captured
    /// signature could carry any other body within the replay window: `false` when this
    /// signature came with another push before. A repeat of the same push (WeChat's retry) is
    /// `true`, and dealt with by the push's own claim.
    pub async fn bind_push_signature(&self, signature_key: &str, push_key: &str, now: u64) -> Result<bool, StoreError> {
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(attr::PK, s(&format!("pushsig#{signature_key}")))
            .item(attr::PUSH_KEY, s(push_key))
            .item(attr::EXPIRES_AT, n(now + PUSH_MEMORY.as_secs()))
            .condition_expression("attribute_not_exists(#pk) OR #push = :push")
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_names("#push", attr::PUSH_KEY)
            .expression_attribute_values(":push", s(push_key));
        applied(
            Table::Messages,
            &self.table,
            send(&self.client, Table::Messages, &self.table, request.send()).await?,
        )
    }

    /// The push's effect is recorded: its duplicates are answered as handled from now on.
    pub async fn finish_push(&self, key: &str, claim_id: &str) -> Result<(), StoreError> {
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::PK, s(&format!("push#{key}")))
            .update_expression("SET #st = :done")
            .condition_expression("#claim = :me")
            .expression_attribute_names("#st", attr::STATUS)
            .expression_attribute_names("#claim", attr::CLAIM_ID)
            .expression_attribute_values(":done", s(DONE))
            .expression_attribute_values(":me", s(claim_id));
        // Taken over meanwhile (this invocation was slow): the other one finishes it.
        applied(
            Table::Messages,
            &self.table,
            send(&self.client, Table::Messages, &self.table, request.send()).await?,
        )?;
        Ok(())
    }

    /// Gives a claim back after its effect failed, so that WeChat's retry is handled.
    pub async fn release_push(&self, key: &str, claim_id: &str) -> Result<(), StoreError> {
        let request = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(attr::PK, s(&format!("push#{key}")))
            .condition_expression("#claim = :me")
            .expression_attribute_names("#claim", attr::CLAIM_ID)
            .expression_attribute_values(":me", s(claim_id));
        applied(
            Table::Messages,
            &self.table,
            send(&self.client, Table::Messages, &self.table, request.send()).await?,
        )?;
        Ok(())
    }

    fn subscription_key(openid: &str, template_id: &str) -> AttributeValue {
        s(&format!("sub#{openid}#{template_id}"))
    }

    /// Records what the user chose for a template: `accept` grants one more one-time send.
    pub async fn record_subscription(
        &self,
        openid: &str,
        template_id: &str,
        status: &str,
        now: u64,
    ) -> Result<(), StoreError> {
        let grant = u64::from(status == "accept");
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::PK, Self::subscription_key(openid, template_id))
            .update_expression("SET #st = :st, #up = :now, #exp = :exp ADD #rem :grant")
            .expression_attribute_names("#st", attr::STATUS)
            .expression_attribute_names("#up", attr::UPDATED_AT)
            .expression_attribute_names("#exp", attr::EXPIRES_AT)
            .expression_attribute_names("#rem", attr::REMAINING)
            .expression_attribute_values(":st", s(status))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":exp", n(now + RECORD_LIFETIME.as_secs()))
            .expression_attribute_values(":grant", n(grant));
        send(&self.client, Table::Messages, &self.table, request.send())
            .await?
            .map_err(|e| self.failed(e))?;
        Ok(())
    }

    /// One send was made (WeChat accepted it): one fewer left, never below zero.
    pub async fn record_send(&self, openid: &str, template_id: &str) -> Result<(), StoreError> {
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::PK, Self::subscription_key(openid, template_id))
            .update_expression("ADD #rem :minus")
            .condition_expression("#rem > :zero")
            .expression_attribute_names("#rem", attr::REMAINING)
            .expression_attribute_values(":minus", AttributeValue::N("-1".into()))
            .expression_attribute_values(":zero", n(0));
        applied(
            Table::Messages,
            &self.table,
            send(&self.client, Table::Messages, &self.table, request.send()).await?,
        )?;
        Ok(())
    }

    /// The user changed a template in the settings (`subscribe_msg_change_event`): turned off
    /// (anything but `accept`), none is left.
    pub async fn record_status_change(
        &self,
        openid: &str,
        template_id: &str,
        status: &str,
        now: u64,
    ) -> Result<(), StoreError> {
        let expression = if status == "accept" {
            "SET #st = :st, #up = :now, #exp = :exp"
        } else {
            "SET #st = :st, #up = :now, #exp = :exp, #rem = :zero"
        };
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::PK, Self::subscription_key(openid, template_id))
            .update_expression(expression)
            .expression_attribute_names("#st", attr::STATUS)
            .expression_attribute_names("#up", attr::UPDATED_AT)
            .expression_attribute_names("#exp", attr::EXPIRES_AT)
            .expression_attribute_values(":st", s(status))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":exp", n(now + RECORD_LIFETIME.as_secs()));
        if status != "accept" {
            request = request
                .expression_attribute_names("#rem", attr::REMAINING)
                .expression_attribute_values(":zero", n(0));
        }
        send(&self.client, Table::Messages, &self.table, request.send())
            .await?
            .map_err(|e| self.failed(e))?;
        Ok(())
    }

    /// WeChat says none is left (43101): so does the record.
    pub async fn record_none_left(&self, openid: &str, template_id: &str, now: u64) -> Result<(), StoreError> {
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::PK, Self::subscription_key(openid, template_id))
            .update_expression("SET #rem = :zero, #up = :now, #exp = :exp, #st = if_not_exists(#st, :none)")
            .expression_attribute_names("#rem", attr::REMAINING)
            .expression_attribute_names("#up", attr::UPDATED_AT)
            .expression_attribute_names("#exp", attr::EXPIRES_AT)
            .expression_attribute_names("#st", attr::STATUS)
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":exp", n(now + RECORD_LIFETIME.as_secs()))
            .expression_attribute_values(":none", s("none"));
        send(&self.client, Table::Messages, &self.table, request.send())
            .await?
            .map_err(|e| self.failed(e))?;
        Ok(())
    }

    pub async fn subscription(&self, openid: &str, template_id: &str) -> Result<Option<Subscription>, StoreError> {
        let request = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::PK, Self::subscription_key(openid, template_id))
            .consistent_read(true);
        let output = send(&self.client, Table::Messages, &self.table, request.send())
            .await?
            .map_err(|e| self.failed(e))?;
        Ok(output.item.map(|item| Subscription {
            template_id: template_id.to_owned(),
            status: item
                .get(attr::STATUS)
                .and_then(|v| v.as_s().ok())
                .cloned()
                .unwrap_or_default(),
            remaining: item
                .get(attr::REMAINING)
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        }))
    }

    fn media_key(trace_id: &str) -> AttributeValue {
        s(&format!("media#{trace_id}"))
    }

    /// A media check was asked for by `openid` (the verdict may have been pushed already: both
    /// writes merge, in either order).
    pub async fn record_media_check(&self, trace_id: &str, openid: &str, now: u64) -> Result<(), StoreError> {
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::PK, Self::media_key(trace_id))
            .update_expression("SET #o = :o, #st = if_not_exists(#st, :pending), #exp = :exp")
            .expression_attribute_names("#o", attr::OPENID)
            .expression_attribute_names("#st", attr::STATUS)
            .expression_attribute_names("#exp", attr::EXPIRES_AT)
            .expression_attribute_values(":o", s(openid))
            .expression_attribute_values(":pending", s("pending"))
            .expression_attribute_values(":exp", n(now + MEDIA_CHECK_LIFETIME.as_secs()));
        send(&self.client, Table::Messages, &self.table, request.send())
            .await?
            .map_err(|e| self.failed(e))?;
        Ok(())
    }

    /// The verdict WeChat pushed for a media check.
    pub async fn record_media_verdict(
        &self,
        trace_id: &str,
        suggest: &str,
        label: &str,
        now: u64,
    ) -> Result<(), StoreError> {
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::PK, Self::media_key(trace_id))
            .update_expression("SET #st = :done, #sg = :sg, #lb = :lb, #up = :now, #exp = if_not_exists(#exp, :exp)")
            .expression_attribute_names("#st", attr::STATUS)
            .expression_attribute_names("#sg", attr::SUGGEST)
            .expression_attribute_names("#lb", attr::LABEL)
            .expression_attribute_names("#up", attr::UPDATED_AT)
            .expression_attribute_names("#exp", attr::EXPIRES_AT)
            .expression_attribute_values(":done", s("done"))
            .expression_attribute_values(":sg", s(suggest))
            .expression_attribute_values(":lb", s(label))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":exp", n(now + MEDIA_CHECK_LIFETIME.as_secs()));
        send(&self.client, Table::Messages, &self.table, request.send())
            .await?
            .map_err(|e| self.failed(e))?;
        Ok(())
    }

    pub async fn media_check(&self, trace_id: &str) -> Result<Option<MediaCheck>, StoreError> {
        let request = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::PK, Self::media_key(trace_id))
            .consistent_read(true);
        let output = send(&self.client, Table::Messages, &self.table, request.send())
            .await?
            .map_err(|e| self.failed(e))?;
        Ok(output.item.map(|item| {
            let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
            MediaCheck {
                openid: text(attr::OPENID),
                status: text(attr::STATUS).unwrap_or_else(|| "pending".into()),
                suggest: text(attr::SUGGEST),
                label: text(attr::LABEL),
            }
        }))
    }
}
