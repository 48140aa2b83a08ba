//! Refunds in DynamoDB, one item per `out_refund_no` (the merchant's id of a refund, which
//! WeChat Pay also keys on: a retry with the same one never refunds twice).
//!
//! Applying for a refund is one transaction: the refund item is created (unless it exists) **and**
//! its amount reserved on the order (`refunded_total`), on the condition that the order is paid
//! and the reservation keeps the sum of its refunds within what was paid — so concurrent partial
//! refunds can never exceed the total, and concurrent retries of one refund create it once. The
//! refund then goes REQUESTED → PROCESSING → SUCCESS (or ABNORMAL: money stuck, manual handling)
//! with conditional writes; CLOSED or a refusal by WeChat Pay (FAILED) gives the reservation back,
//! in the same transaction as the change of state. A refund not yet final is *pending* (the
//! sparse index the reconciler reads).

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};

use super::orders::{self, Order, PAID};
use super::{StoreError, Table, is_condition_failure, n, s, send, store_error};

pub mod attr {
    pub const OUT_REFUND_NO: &str = "out_refund_no";
    pub const OUT_TRADE_NO: &str = "out_trade_no";
    pub const AMOUNT: &str = "amount";
    pub const REASON: &str = "reason";
    pub const STATUS: &str = "status";
    pub const REFUND_ID: &str = "refund_id";
    pub const CREATED_AT: &str = "created_at";
    pub const UPDATED_AT: &str = "updated_at";
    pub const SUCCESS_TIME: &str = "success_time";
    /// Set when WeChat Pay reports a state this ledger cannot take (see [`Change::NeedsAttention`]).
    pub const NEEDS_ATTENTION: &str = "needs_attention";
    pub const ATTENTION_REASON: &str = "attention_reason";
    /// The state WeChat Pay reported for a refund flagged for attention.
    pub const REPORTED_STATUS: &str = "reported_status";
}

/// Reserved on the order, not yet accepted by WeChat Pay (or its answer was lost).
pub const REQUESTED: &str = "REQUESTED";
pub const PROCESSING: &str = "PROCESSING";
pub const SUCCESS: &str = "SUCCESS";
pub const CLOSED: &str = "CLOSED";
pub const ABNORMAL: &str = "ABNORMAL";
/// WeChat Pay refused the application and says it has no such refund: nothing was refunded,
/// the reservation is given back. Only ever from REQUESTED.
pub const FAILED: &str = "FAILED";

/// The `pending` value of a refund not yet final.
pub const PENDING_REFUND: &str = "refund";

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Refund {
    pub out_refund_no: String,
    pub out_trade_no: String,
    pub amount: u64,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refund_id: Option<String>,
    pub created_at: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    /// WeChat Pay reported a state this ledger could not take: the merchant must look.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub needs_attention: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attention_reason: Option<String>,
    /// How many reconciler runs in a row failed on it (backed off: `next_attempt_at`).
    #[serde(skip)]
    pub reconcile_attempts: u64,
}

impl Refund {
    /// Not yet final: WeChat Pay may still change it.
    pub fn is_pending(&self) -> bool {
        self.status == REQUESTED || self.status == PROCESSING
    }
}

/// What applying for a refund did.
#[derive(Debug, PartialEq)]
pub enum Requested {
    /// Created and reserved now.
    New(Refund),
    /// This out_refund_no exists for the same order and amount (a retry).
    Existing(Refund),
    /// This out_refund_no exists for another order or amount.
    Conflict(Refund),
    /// The order's refunds would exceed what was paid.
    ExceedsPaid { refunded_total: u64 },
    /// The order is not paid (its status).
    NotRefundable(String),
}

