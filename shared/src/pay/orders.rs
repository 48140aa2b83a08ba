//! Orders in DynamoDB. The merchant's own system puts each order (`out_trade_no`, `openid`,
//! `description`, `amount_total` in fen, `status: "UNPAID"`); the functions only attach a
//! prepay_id and mark it paid, both with conditional writes. The amount never comes from the
//! mini-program.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::AttributeValue;

use crate::session::{StoreError, store_error};

pub mod attr {
    pub const OUT_TRADE_NO: &str = "out_trade_no";
    pub const OPENID: &str = "openid";
    pub const DESCRIPTION: &str = "description";
    pub const AMOUNT_TOTAL: &str = "amount_total";
    pub const STATUS: &str = "status";
    pub const PREPAY_ID: &str = "prepay_id";
    pub const PREPAY_CREATED_AT: &str = "prepay_created_at";
    pub const PAY_API: &str = "pay_api";
    pub const TRANSACTION_ID: &str = "transaction_id";
    pub const PAID_AT: &str = "paid_at";
}

pub const UNPAID: &str = "UNPAID";
pub const PAID: &str = "PAID";

#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    pub out_trade_no: String,
    pub openid: String,
    pub description: String,
    pub amount_total: u64,
    pub status: String,
    pub prepay_id: Option<String>,
    pub prepay_created_at: Option<u64>,
    pub pay_api: Option<String>,
    pub transaction_id: Option<String>,
}

/// What marking an order paid did.
#[derive(Debug, PartialEq)]
pub enum MarkPaid {
    /// This call changed the order from UNPAID to PAID.
    Changed,
    /// The order was already paid (a repeated notification): nothing changed.
    AlreadyPaid,
    /// The order is neither unpaid nor paid (closed by the merchant, say): nothing changed.
    NotPayable(String),
}

#[derive(Clone)]
pub struct OrderStore {
    client: Client,
    table: String,
}

impl OrderStore {
    pub fn new(client: Client, table: &str) -> Self {
        Self {
            client,
            table: table.to_owned(),
        }
    }

    /// One consistent `GetItem`.
    pub async fn get(&self, out_trade_no: &str) -> Result<Option<Order>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::OUT_TRADE_NO, AttributeValue::S(out_trade_no.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error(&self.table, e))?;
        output.item.as_ref().map(order_from_item).transpose()
    }

    /// Stores `prepay_id` if the order is still unpaid and its prepay_id is still `previous`
    /// (none, or the expired one this call replaces). `false`: another call got there first.
    pub async fn save_prepay(
        &self,
        order: &Order,
        prepay_id: &str,
        created_at: u64,
        pay_api: &str,
    ) -> Result<bool, StoreError> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::OUT_TRADE_NO, AttributeValue::S(order.out_trade_no.clone()))
            .update_expression("SET #p = :p, #pc = :pc, #api = :api")
            .expression_attribute_names("#p", attr::PREPAY_ID)
            .expression_attribute_names("#pc", attr::PREPAY_CREATED_AT)
            .expression_attribute_names("#api", attr::PAY_API)
            .expression_attribute_names("#s", attr::STATUS)
            .expression_attribute_values(":p", AttributeValue::S(prepay_id.to_owned()))
            .expression_attribute_values(":pc", AttributeValue::N(created_at.to_string()))
            .expression_attribute_values(":api", AttributeValue::S(pay_api.to_owned()))
            .expression_attribute_values(":unpaid", AttributeValue::S(UNPAID.to_owned()));
        request = match &order.prepay_id {
            Some(previous) => request
                .condition_expression("#s = :unpaid AND #p = :old")
                .expression_attribute_values(":old", AttributeValue::S(previous.clone())),
            None => request.condition_expression("#s = :unpaid AND attribute_not_exists(#p)"),
        };
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(false),
            Err(e) => Err(store_error(&self.table, e)),
        }
    }

    /// UNPAID → PAID with the transaction id, at most once however many notifications arrive:
    /// the write is conditional on the status still being UNPAID.
    pub async fn mark_paid(
        &self,
        out_trade_no: &str,
        transaction_id: &str,
        paid_at: u64,
    ) -> Result<MarkPaid, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::OUT_TRADE_NO, AttributeValue::S(out_trade_no.to_owned()))
            .update_expression("SET #s = :paid, #tx = :tx, #at = :at")
            .condition_expression("#s = :unpaid")
            .expression_attribute_names("#s", attr::STATUS)
            .expression_attribute_names("#tx", attr::TRANSACTION_ID)
            .expression_attribute_names("#at", attr::PAID_AT)
            .expression_attribute_values(":paid", AttributeValue::S(PAID.to_owned()))
            .expression_attribute_values(":unpaid", AttributeValue::S(UNPAID.to_owned()))
            .expression_attribute_values(":tx", AttributeValue::S(transaction_id.to_owned()))
            .expression_attribute_values(":at", AttributeValue::N(paid_at.to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(MarkPaid::Changed),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => {
                let status = self.get(out_trade_no).await?.map(|o| o.status).unwrap_or_default();
                Ok(if status == PAID {
                    MarkPaid::AlreadyPaid
                } else {
                    MarkPaid::NotPayable(status)
                })
            }
            Err(e) => Err(store_error(&self.table, e)),
        }
    }
}

fn order_from_item(item: &HashMap<String, AttributeValue>) -> Result<Order, StoreError> {
    let s = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
    let n = |name: &str| {
        item.get(name)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Ok(Order {
        out_trade_no: s(attr::OUT_TRADE_NO).ok_or(StoreError::Malformed(attr::OUT_TRADE_NO))?,
        openid: s(attr::OPENID).ok_or(StoreError::Malformed(attr::OPENID))?,
        description: s(attr::DESCRIPTION).ok_or(StoreError::Malformed(attr::DESCRIPTION))?,
        amount_total: n(attr::AMOUNT_TOTAL)
            .filter(|&a| a > 0)
            .ok_or(StoreError::Malformed(attr::AMOUNT_TOTAL))?,
        status: s(attr::STATUS).ok_or(StoreError::Malformed(attr::STATUS))?,
        prepay_id: s(attr::PREPAY_ID),
        prepay_created_at: n(attr::PREPAY_CREATED_AT),
        pay_api: s(attr::PAY_API),
        transaction_id: s(attr::TRANSACTION_ID),
    })
}
