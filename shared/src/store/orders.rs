//! Orders in DynamoDB. The merchant's back office creates each order (the `merchant` function's
//! `create_order`: `out_trade_no`, `openid`, `description`, `amount_total` in fen); the amount
//! never comes from the mini-program. Every change of state is a conditional write, so duplicates
//! and races change an order once: UNPAID → (prepay_id attached) → PAID or CLOSED; refunds reserve
//! part of a paid order's amount (`refunded_total`, see `store::refunds`); shipping is recorded on
//! a paid order. An unpaid order placed with WeChat Pay (first attempt recorded before the call,
//! `placed_at`, or a prepay_id stored) is *pending*: it carries `pending` and
//! `pending_since`, the keys of the sparse index the reconciler reads instead of scanning.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use super::{StoreError, Table, applied, is_condition_failure, send, store_error};

pub mod attr {
    pub const OUT_TRADE_NO: &str = "out_trade_no";
    pub const OPENID: &str = "openid";
    pub const DESCRIPTION: &str = "description";
    pub const AMOUNT_TOTAL: &str = "amount_total";
    pub const STATUS: &str = "status";
    pub const PREPAY_ID: &str = "prepay_id";
    pub const PREPAY_CREATED_AT: &str = "prepay_created_at";
    /// When an APIv3 placement (`jsapi`) was first attempted: from then on WeChat Pay may know
    /// the order even if no prepay_id came back, so it is pending.
    pub const PLACED_AT: &str = "placed_at";
    pub const PAY_API: &str = "pay_api";
    pub const TRANSACTION_ID: &str = "transaction_id";
    pub const PAID_AT: &str = "paid_at";
    pub const SUCCESS_TIME: &str = "success_time";
    pub const PAYER_OPENID: &str = "payer_openid";
    /// Set when a payment arrived that the order could not take (closed, paid twice, another
    /// amount or payer): the merchant must look, and likely refund.
    pub const NEEDS_ATTENTION: &str = "needs_attention";
    pub const ATTENTION_REASON: &str = "attention_reason";
    /// The transaction ids of those payments (a string set: a repeated notification adds nothing).
    pub const ATTENTION_TRANSACTIONS: &str = "attention_transaction_ids";
    pub const ATTACH: &str = "attach";
    pub const TIME_EXPIRE: &str = "time_expire";
    pub const CREATED_AT: &str = "created_at";
    pub const CLOSED_AT: &str = "closed_at";
    /// Fen reserved by refunds applied for (and not closed or refused).
    pub const REFUNDED_TOTAL: &str = "refunded_total";
    /// Shipping as uploaded to WeChat: `SHIPPED`, then `CONFIRMED` when the user received it.
    pub const SHIPPING_STATE: &str = "shipping_state";
    pub const SHIPPED_AT: &str = "shipped_at";
    /// When WeChat settled the payment to the merchant (`trade_manage_order_settlement`).
    pub const SETTLED_AT: &str = "settled_at";
    /// When WeChat last reminded the merchant to ship (`trade_manage_remind_shipping`).
    pub const SHIPPING_REMINDED_AT: &str = "shipping_reminded_at";
    /// The sparse index of what the reconciler must look at: set only while pending.
    pub const PENDING: &str = "pending";
    pub const PENDING_SINCE: &str = "pending_since";
    /// Set by the reconciler on an item it failed on: how often in a row, and when it looks
    /// again (see `store::defer`).
    pub const ATTEMPTS: &str = "attempts";
    pub const NEXT_ATTEMPT_AT: &str = "next_attempt_at";
    /// When a caller last had WeChat Pay asked about the order (`claim_query`).
    pub const QUERIED_AT: &str = "queried_at";
}