/// What a change of state did: refund notifications arrive many times, and only one changes it.
#[derive(Debug, PartialEq)]
pub enum Change {
    Changed,
    Unchanged,
    /// WeChat Pay reports money moving for a refund held here as FAILED or CLOSED, and taking it
    /// back onto the order would refund more than was paid: flagged, counted
    /// (`PaymentAnomalies`) and logged as `PAYMENT NEEDS ATTENTION`. `first`: flagged now.
    NeedsAttention {
        reason: String,
        first: bool,
    },
}

#[derive(Clone)]
pub struct RefundStore {
    client: Client,
    table: String,
    orders_table: String,
}

impl RefundStore {
    pub fn new(client: Client, table: &str, orders_table: &str) -> Self {
        Self {
            client,
            table: table.to_owned(),
            orders_table: orders_table.to_owned(),
        }
    }

    fn failed<E: ProvideErrorMetadata + std::fmt::Debug, R>(&self, e: SdkError<E, R>) -> StoreError {
        store_error(Table::Refunds, &self.table, e)
    }

    /// One consistent `GetItem`.
    pub async fn get(&self, out_refund_no: &str) -> Result<Option<Refund>, StoreError> {
        let request = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::OUT_REFUND_NO, AttributeValue::S(out_refund_no.to_owned()))
            .consistent_read(true);
        let output = send(&self.client, Table::Refunds, &self.table, request.send())
            .await?
            .map_err(|e| self.failed(e))?;
        output.item.as_ref().map(refund_from_item).transpose()
    }

    /// Applies for a refund of `amount` on the paid `order`: creates the refund and reserves its
    /// amount on the order in one transaction (see the module's documentation).
    pub async fn request(
        &self,
        order: &Order,
        out_refund_no: &str,
        amount: u64,
        reason: Option<&str>,
        now: u64,
    ) -> Result<Requested, StoreError> {
        let Some(limit) = order.amount_total.checked_sub(amount) else {
            return Ok(Requested::ExceedsPaid {
                refunded_total: order.refunded_total,
            });
        };
        let mut item = HashMap::from([
            (attr::OUT_REFUND_NO.to_owned(), s(out_refund_no)),
            (attr::OUT_TRADE_NO.to_owned(), s(&order.out_trade_no)),
            (attr::AMOUNT.to_owned(), n(amount)),
            (attr::STATUS.to_owned(), s(REQUESTED)),
            (attr::CREATED_AT.to_owned(), n(now)),
            (orders::attr::PENDING.to_owned(), s(PENDING_REFUND)),
            (orders::attr::PENDING_SINCE.to_owned(), n(now)),
        ]);
        if let Some(reason) = reason {
            item.insert(attr::REASON.to_owned(), s(reason));
        }
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#k)")
            .expression_attribute_names("#k", attr::OUT_REFUND_NO)
            .build()
            .expect("table, item and condition are set");
        let reserve = Update::builder()
            .table_name(&self.orders_table)
            .key(orders::attr::OUT_TRADE_NO, s(&order.out_trade_no))
            .update_expression("SET #rt = if_not_exists(#rt, :zero) + :amount")
            .condition_expression("#s = :paid AND #total = :total AND (attribute_not_exists(#rt) OR #rt <= :limit)")
            .expression_attribute_names("#rt", orders::attr::REFUNDED_TOTAL)
            .expression_attribute_names("#s", orders::attr::STATUS)
            .expression_attribute_names("#total", orders::attr::AMOUNT_TOTAL)
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":amount", n(amount))
            .expression_attribute_values(":paid", s(PAID))
            .expression_attribute_values(":total", n(order.amount_total))
            .expression_attribute_values(":limit", n(limit))
            .build()
            .expect("table, key and expressions are set");
        let request = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put).build())
            .transact_items(TransactWriteItem::builder().update(reserve).build());
        let refund = Refund {
            out_refund_no: out_refund_no.to_owned(),
            out_trade_no: order.out_trade_no.clone(),
            amount,
            status: REQUESTED.to_owned(),
            reason: reason.map(str::to_owned),
            refund_id: None,
            created_at: now,
            success_time: None,
            needs_attention: false,
            attention_reason: None,
            reconcile_attempts: 0,
        };
        let failed = match send(&self.client, Table::Refunds, &self.table, request.send()).await? {
            Ok(_) => return Ok(Requested::New(refund)),
            Err(e) => e,
        };
        let [refund_exists, order_refused] = cancelled_conditions(&failed).ok_or_else(|| self.failed(failed))?;
        if refund_exists {
            let existing = self.get(out_refund_no).await?.ok_or_else(|| StoreError::Unavailable {
                table: Table::Refunds,
                detail: format!(
                    "{}: refund {out_refund_no} refused as existing is not there",
                    self.table
                ),
            })?;
            let same = existing.out_trade_no == order.out_trade_no && existing.amount == amount;
            return Ok(if same {
                Requested::Existing(existing)
            } else {
                Requested::Conflict(existing)
            });
        }
        debug_assert!(order_refused);
        Ok(if order.status != PAID {
            Requested::NotRefundable(order.status.clone())
        } else {
            Requested::ExceedsPaid {
                refunded_total: order.refunded_total,
            }
        })
    }

    /// Records the state WeChat Pay gives a refund (PROCESSING, SUCCESS, ABNORMAL; CLOSED gives
    /// the reservation back). Changes a refund at most once per state, and never out of a final
    /// one. A refund that leaves REQUESTED here is one WeChat Pay has accepted: counted
    /// (`Refunds`) by whichever tells first, the answer to applying, a query or a notification.
    pub async fn record(
        &self,
        refund: &Refund,
        status: &str,
        refund_id: Option<&str>,
        success_time: Option<&str>,
        now: u64,
    ) -> Result<Change, StoreError> {
        let change = self.record_state(refund, status, refund_id, success_time, now).await?;
        match &change {
            Change::Changed if refund.status == REQUESTED => crate::metrics::count(crate::metrics::Metric::Refunds),
            Change::NeedsAttention { reason, first } => {
                if *first {
                    crate::metrics::count(crate::metrics::Metric::PaymentAnomalies);
                }
                // The money moved at WeChat Pay; the merchant must reconcile this refund.
                tracing::error!(
                    out_refund_no = %refund.out_refund_no,
                    out_trade_no = %refund.out_trade_no,
                    reported = status,
                    reason = %reason,
                    "PAYMENT NEEDS ATTENTION"
                );
            }
            _ => {}
        }
        Ok(change)
    }

    async fn record_state(
        &self,
        refund: &Refund,
        status: &str,
        refund_id: Option<&str>,
        success_time: Option<&str>,
        now: u64,
    ) -> Result<Change, StoreError> {
        if status == CLOSED {
            return self.release(refund, CLOSED, now).await;
        }
        let mut set = vec!["#s = :new", "#up = :now"];
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::OUT_REFUND_NO, s(&refund.out_refund_no))
            .expression_attribute_names("#s", attr::STATUS)
            .expression_attribute_names("#up", attr::UPDATED_AT)
            .expression_attribute_values(":new", s(status))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":requested", s(REQUESTED))
            .expression_attribute_values(":processing", s(PROCESSING));
        if let Some(id) = refund_id {
            set.push("#rid = :rid");
            request = request
                .expression_attribute_names("#rid", attr::REFUND_ID)
                .expression_attribute_values(":rid", s(id));
        }
        if let Some(time) = success_time {
            set.push("#st = :st");
            request = request
                .expression_attribute_names("#st", attr::SUCCESS_TIME)
                .expression_attribute_values(":st", s(time));
        }
        let mut update = format!("SET {}", set.join(", "));
        if status != PROCESSING {
            // Final: no longer the reconciler's business.
            update.push_str(" REMOVE #pending, #since");
            request = request
                .expression_attribute_names("#pending", orders::attr::PENDING)
                .expression_attribute_names("#since", orders::attr::PENDING_SINCE);
        }
        let request = request
            .update_expression(update)
            .expression_attribute_values(":abnormal", s(ABNORMAL))
            .condition_expression("(#s = :requested OR #s = :processing OR #s = :abnormal) AND #s <> :new");
        match send(&self.client, Table::Refunds, &self.table, request.send()).await? {
            Ok(_) => return Ok(Change::Changed),
            Err(e) if is_condition_failure(&e) => {}
            Err(e) => return Err(self.failed(e)),
        }
        // Held as ended without money moving while WeChat Pay reports it alive or paid: WeChat
        // Pay's word wins, and the amount is reserved on the order again.
        match self.get(&refund.out_refund_no).await? {
            Some(current) if current.status == FAILED || current.status == CLOSED => {
                self.retake(&current, status, refund_id, success_time, now).await
            }
            _ => Ok(Change::Unchanged),
        }
    }

    /// A refund held as FAILED or CLOSED that WeChat Pay reports as `status` (PROCESSING,
    /// SUCCESS, ABNORMAL): the refund takes that state and its amount is reserved on the order
    /// again, in one transaction conditional on the refund's state and on the order's refunds
    /// staying within what was paid. Where they would not, the refund is flagged instead.
    async fn retake(
        &self,
        current: &Refund,
        status: &str,
        refund_id: Option<&str>,
        success_time: Option<&str>,
        now: u64,
    ) -> Result<Change, StoreError> {
        let order = self.order(&current.out_trade_no).await?;
        let limit = order.as_ref().and_then(|o| o.amount_total.checked_sub(current.amount));
        if let (Some(order), Some(limit)) = (&order, limit) {
            let mut set = vec!["#s = :new", "#up = :now"];
            let mut take = Update::builder()
                .table_name(&self.table)
                .key(attr::OUT_REFUND_NO, s(&current.out_refund_no))
                .condition_expression("#s = :old")
                .expression_attribute_names("#s", attr::STATUS)
                .expression_attribute_names("#up", attr::UPDATED_AT)
                .expression_attribute_values(":new", s(status))
                .expression_attribute_values(":old", s(&current.status))
                .expression_attribute_values(":now", n(now));
            if let Some(id) = refund_id {
                set.push("#rid = :rid");
                take = take
                    .expression_attribute_names("#rid", attr::REFUND_ID)
                    .expression_attribute_values(":rid", s(id));
            }
            if let Some(time) = success_time {
                set.push("#st = :st");
                take = take
                    .expression_attribute_names("#st", attr::SUCCESS_TIME)
                    .expression_attribute_values(":st", s(time));
            }
            if status == PROCESSING {
                // Not final again: the reconciler follows it.
                set.push("#pending = :kind");
                set.push("#since = :now");
                take = take
                    .expression_attribute_names("#pending", orders::attr::PENDING)
                    .expression_attribute_names("#since", orders::attr::PENDING_SINCE)
                    .expression_attribute_values(":kind", s(PENDING_REFUND));
            }
            let take = take
                .update_expression(format!("SET {}", set.join(", ")))
                .build()
                .expect("table, key and expressions are set");
            let reserve = Update::builder()
                .table_name(&self.orders_table)
                .key(orders::attr::OUT_TRADE_NO, s(&current.out_trade_no))
                .update_expression("SET #rt = if_not_exists(#rt, :zero) + :amount")
                .condition_expression("#s = :paid AND #total = :total AND (attribute_not_exists(#rt) OR #rt <= :limit)")
                .expression_attribute_names("#rt", orders::attr::REFUNDED_TOTAL)
                .expression_attribute_names("#s", orders::attr::STATUS)
                .expression_attribute_names("#total", orders::attr::AMOUNT_TOTAL)
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":amount", n(current.amount))
                .expression_attribute_values(":paid", s(PAID))
                .expression_attribute_values(":total", n(order.amount_total))
                .expression_attribute_values(":limit", n(limit))
                .build()
                .expect("table, key and expressions are set");
            let request = self
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().update(take).build())
                .transact_items(TransactWriteItem::builder().update(reserve).build());
            match send(&self.client, Table::Refunds, &self.table, request.send()).await? {
                Ok(_) => {
                    tracing::warn!(
                        out_refund_no = %current.out_refund_no,
                        from = %current.status,
                        to = status,
                        "refund held as ended is alive at WeChat Pay: taken back onto the order"
                    );
                    return Ok(Change::Changed);
                }
                // The refund changed meanwhile: whoever changed it recorded what they knew.
                Err(e) if cancelled_conditions(&e).is_some_and(|[refund, _]| refund) => return Ok(Change::Unchanged),
                Err(e) if cancelled_conditions(&e).is_some() => {}
                Err(e) => return Err(self.failed(e)),
            }
        }
        let reason = format!(
            "WeChat Pay reports this refund {status} while it is {} here, and the order cannot take {} fen more",
            current.status, current.amount
        );
        let first = self.flag(current, status, &reason, now).await?;
        Ok(Change::NeedsAttention { reason, first })
    }

    /// Marks a refund for the merchant's attention with the state WeChat Pay reported. Whether it
    /// was not flagged (for this state) before.
    async fn flag(&self, refund: &Refund, reported: &str, reason: &str, now: u64) -> Result<bool, StoreError> {
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::OUT_REFUND_NO, s(&refund.out_refund_no))
            .update_expression("SET #na = :yes, #why = :why, #rep = :rep, #up = :now")
            .condition_expression("attribute_exists(#k) AND (attribute_not_exists(#rep) OR #rep <> :rep)")
            .expression_attribute_names("#k", attr::OUT_REFUND_NO)
            .expression_attribute_names("#na", attr::NEEDS_ATTENTION)
            .expression_attribute_names("#why", attr::ATTENTION_REASON)
            .expression_attribute_names("#rep", attr::REPORTED_STATUS)
            .expression_attribute_names("#up", attr::UPDATED_AT)
            .expression_attribute_values(":yes", AttributeValue::Bool(true))
            .expression_attribute_values(":why", s(reason))
            .expression_attribute_values(":rep", s(reported))
            .expression_attribute_values(":now", n(now));
        match send(&self.client, Table::Refunds, &self.table, request.send()).await? {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(self.failed(e)),
        }
    }

    /// The order a refund belongs to (consistent read of the orders table).
    async fn order(&self, out_trade_no: &str) -> Result<Option<Order>, StoreError> {
        orders::OrderStore::new(self.client.clone(), &self.orders_table)
            .get(out_trade_no)
            .await
    }

    /// The refund ends without money moving: its state and the order's reservation change
    /// together, once. `CLOSED` is WeChat Pay's word and ends a refund from any state but
    /// SUCCESS; `FAILED` (refused, and unknown to WeChat Pay) ends only one still REQUESTED —
    /// a refund WeChat Pay accepted is never failed here.
    pub async fn release(&self, refund: &Refund, status: &str, now: u64) -> Result<Change, StoreError> {
        let condition = if status == FAILED {
            "#s = :requested"
        } else {
            "#s = :requested OR #s = :processing OR #s = :abnormal"
        };
        let mut end = Update::builder()
            .table_name(&self.table)
            .key(attr::OUT_REFUND_NO, s(&refund.out_refund_no))
            .update_expression("SET #s = :end, #up = :now REMOVE #pending, #since")
            .condition_expression(condition)
            .expression_attribute_names("#s", attr::STATUS)
            .expression_attribute_names("#up", attr::UPDATED_AT)
            .expression_attribute_names("#pending", orders::attr::PENDING)
            .expression_attribute_names("#since", orders::attr::PENDING_SINCE)
            .expression_attribute_values(":end", s(status))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":requested", s(REQUESTED));
        if status != FAILED {
            end = end
                .expression_attribute_values(":processing", s(PROCESSING))
                .expression_attribute_values(":abnormal", s(ABNORMAL));
        }
        let end = end.build().expect("table, key and expressions are set");
        let give_back = Update::builder()
            .table_name(&self.orders_table)
            .key(orders::attr::OUT_TRADE_NO, s(&refund.out_trade_no))
            .update_expression("SET #rt = #rt - :amount")
            .condition_expression("#rt >= :amount")
            .expression_attribute_names("#rt", orders::attr::REFUNDED_TOTAL)
            .expression_attribute_values(":amount", n(refund.amount))
            .build()
            .expect("table, key and expressions are set");
        let request = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(end).build())
            .transact_items(TransactWriteItem::builder().update(give_back).build());
        match send(&self.client, Table::Refunds, &self.table, request.send()).await? {
            Ok(_) => Ok(Change::Changed),
            Err(e) if cancelled_conditions(&e).is_some() => Ok(Change::Unchanged),
            Err(e) => Err(self.failed(e)),
        }
    }

    /// A page of the out_refund_no of refunds pending since before `cutoff` (the sparse index:
    /// no scan), at most `limit`, from `start` on.
    pub async fn pending(
        &self,
        cutoff: u64,
        limit: i32,
        start: Option<super::PageStart>,
    ) -> Result<super::PendingPage, StoreError> {
        let kind = (PENDING_REFUND, attr::OUT_REFUND_NO);
        super::pending_page(&self.client, Table::Refunds, &self.table, kind, cutoff, limit, start).await
    }

    /// Backs a pending refund off (see `store::defer`).
    pub async fn defer(&self, refund: &Refund, next_attempt_at: u64, grace: u64) -> Result<bool, StoreError> {
        let key = (PENDING_REFUND, attr::OUT_REFUND_NO, refund.out_refund_no.as_str());
        let attempts = refund.reconcile_attempts + 1;
        super::defer(
            &self.client,
            Table::Refunds,
            &self.table,
            key,
            attempts,
            next_attempt_at,
            grace,
        )
        .await
    }
}

