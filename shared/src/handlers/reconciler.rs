//! `reconciler`: run on a schedule (an EventBridge schedule in `template.yaml`), so that nothing is
//! lost when notifications are. It pages through the sparse `PendingIndex` of each table — never
//! a scan — for orders unpaid with a prepay_id and refunds not yet final for more than
//! [`GRACE_SECS`], asks WeChat Pay about each, and settles them with the same conditional writes
//! as a notification; unpaid orders past their expiry are closed (APIv3) or end `EXPIRED`
//! (APIv2, which this server cannot close at WeChat Pay).
//!
//! One item never holds up the others: every page is read to the end (`ExclusiveStartKey`), and
//! an item the reconciler fails on is backed off (`attempts`, `next_attempt_at`; its index sort
//! key moves with it, so the next runs' queries skip it until then). Two runs at once, or a run
//! killed half-way, are safe: every change is conditional and idempotent.

use std::time::Duration;

use serde_json::{Value, json};

use crate::at_init::AtInit;
use crate::clock::now_unix;
use crate::config::{Parts, PayApi};
use crate::function::{Entry, Function, Outcome};
use crate::state::Payments;
use crate::store::orders::PAID;
use crate::store::refunds::RefundStore;
use crate::store::transfers::{TransferStore, WAIT_USER_CONFIRM};
use crate::{ApiError, AppState, shop};

pub const FUNCTION: Function = Function {
    name: "reconciler",
    parts: Parts {
        orders: true,
        pay: true,
        pay_orders: true,
        refunds: true,
        transfers: true,
        ..Parts::NONE
    },
    at_init: AtInit::DYNAMODB,
    entry: Entry::Scheduled(|state| Box::pin(reconcile_at(state, now_unix()))),
};

/// Notifications usually arrive within seconds; the reconciler leaves them this long.
pub const GRACE_SECS: u64 = 300;

/// Items read per page of the index.
const PAGE: i32 = 100;

/// The first back-off after a failure; it doubles with each failure in a row, up to [`MAX_BACKOFF_SECS`].
pub const FIRST_BACKOFF_SECS: u64 = 60;
pub const MAX_BACKOFF_SECS: u64 = 3600;

/// How long an item is left alone after failing `attempts` times in a row.
pub fn backoff_secs(attempts: u64) -> u64 {
    let doublings = attempts.saturating_sub(1).min(16) as u32;
    FIRST_BACKOFF_SECS.saturating_mul(1 << doublings).min(MAX_BACKOFF_SECS)
}

/// What one run did, by kind of item.
#[derive(Default)]
struct Report {
    counts: serde_json::Map<String, Value>,
    /// The run stopped before the end of an index, for want of time (the next run goes on).
    cut_short: bool,
}

impl Report {
    fn bump(&mut self, key: &str) {
        let count = self.counts.get(key).and_then(Value::as_u64).unwrap_or(0);
        self.counts.insert(key.to_owned(), json!(count + 1));
    }

    fn into_json(mut self) -> Value {
        self.counts.insert("cut_short".into(), json!(self.cut_short));
        Value::Object(self.counts)
    }
}

/// Leave the rest to the next run rather than be cut off at the deadline.
fn time_left() -> bool {
    crate::deadline::budget(Duration::from_secs(2)).is_some_and(|d| d >= Duration::from_secs(1))
}

/// One pass, as if the clock read `now` (tests look ahead instead of waiting).
pub async fn reconcile_at(state: &AppState, now: u64) -> Outcome {
    let pay = state.pay()?;
    let refunds = pay.refunds()?;
    let cutoff = now.saturating_sub(GRACE_SECS);
    let mut report = Report::default();
    for key in [
        "orders_checked",
        "orders_paid",
        "orders_closed",
        "orders_expired",
        "refunds_checked",
        "refunds_settled",
        "transfers_checked",
        "transfers_settled",
        "transfers_waiting",
        "errors",
        "deferred",
    ] {
        report.counts.insert(key.into(), json!(0));
    }

    let mut start = None;
    'orders: loop {
        let page = pay.orders.pending(cutoff, PAGE, start).await?;
        for out_trade_no in page.keys {
            if !time_left() {
                report.cut_short = true;
                break 'orders;
            }
            report.bump("orders_checked");
            reconcile_order(state, pay, &out_trade_no, now, &mut report).await;
        }
        match page.next {
            Some(next) => start = Some(next),
            None => break,
        }
    }

    let mut start = None;
    'refunds: loop {
        if report.cut_short {
            break;
        }
        let page = refunds.pending(cutoff, PAGE, start).await?;
        for out_refund_no in page.keys {
            if !time_left() {
                report.cut_short = true;
                break 'refunds;
            }
            report.bump("refunds_checked");
            reconcile_refund(pay, refunds, &out_refund_no, now, &mut report).await;
        }
        match page.next {
            Some(next) => start = Some(next),
            None => break,
        }
    }
    // Merchant transfers not final: asked about (a CREATING one WeChat Pay does not know is sent
    // again with its out_bill_no), see `crate::transfer::refresh_transfer`.
    let transfers = pay.transfers()?;
    let mut start = None;
    'transfers: loop {
        if report.cut_short {
            break;
        }
        let page = transfers.pending(cutoff, PAGE, start).await?;
        for out_bill_no in page.keys {
            if !time_left() {
                report.cut_short = true;
                break 'transfers;
            }
            report.bump("transfers_checked");
            reconcile_transfer(state, pay, transfers, &out_bill_no, now, &mut report).await;
        }
        match page.next {
            Some(next) => start = Some(next),
            None => break,
        }
    }
    let report = report.into_json();
    tracing::info!(report = %report, "reconciled");
    Ok(report)
}