pub const UNPAID: &str = "UNPAID";
pub const PAID: &str = "PAID";
pub const CLOSED: &str = "CLOSED";
/// An APIv2 order past its time: this server cannot close it at WeChat Pay, so it ends here
/// (a late payment still settles it).
pub const EXPIRED: &str = "EXPIRED";
/// Shipping states (`shipping_state`).
pub const SHIPPED: &str = "SHIPPED";
pub const CONFIRMED: &str = "CONFIRMED";

/// What WeChat's order management (发货信息管理) pushes about a paid order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TradeEvent {
    /// `trade_manage_order_settlement`: the payment was settled to the merchant at `at`.
    Settled { at: u64 },
    /// `trade_manage_remind_shipping`: the order was paid long ago and is not shipped.
    ShippingReminder { at: u64 },
}

/// The sparse index of pending orders and refunds (`template.yaml`'s `PendingIndex`).
pub const PENDING_INDEX: &str = "PendingIndex";
/// The `pending` value of an order waiting for its payment.
pub const PENDING_ORDER: &str = "order";

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Order {
    pub out_trade_no: String,
    pub openid: String,
    pub description: String,
    pub amount_total: u64,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attach: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_expire: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prepay_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prepay_created_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placed_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pay_api: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paid_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payer_openid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<u64>,
    pub refunded_total: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shipping_state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shipped_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settled_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shipping_reminded_at: Option<u64>,
    pub needs_attention: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attention_reason: Option<String>,
    /// How many reconciler runs in a row failed on it (backed off: `next_attempt_at`).
    #[serde(skip)]
    pub reconcile_attempts: u64,
}

impl Order {
    /// A new, unpaid order.
    fn new(new: &NewOrder, now: u64) -> Self {
        Self {
            out_trade_no: new.out_trade_no.clone(),
            openid: new.openid.clone(),
            description: new.description.clone(),
            amount_total: new.amount_total,
            status: UNPAID.to_owned(),
            attach: new.attach.clone(),
            time_expire: new.time_expire.clone(),
            created_at: Some(now),
            prepay_id: None,
            prepay_created_at: None,
            placed_at: None,
            pay_api: None,
            transaction_id: None,
            paid_at: None,
            success_time: None,
            payer_openid: None,
            closed_at: None,
            refunded_total: 0,
            shipping_state: None,
            shipped_at: None,
            settled_at: None,
            shipping_reminded_at: None,
            needs_attention: false,
            attention_reason: None,
            reconcile_attempts: 0,
        }
    }
}

/// An order as the back office creates it.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewOrder {
    pub out_trade_no: String,
    pub openid: String,
    pub description: String,
    pub amount_total: u64,
    #[serde(default)]
    pub attach: Option<String>,
    /// RFC 3339, as WeChat Pay takes it.
    #[serde(default)]
    pub time_expire: Option<String>,
}

/// What creating an order did.
#[derive(Debug, PartialEq)]
pub enum Created {
    /// A new order.
    New(Order),
    /// The same order was created before (a retry): nothing changed.
    Existing(Order),
    /// Another order has this out_trade_no.
    Conflict,
}

/// A payment WeChat Pay reported (after its signature was checked).
#[derive(Debug, Clone, Copy)]
pub struct Payment<'a> {
    pub transaction_id: &'a str,
    pub amount_total: u64,
    /// The payer's openid, when the notification names one.
    pub payer_openid: Option<&'a str>,
    /// WeChat Pay's own time of payment (`success_time`, or v2 `time_end`).
    pub success_time: Option<&'a str>,
    pub paid_at: u64,
}

/// What recording a payment did.
#[derive(Debug, PartialEq)]
pub enum Settled {
    /// This call changed the order from UNPAID to PAID.
    Changed,
    /// The order was already paid by this transaction (a repeated notification): nothing changed.
    AlreadyPaid,
    /// No order has this out_trade_no.
    UnknownOrder,
    /// The order could not take this payment; it is kept on the order for the merchant.
    /// `first`: this report is the first of this transaction (repeats keep nothing new).
    NeedsAttention { reason: String, first: bool },
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