/// Which of a cancelled two-item transaction's conditions failed; `None` for any other failure.
fn cancelled_conditions<R>(e: &SdkError<TransactWriteItemsError, R>) -> Option<[bool; 2]> {
    let SdkError::ServiceError(service) = e else {
        return None;
    };
    let TransactWriteItemsError::TransactionCanceledException(cancelled) = service.err() else {
        return None;
    };
    let reasons = cancelled.cancellation_reasons();
    let failed = |i: usize| reasons.get(i).and_then(|r| r.code()) == Some("ConditionalCheckFailed");
    (failed(0) || failed(1)).then(|| [failed(0), failed(1)])
}

fn refund_from_item(item: &HashMap<String, AttributeValue>) -> Result<Refund, StoreError> {
    let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
    let number = |name: &str| {
        item.get(name)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let malformed = |attribute| StoreError::Malformed {
        table: Table::Refunds,
        attribute,
    };
    Ok(Refund {
        out_refund_no: text(attr::OUT_REFUND_NO).ok_or(malformed(attr::OUT_REFUND_NO))?,
        out_trade_no: text(attr::OUT_TRADE_NO).ok_or(malformed(attr::OUT_TRADE_NO))?,
        amount: number(attr::AMOUNT).ok_or(malformed(attr::AMOUNT))?,
        status: text(attr::STATUS).ok_or(malformed(attr::STATUS))?,
        reason: text(attr::REASON),
        refund_id: text(attr::REFUND_ID),
        created_at: number(attr::CREATED_AT).unwrap_or(0),
        success_time: text(attr::SUCCESS_TIME),
        needs_attention: item
            .get(attr::NEEDS_ATTENTION)
            .and_then(|v| v.as_bool().ok())
            .copied()
            .unwrap_or(false),
        attention_reason: text(attr::ATTENTION_REASON),
        reconcile_attempts: super::attempts_of(item),
    })
}