/// Brings one pending order up to date; a failure backs it off.
async fn reconcile_order(state: &AppState, pay: &Payments, out_trade_no: &str, now: u64, report: &mut Report) {
    let order = match pay.orders.get(out_trade_no).await {
        Ok(Some(order)) => order,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(out_trade_no, error = %e, "reading a pending order failed; the next run tries again");
            report.bump("errors");
            return;
        }
    };
    let outcome: Result<&str, ApiError> = async {
        let order = shop::refresh_order(state, pay, order.clone()).await?;
        if order.status == PAID {
            return Ok("orders_paid");
        }
        if !shop::is_abandoned(&order, now) {
            return Ok("");
        }
        if order.pay_api.as_deref() == Some(PayApi::V2.as_str()) {
            // APIv2's closeorder is not implemented: the order ends here, and its prepay_id has
            // expired at WeChat Pay (2 hours), so it can no longer be paid.
            pay.orders.expire(&order.out_trade_no, now_unix()).await?;
            tracing::info!(out_trade_no, "APIv2 order past its time: EXPIRED");
            return Ok("orders_expired");
        }
        shop::close_order(state, pay, order).await?;
        Ok("orders_closed")
    }
    .await;
    match outcome {
        Ok("") => {}
        Ok(counted) => report.bump(counted),
        Err(e) => {
            report.bump("errors");
            let next = now + backoff_secs(order.reconcile_attempts + 1);
            tracing::warn!(out_trade_no, error = %e, attempts = order.reconcile_attempts + 1, next_attempt_at = next, "reconciling an order failed; backed off");
            if let Ok(true) = pay.orders.defer(&order, next, GRACE_SECS).await {
                report.bump("deferred");
            }
        }
    }
}

/// Brings one pending refund up to date; a failure backs it off.
async fn reconcile_refund(pay: &Payments, refunds: &RefundStore, out_refund_no: &str, now: u64, report: &mut Report) {
    let refund = match refunds.get(out_refund_no).await {
        Ok(Some(refund)) => refund,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(out_refund_no, error = %e, "reading a pending refund failed; the next run tries again");
            report.bump("errors");
            return;
        }
    };
    match shop::refresh_refund(pay, refund.clone()).await {
        Ok(refund) if !refund.is_pending() => report.bump("refunds_settled"),
        Ok(_) => {}
        Err(e) => {
            report.bump("errors");
            let next = now + backoff_secs(refund.reconcile_attempts + 1);
            tracing::warn!(out_refund_no, error = %e, attempts = refund.reconcile_attempts + 1, next_attempt_at = next, "reconciling a refund failed; backed off");
            if let Ok(true) = refunds.defer(&refund, next, GRACE_SECS).await {
                report.bump("deferred");
            }
        }
    }
}

/// Brings one pending transfer up to date; a failure backs it off.
async fn reconcile_transfer(
    state: &AppState,
    pay: &Payments,
    transfers: &TransferStore,
    out_bill_no: &str,
    now: u64,
    report: &mut Report,
) {
    let transfer = match transfers.get(out_bill_no).await {
        Ok(Some(transfer)) => transfer,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(out_bill_no, error = %e, "reading a pending transfer failed; the next run tries again");
            report.bump("errors");
            return;
        }
    };
    match crate::transfer::refresh_transfer(pay, &state.config.app_id, transfer.clone()).await {
        Ok(transfer) if !transfer.is_pending() => report.bump("transfers_settled"),
        // The user has up to 24 hours to confirm and the notification says when they did:
        // asking WeChat Pay every run would spend its quota on bills that cannot change, so a
        // waiting bill is looked at less and less often (as a failing one is, at most hourly).
        Ok(waiting) if waiting.state == WAIT_USER_CONFIRM => {
            let next = now + backoff_secs(waiting.reconcile_attempts + 1);
            if let Ok(true) = transfers.defer(&waiting, next, GRACE_SECS).await {
                report.bump("transfers_waiting");
            }
        }
        Ok(_) => {}
        Err(e) => {
            report.bump("errors");
            let next = now + backoff_secs(transfer.reconcile_attempts + 1);
            tracing::warn!(out_bill_no, error = %e, attempts = transfer.reconcile_attempts + 1, next_attempt_at = next, "reconciling a transfer failed; backed off");
            if let Ok(true) = transfers.defer(&transfer, next, GRACE_SECS).await {
                report.bump("deferred");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        assert_eq!(
            (1..=8).map(backoff_secs).collect::<Vec<_>>(),
            [60, 120, 240, 480, 960, 1920, 3600, 3600]
        );
        assert_eq!(backoff_secs(u64::MAX), MAX_BACKOFF_SECS);
    }
}