    fn failed<E: ProvideErrorMetadata + std::fmt::Debug, R>(&self, e: SdkError<E, R>) -> StoreError {
        store_error(Table::Orders, &self.table, e)
    }

    /// The table's name (a refund transaction writes to it too).
    pub fn table(&self) -> &str {
        &self.table
    }

    /// One consistent `GetItem`.
    pub async fn get(&self, out_trade_no: &str) -> Result<Option<Order>, StoreError> {
        let request = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::OUT_TRADE_NO, AttributeValue::S(out_trade_no.to_owned()))
            .consistent_read(true);
        let output = send(&self.client, Table::Orders, &self.table, request.send())
            .await?
            .map_err(|e| self.failed(e))?;
        output.item.as_ref().map(order_from_item).transpose()
    }

    /// Creates `new` (UNPAID) unless an order has its out_trade_no: the same content again is the
    /// same order (a retry), other content a conflict. One conditional `PutItem`.
    pub async fn create(&self, new: &NewOrder, now: u64) -> Result<Created, StoreError> {
        let mut item = HashMap::from([
            (
                attr::OUT_TRADE_NO.to_owned(),
                AttributeValue::S(new.out_trade_no.clone()),
            ),
            (attr::OPENID.to_owned(), AttributeValue::S(new.openid.clone())),
            (attr::DESCRIPTION.to_owned(), AttributeValue::S(new.description.clone())),
            (
                attr::AMOUNT_TOTAL.to_owned(),
                AttributeValue::N(new.amount_total.to_string()),
            ),
            (attr::STATUS.to_owned(), AttributeValue::S(UNPAID.to_owned())),
            (attr::CREATED_AT.to_owned(), AttributeValue::N(now.to_string())),
        ]);
        if let Some(attach) = &new.attach {
            item.insert(attr::ATTACH.to_owned(), AttributeValue::S(attach.clone()));
        }
        if let Some(expire) = &new.time_expire {
            item.insert(attr::TIME_EXPIRE.to_owned(), AttributeValue::S(expire.clone()));
        }
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#k)")
            .expression_attribute_names("#k", attr::OUT_TRADE_NO);
        match send(&self.client, Table::Orders, &self.table, request.send()).await? {
            Ok(_) => return Ok(Created::New(Order::new(new, now))),
            Err(e) if is_condition_failure(&e) => {}
            Err(e) => return Err(self.failed(e)),
        }
        // An order has this number: the same content is a retry (or a write whose answer was
        // lost); anything else is another order.
        let Some(order) = self.get(&new.out_trade_no).await? else {
            return Err(StoreError::Unavailable {
                table: Table::Orders,
                detail: format!("{}: an order refused as existing is not there", self.table),
            });
        };
        let same = order.openid == new.openid
            && order.description == new.description
            && order.amount_total == new.amount_total
            && order.attach == new.attach
            && order.time_expire == new.time_expire;
        Ok(if same {
            Created::Existing(order)
        } else {
            Created::Conflict
        })
    }

    /// UNPAID → CLOSED (no longer payable), once. `false`: the order is not unpaid (paid
    /// meanwhile, or closed already).
    pub async fn close(&self, out_trade_no: &str, now: u64) -> Result<bool, StoreError> {
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::OUT_TRADE_NO, AttributeValue::S(out_trade_no.to_owned()))
            .update_expression("SET #s = :closed, #at = :now REMOVE #pending, #since")
            .condition_expression("#s = :unpaid")
            .expression_attribute_names("#s", attr::STATUS)
            .expression_attribute_names("#at", attr::CLOSED_AT)
            .expression_attribute_names("#pending", attr::PENDING)
            .expression_attribute_names("#since", attr::PENDING_SINCE)
            .expression_attribute_values(":closed", AttributeValue::S(CLOSED.to_owned()))
            .expression_attribute_values(":unpaid", AttributeValue::S(UNPAID.to_owned()))
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()));
        applied(
            Table::Orders,
            &self.table,
            send(&self.client, Table::Orders, &self.table, request.send()).await?,
        )
    }

    /// Records that shipping info was uploaded (or the user confirmed receipt) for a paid order.
    /// `false`: the order is not paid.
    pub async fn record_shipping(&self, out_trade_no: &str, state: &str, now: u64) -> Result<bool, StoreError> {
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::OUT_TRADE_NO, AttributeValue::S(out_trade_no.to_owned()))
            .update_expression("SET #ship = :state, #at = if_not_exists(#at, :now)")
            .condition_expression("#s = :paid")
            .expression_attribute_names("#s", attr::STATUS)
            .expression_attribute_names("#ship", attr::SHIPPING_STATE)
            .expression_attribute_names("#at", attr::SHIPPED_AT)
            .expression_attribute_values(":paid", AttributeValue::S(PAID.to_owned()))
            .expression_attribute_values(":state", AttributeValue::S(state.to_owned()))
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()));
        applied(
            Table::Orders,
            &self.table,
            send(&self.client, Table::Orders, &self.table, request.send()).await?,
        )
    }

    /// What WeChat's order management pushed about a paid order, recorded only on the order paid
    /// by `transaction_id`. `false`: no such paid order (another merchant's, or not ours).
    pub async fn record_trade_event(
        &self,
        out_trade_no: &str,
        transaction_id: &str,
        event: TradeEvent,
    ) -> Result<bool, StoreError> {
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::OUT_TRADE_NO, AttributeValue::S(out_trade_no.to_owned()))
            .condition_expression("#s = :paid AND #tx = :tx")
            .expression_attribute_names("#s", attr::STATUS)
            .expression_attribute_names("#tx", attr::TRANSACTION_ID)
            .expression_attribute_values(":paid", AttributeValue::S(PAID.to_owned()))
            .expression_attribute_values(":tx", AttributeValue::S(transaction_id.to_owned()));
        let request = match event {
            // Settlement follows the user's confirmation of receipt (or its automatic one).
            TradeEvent::Settled { at } => request
                .update_expression("SET #at = :at, #ship = :confirmed")
                .expression_attribute_names("#at", attr::SETTLED_AT)
                .expression_attribute_names("#ship", attr::SHIPPING_STATE)
                .expression_attribute_values(":at", AttributeValue::N(at.to_string()))
                .expression_attribute_values(":confirmed", AttributeValue::S(CONFIRMED.to_owned())),
            TradeEvent::ShippingReminder { at } => request
                .update_expression("SET #at = :at")
                .expression_attribute_names("#at", attr::SHIPPING_REMINDED_AT)
                .expression_attribute_values(":at", AttributeValue::N(at.to_string())),
        };
        applied(
            Table::Orders,
            &self.table,
            send(&self.client, Table::Orders, &self.table, request.send()).await?,
        )
    }

    /// A page of the out_trade_no of orders pending since before `cutoff` (from the sparse
    /// index: no scan), at most `limit`, from `start` on.
    pub async fn pending(
        &self,
        cutoff: u64,
        limit: i32,
        start: Option<super::PageStart>,
    ) -> Result<super::PendingPage, StoreError> {
        let kind = (PENDING_ORDER, attr::OUT_TRADE_NO);
        super::pending_page(&self.client, Table::Orders, &self.table, kind, cutoff, limit, start).await
    }

    /// Backs a pending order off (see `store::defer`).
    pub async fn defer(&self, order: &Order, next_attempt_at: u64, grace: u64) -> Result<bool, StoreError> {
        let key = (PENDING_ORDER, attr::OUT_TRADE_NO, order.out_trade_no.as_str());
        let attempts = order.reconcile_attempts + 1;
        super::defer(
            &self.client,
            Table::Orders,
            &self.table,
            key,
            attempts,
            next_attempt_at,
            grace,
        )
        .await
    }

    /// Claims the right to ask WeChat Pay about an order on a caller's behalf: at most once per
    /// `interval` seconds per order across every container (one conditional write), so that a
    /// user polling an order cannot spend the merchant's query quota. `false`: asked recently.
    pub async fn claim_query(&self, out_trade_no: &str, now: u64, interval: u64) -> Result<bool, StoreError> {
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::OUT_TRADE_NO, AttributeValue::S(out_trade_no.to_owned()))
            .update_expression("SET #q = :now")
            .condition_expression("attribute_exists(#k) AND (attribute_not_exists(#q) OR #q <= :before)")
            .expression_attribute_names("#k", attr::OUT_TRADE_NO)
            .expression_attribute_names("#q", attr::QUERIED_AT)
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
            .expression_attribute_values(":before", AttributeValue::N(now.saturating_sub(interval).to_string()));
        applied(
            Table::Orders,
            &self.table,
            send(&self.client, Table::Orders, &self.table, request.send()).await?,
        )
    }

    /// UNPAID → EXPIRED: an APIv2 order past its time that this server cannot close at WeChat
    /// Pay (APIv2's closeorder is not implemented) ends here, and leaves the reconciler's index.
    /// A payment reported later still settles it (see [`OrderStore::settle`]).
    pub async fn expire(&self, out_trade_no: &str, now: u64) -> Result<bool, StoreError> {
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::OUT_TRADE_NO, AttributeValue::S(out_trade_no.to_owned()))
            .update_expression("SET #s = :expired, #at = :now REMOVE #pending, #since")
            .condition_expression("#s = :unpaid")
            .expression_attribute_names("#s", attr::STATUS)
            .expression_attribute_names("#at", attr::CLOSED_AT)
            .expression_attribute_names("#pending", attr::PENDING)
            .expression_attribute_names("#since", attr::PENDING_SINCE)
            .expression_attribute_values(":expired", AttributeValue::S(EXPIRED.to_owned()))
            .expression_attribute_values(":unpaid", AttributeValue::S(UNPAID.to_owned()))
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()));
        applied(
            Table::Orders,
            &self.table,
            send(&self.client, Table::Orders, &self.table, request.send()).await?,
        )
    }

    /// Records, before an APIv3 order is first placed with WeChat Pay, that it may be known there:
    /// it becomes pending, so that if the answer is lost the reconciler asks WeChat Pay about it
    /// (and closes it there when it is abandoned). `false`: the order is no longer unpaid.
    pub async fn mark_placed(&self, out_trade_no: &str, now: u64) -> Result<bool, StoreError> {
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::OUT_TRADE_NO, AttributeValue::S(out_trade_no.to_owned()))
            .update_expression(
                "SET #placed = if_not_exists(#placed, :now), #pending = :order, #since = if_not_exists(#since, :now)",
            )
            .condition_expression("#s = :unpaid")
            .expression_attribute_names("#placed", attr::PLACED_AT)
            .expression_attribute_names("#pending", attr::PENDING)
            .expression_attribute_names("#since", attr::PENDING_SINCE)
            .expression_attribute_names("#s", attr::STATUS)
            .expression_attribute_values(":order", AttributeValue::S(PENDING_ORDER.to_owned()))
            .expression_attribute_values(":unpaid", AttributeValue::S(UNPAID.to_owned()))
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()));
        applied(
            Table::Orders,
            &self.table,
            send(&self.client, Table::Orders, &self.table, request.send()).await?,
        )
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
            // From now on the order is pending: the reconciler asks WeChat Pay about it if no
            // notification settles it.
            .update_expression(
                "SET #p = :p, #pc = :pc, #api = :api, #pending = :order, #since = if_not_exists(#since, :pc)",
            )
            .expression_attribute_names("#pending", attr::PENDING)
            .expression_attribute_names("#since", attr::PENDING_SINCE)
            .expression_attribute_values(":order", AttributeValue::S(PENDING_ORDER.to_owned()))
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
        applied(
            Table::Orders,
            &self.table,
            send(&self.client, Table::Orders, &self.table, request.send()).await?,
        )
    }

    /// UNPAID → PAID with the payment's details, at most once however many notifications arrive.
    /// The write is conditional on the status still being UNPAID **and** on the order's amount
    /// and buyer being the payment's, so an order changed between a read and this write cannot
    /// be marked paid by a payment that does not match it. A payment the order cannot take is
    /// kept on the order ([`Settled::NeedsAttention`]).
    pub async fn settle(&self, out_trade_no: &str, payment: &Payment<'_>) -> Result<Settled, StoreError> {
        let mut set = vec!["#s = :paid", "#tx = :tx", "#at = :at"];
        let mut condition = vec!["(#s = :unpaid OR #s = :expired)", "#amt = :amt"];
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::OUT_TRADE_NO, AttributeValue::S(out_trade_no.to_owned()))
            .expression_attribute_names("#s", attr::STATUS)
            .expression_attribute_names("#tx", attr::TRANSACTION_ID)
            .expression_attribute_names("#at", attr::PAID_AT)
            .expression_attribute_names("#amt", attr::AMOUNT_TOTAL)
            .expression_attribute_values(":paid", AttributeValue::S(PAID.to_owned()))
            .expression_attribute_values(":unpaid", AttributeValue::S(UNPAID.to_owned()))
            .expression_attribute_values(":expired", AttributeValue::S(EXPIRED.to_owned()))
            .expression_attribute_values(":tx", AttributeValue::S(payment.transaction_id.to_owned()))
            .expression_attribute_values(":at", AttributeValue::N(payment.paid_at.to_string()))
            .expression_attribute_values(":amt", AttributeValue::N(payment.amount_total.to_string()));
        if let Some(payer) = payment.payer_openid {
            set.push("#payer = :payer");
            condition.push("#openid = :payer");
            request = request
                .expression_attribute_names("#payer", attr::PAYER_OPENID)
                .expression_attribute_names("#openid", attr::OPENID)
                .expression_attribute_values(":payer", AttributeValue::S(payer.to_owned()));
        }
        if let Some(time) = payment.success_time {
            set.push("#st = :st");
            request = request
                .expression_attribute_names("#st", attr::SUCCESS_TIME)
                .expression_attribute_values(":st", AttributeValue::S(time.to_owned()));
        }
        let request = request
            .update_expression(format!("SET {} REMOVE #pending, #since", set.join(", ")))
            .expression_attribute_names("#pending", attr::PENDING)
            .expression_attribute_names("#since", attr::PENDING_SINCE)
            .condition_expression(condition.join(" AND "));
        match send(&self.client, Table::Orders, &self.table, request.send()).await? {
            Ok(_) => return Ok(Settled::Changed),
            Err(e) if is_condition_failure(&e) => {}
            Err(e) => return Err(self.failed(e)),
        }
        // The condition failed: find out why, from the order as it is now.
        let Some(order) = self.get(out_trade_no).await? else {
            return Ok(Settled::UnknownOrder);
        };
        let reason = if order.status == PAID {
            if order.transaction_id.as_deref() == Some(payment.transaction_id) {
                return Ok(Settled::AlreadyPaid);
            }
            "paid again by another transaction".to_owned()
        } else if order.status != UNPAID && order.status != EXPIRED {
            format!("paid while {}", order.status)
        } else if order.amount_total != payment.amount_total {
            format!(
                "paid {} fen for an order of {} fen",
                payment.amount_total, order.amount_total
            )
        } else {
            "paid by another user".to_owned()
        };
        let first = self.flag(out_trade_no, payment.transaction_id, &reason).await?;
        Ok(Settled::NeedsAttention { reason, first })
    }

    /// Marks the order for the merchant's attention and keeps the transaction id (a string set,
    /// so a repeated notification changes nothing). Whether the transaction was not kept before.
    async fn flag(&self, out_trade_no: &str, transaction_id: &str, reason: &str) -> Result<bool, StoreError> {
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::OUT_TRADE_NO, AttributeValue::S(out_trade_no.to_owned()))
            .update_expression("SET #na = :yes, #why = :why ADD #txs :tx")
            .condition_expression("attribute_exists(#k)")
            .expression_attribute_names("#k", attr::OUT_TRADE_NO)
            .expression_attribute_names("#na", attr::NEEDS_ATTENTION)
            .expression_attribute_names("#why", attr::ATTENTION_REASON)
            .expression_attribute_names("#txs", attr::ATTENTION_TRANSACTIONS)
            .expression_attribute_values(":yes", AttributeValue::Bool(true))
            .expression_attribute_values(":why", AttributeValue::S(reason.to_owned()))
            .expression_attribute_values(":tx", AttributeValue::Ss(vec![transaction_id.to_owned()]))
            // The item as it was (moto answers UPDATED_OLD only for values that changed).
            .return_values(ReturnValue::AllOld);
        let output = send(&self.client, Table::Orders, &self.table, request.send())
            .await?
            .map_err(|e| self.failed(e))?;
        let kept_before = output
            .attributes()
            .and_then(|old| old.get(attr::ATTENTION_TRANSACTIONS))
            .and_then(|txs| txs.as_ss().ok())
            .is_some_and(|txs| txs.iter().any(|tx| tx == transaction_id));
        Ok(!kept_before)
    }
}

