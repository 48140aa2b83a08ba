//! `reconciler`: run on a schedule (an EventBridge schedule in `template.yaml`), so that nothing is
//! lost when notifications are. It reads the sparse `PendingIndex` of each table — never a scan —
//! for orders unpaid with a prepay_id and refunds not yet final for more than
//! [`GRACE_SECS`], asks WeChat Pay about each, and settles them with the same conditional writes
//! as a notification; unpaid orders past their expiry are closed. Two runs at once, or a run
//! killed half-way, are safe: every change is conditional and idempotent.

use crate::at_init::AtInit;
use serde_json::{Value, json};

use crate::clock::now_unix;
use crate::config::Parts;
use crate::function::{Entry, Function, Outcome};
use crate::shop;
use crate::{ApiError, AppState};

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

/// Items looked at per run and kind (a run that cannot finish them leaves the rest to the next).
const BATCH: i32 = 100;

/// One pass, as if the clock read `now` (tests look ahead instead of waiting).
pub async fn reconcile_at(state: &AppState, now: u64) -> Outcome {
    let pay = state.pay()?;
    let cutoff = now.saturating_sub(GRACE_SECS);
    let mut report = json!({
        "orders_checked": 0, "orders_paid": 0, "orders_closed": 0,
        "refunds_checked": 0, "refunds_settled": 0,
        "transfers_checked": 0, "transfers_settled": 0, "errors": 0,
    });
    let bump = |report: &mut Value, key: &str| report[key] = json!(report[key].as_u64().unwrap_or(0) + 1);
    for out_trade_no in pay.orders.pending(cutoff, BATCH).await? {
        // Leave the rest to the next run rather than be cut off at the deadline.
        if crate::deadline::budget(std::time::Duration::from_secs(2))
            .is_none_or(|d| d < std::time::Duration::from_secs(1))
        {
            break;
        }
        bump(&mut report, "orders_checked");
        let outcome: Result<(), ApiError> = async {
            let Some(order) = pay.orders.get(&out_trade_no).await? else {
                return Ok(());
            };
            let order = shop::refresh_order(state, pay, order).await?;
            if order.status == crate::store::orders::PAID {
                bump(&mut report, "orders_paid");
            } else if shop::is_abandoned(&order, now) {
                shop::close_order(state, pay, order).await?;
                bump(&mut report, "orders_closed");
            }
            Ok(())
        }
        .await;
        if let Err(e) = outcome {
            tracing::warn!(out_trade_no, error = %e, "reconciling an order failed; the next run tries again");
            bump(&mut report, "errors");
        }
    }
    let refunds = pay.refunds()?;
    for out_refund_no in refunds.pending(cutoff, BATCH).await? {
        if crate::deadline::budget(std::time::Duration::from_secs(2))
            .is_none_or(|d| d < std::time::Duration::from_secs(1))
        {
            break;
        }
        bump(&mut report, "refunds_checked");
        let outcome: Result<(), ApiError> = async {
            let Some(refund) = refunds.get(&out_refund_no).await? else {
                return Ok(());
            };
            if !shop::refresh_refund(pay, refund).await?.is_pending() {
                bump(&mut report, "refunds_settled");
            }
            Ok(())
        }
        .await;
        if let Err(e) = outcome {
            tracing::warn!(out_refund_no, error = %e, "reconciling a refund failed; the next run tries again");
            bump(&mut report, "errors");
        }
    }
    // Merchant transfers not final: asked about (a CREATING one WeChat Pay does not know is sent
    // again with its out_bill_no), see `crate::transfer::refresh_transfer`.
    let transfers = pay.transfers()?;
    for out_bill_no in transfers.pending(cutoff, BATCH).await? {
        if crate::deadline::budget(std::time::Duration::from_secs(2))
            .is_none_or(|d| d < std::time::Duration::from_secs(1))
        {
            break;
        }
        bump(&mut report, "transfers_checked");
        let outcome: Result<(), ApiError> = async {
            let Some(transfer) = transfers.get(&out_bill_no).await? else {
                return Ok(());
            };
            if !crate::transfer::refresh_transfer(pay, &state.config.app_id, transfer)
                .await?
                .is_pending()
            {
                bump(&mut report, "transfers_settled");
            }
            Ok(())
        }
        .await;
        if let Err(e) = outcome {
            tracing::warn!(out_bill_no, error = %e, "reconciling a transfer failed; the next run tries again");
            bump(&mut report, "errors");
        }
    }
    tracing::info!(report = %report, "reconciled");
    Ok(report)
}