fn order_from_item(item: &HashMap<String, AttributeValue>) -> Result<Order, StoreError> {
    let s = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
    let n = |name: &str| {
        item.get(name)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let malformed = |attribute| StoreError::Malformed {
        table: Table::Orders,
        attribute,
    };
    Ok(Order {
        out_trade_no: s(attr::OUT_TRADE_NO).ok_or(malformed(attr::OUT_TRADE_NO))?,
        openid: s(attr::OPENID).ok_or(malformed(attr::OPENID))?,
        description: s(attr::DESCRIPTION).ok_or(malformed(attr::DESCRIPTION))?,
        amount_total: n(attr::AMOUNT_TOTAL)
            .filter(|&a| a > 0)
            .ok_or(malformed(attr::AMOUNT_TOTAL))?,
        status: s(attr::STATUS).ok_or(malformed(attr::STATUS))?,
        attach: s(attr::ATTACH),
        time_expire: s(attr::TIME_EXPIRE),
        created_at: n(attr::CREATED_AT),
        prepay_id: s(attr::PREPAY_ID),
        prepay_created_at: n(attr::PREPAY_CREATED_AT),
        placed_at: n(attr::PLACED_AT),
        pay_api: s(attr::PAY_API),
        transaction_id: s(attr::TRANSACTION_ID),
        paid_at: n(attr::PAID_AT),
        success_time: s(attr::SUCCESS_TIME),
        payer_openid: s(attr::PAYER_OPENID),
        closed_at: n(attr::CLOSED_AT),
        refunded_total: n(attr::REFUNDED_TOTAL).unwrap_or(0),
        shipping_state: s(attr::SHIPPING_STATE),
        shipped_at: n(attr::SHIPPED_AT),
        settled_at: n(attr::SETTLED_AT),
        shipping_reminded_at: n(attr::SHIPPING_REMINDED_AT),
        needs_attention: item
            .get(attr::NEEDS_ATTENTION)
            .and_then(|v| v.as_bool().ok())
            .copied()
            .unwrap_or(false),
        attention_reason: s(attr::ATTENTION_REASON),
        reconcile_attempts: super::attempts_of(item),
    })
}
