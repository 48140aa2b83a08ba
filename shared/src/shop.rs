//! Running a shop: the order and refund rules that the merchant's back office (`merchant`), WeChat
//! Pay's notifications (`pay-notify`), the mini-program (`GET /pay/orders/{no}`) and the
//! reconciler share, so that each path settles an order exactly as the others would.
//!
//! Nothing is lost when a notification is: an unpaid order with a prepay_id is asked about
//! (`refresh_order`) and a payment found that way is recorded with the same conditional write as
//! a notification; a refund not yet final is asked about (`refresh_refund`).

use lambda_http::http::StatusCode;
use serde_json::json;

use crate::ApiError;
use crate::clock::now_unix;
use crate::config::PayApi;
use crate::metrics::{self, Metric};
use crate::pay::Merchant;
use crate::pay::client::{PayError, RefundState};
use crate::state::{AppState, Payments};
use crate::store::StoreError;
use crate::store::orders::{CLOSED, Order, PAID, Payment, Settled, UNPAID};
use crate::store::refunds::{FAILED, Refund, Requested};
use crate::wechat::WechatError;

/// A prepay_id lives 2 hours: an order unpaid that long after it (or past its `time_expire`) is
/// abandoned, and the reconciler closes it.
pub const PREPAY_LIFETIME_SECS: u64 = 2 * 3600;

pub fn order_not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "order_not_found",
        "no order has this out_trade_no",
    )
}

/// A payment that is not this app's or this merchant's (a misconfiguration, never settled).
#[derive(Debug, thiserror::Error)]
pub enum PaymentRefused {
    #[error("{0}")]
    NotOurs(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Records a payment WeChat Pay reported — by a notification or by a query — once: the checks
/// every path shares, then the order's one conditional write. A payment the order cannot take is
/// kept on the order and logged as `PAYMENT NEEDS ATTENTION` (an alarm matches it). Counted: the
/// order changed to PAID (`PaymentsSettled`), a transaction first kept (`PaymentAnomalies`).
pub async fn record_payment(
    state: &AppState,
    pay: &Payments,
    merchant: &Merchant,
    appid: &str,
    mchid: &str,
    out_trade_no: &str,
    payment: &Payment<'_>,
) -> Result<Settled, PaymentRefused> {
    if appid != state.config.app_id {
        return Err(PaymentRefused::NotOurs(format!("appid {appid} is not this app's")));
    }
    if mchid != merchant.mchid {
        return Err(PaymentRefused::NotOurs(format!("mchid {mchid} is not this merchant's")));
    }
    let settled = pay.orders.settle(out_trade_no, payment).await?;
    match &settled {
        Settled::Changed => {
            tracing::info!(out_trade_no, transaction_id = payment.transaction_id, "order paid");
            metrics::count(Metric::PaymentsSettled);
        }
        Settled::AlreadyPaid => tracing::info!(out_trade_no, "repeated payment report: order already paid"),
        Settled::UnknownOrder => tracing::warn!(out_trade_no, "payment reported for an unknown order"),
        Settled::NeedsAttention { reason, first } => {
            if *first {
                metrics::count(Metric::PaymentAnomalies);
            }
            // The money moved; retries cannot change that. The merchant must refund or reconcile.
            tracing::error!(
                out_trade_no,
                transaction_id = payment.transaction_id,
                amount = payment.amount_total,
                reason = %reason,
                "PAYMENT NEEDS ATTENTION"
            );
        }
    }
    Ok(settled)
}

/// The order as WeChat Pay knows it, when ours may be behind: an unpaid order with an APIv3
/// prepay_id is looked up (query by out_trade_no) and settled from the answer — paid exactly as
/// a notification would have paid it, closed when WeChat Pay closed it. Other orders are
/// returned as they are.
pub async fn refresh_order(state: &AppState, pay: &Payments, order: Order) -> Result<Order, ApiError> {
    if !needs_refresh(&order) {
        return Ok(order);
    }
    let (client, _) = pay.client()?;
    let merchant = pay.merchant.get().await?;
    let tx = match client.query_order(&merchant, &order.out_trade_no).await {
        Ok(tx) => tx,
        // WeChat Pay does not know it (yet): nothing to settle.
        Err(PayError::NotFound(_)) => return Ok(order),
        Err(e) => return Err(e.into()),
    };
    match tx.trade_state.as_str() {
        "SUCCESS" | "REFUND" => {
            let transaction_id = tx.transaction_id.as_deref().unwrap_or_default();
            let payment = Payment {
                transaction_id,
                amount_total: tx.amount.as_ref().map_or(0, |a| a.total),
                payer_openid: tx.payer.as_ref().and_then(|p| p.openid.as_deref()),
                success_time: tx.success_time.as_deref(),
                paid_at: now_unix(),
            };
            record_payment(
                state,
                pay,
                &merchant,
                &tx.appid,
                &tx.mchid,
                &order.out_trade_no,
                &payment,
            )
            .await
            .map_err(|e| match e {
                PaymentRefused::Store(e) => e.into(),
                PaymentRefused::NotOurs(why) => ApiError::misconfigured(why),
            })?;
        }
        "CLOSED" | "REVOKED" => {
            pay.orders.close(&order.out_trade_no, now_unix()).await?;
        }
        // NOTPAY, USERPAYING, PAYERROR: not (yet) paid.
        _ => return Ok(order),
    }
    pay.orders.get(&order.out_trade_no).await?.ok_or_else(order_not_found)
}

/// Whether WeChat Pay may know more of this order than we do: unpaid, and placed through APIv3
/// (a prepay_id stored, or a placement attempted whose answer may have been lost).
pub fn needs_refresh(order: &Order) -> bool {
    let placed_v3 = order.placed_at.is_some()
        || (order.prepay_id.is_some() && order.pay_api.as_deref() == Some(PayApi::V3.as_str()));
    order.status == UNPAID && placed_v3
}

/// Closes an unpaid order: at WeChat Pay first (so it can no longer be paid), then here. A
/// payment that arrived meanwhile wins: the order is settled and the answer says it is paid.
pub async fn close_order(state: &AppState, pay: &Payments, order: Order) -> Result<Order, ApiError> {
    if order.status != UNPAID {
        return Err(not_unpaid(&order));
    }
    // An order placed with WeChat Pay, or perhaps placed: a prepay call whose answer was lost
    // may have created it there, and only closing it there makes sure it cannot be paid.
    let placed = order.prepay_id.is_some() || pay.settings.api == PayApi::V3;
    if placed {
        if order.prepay_id.is_some() && order.pay_api.as_deref() != Some(PayApi::V3.as_str()) {
            return Err(apiv2_unsupported("closing an APIv2 order (pay/closeorder)"));
        }
        let (client, _) = pay.client()?;
        let merchant = pay.merchant.get().await?;
        match client.close_order(&merchant, &order.out_trade_no).await {
            Ok(()) => {}
            Err(PayError::Rejected { code, .. }) if code == "ORDER_PAID" || code == "ORDERPAID" => {
                let order = refresh_order(state, pay, order).await?;
                return Err(not_unpaid(&order));
            }
            // WeChat Pay never saw it: nothing to close there.
            Err(PayError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    pay.orders.close(&order.out_trade_no, now_unix()).await?;
    let order = pay.orders.get(&order.out_trade_no).await?.ok_or_else(order_not_found)?;
    if order.status != CLOSED {
        return Err(not_unpaid(&order));
    }
    tracing::info!(out_trade_no = %order.out_trade_no, "order closed");
    Ok(order)
}

fn not_unpaid(order: &Order) -> ApiError {
    if order.status == PAID {
        ApiError::new(StatusCode::CONFLICT, "order_already_paid", "this order is already paid")
    } else {
        ApiError::new(
            StatusCode::CONFLICT,
            "order_not_payable",
            format!("this order's status is {}, not {UNPAID}", order.status),
        )
    }
}

fn apiv2_unsupported(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "apiv2_not_supported",
        format!(
            "{what} is not supported: APIv2 refunds need the merchant's client certificate (mutual TLS), which this server does not hold; use APIv3"
        ),
    )
}

/// Whether an order past its `time_expire` (or its prepay_id's lifetime) should be closed.
pub fn is_abandoned(order: &Order, now: u64) -> bool {
    // A placement whose answer was lost left no prepay_id, but WeChat Pay's would expire alike.
    let prepay_expired = order
        .prepay_created_at
        .or(order.placed_at)
        .is_some_and(|at| at.saturating_add(PREPAY_LIFETIME_SECS) < now);
    let time_expired = order
        .time_expire
        .as_deref()
        .and_then(parse_rfc3339)
        .is_some_and(|expire| expire < now);
    order.status == UNPAID && (prepay_expired || time_expired)
}

/// Seconds since the epoch of an RFC 3339 time (`2026-11-26T12:00:00+08:00`, fractions and `Z`
/// allowed); `None` for anything else.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    if bytes.len() < 20 || bytes[4] != b'-' || bytes[7] != b'-' || !matches!(bytes[10], b'T' | b't') {
        return None;
    }
    let number = |range: std::ops::Range<usize>| text.get(range)?.parse::<u64>().ok();
    let (y, m, d) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hh, mm, ss) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &fraction[digits..];
    }
    let offset: i64 = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] if [h1, h2, m1, m2].iter().all(|b| b.is_ascii_digit()) => {
            let h = i64::from((h1 - b'0') * 10 + (h2 - b'0'));
            let m = i64::from((m1 - b'0') * 10 + (m2 - b'0'));
            let offset = h * 3600 + m * 60;
            if *sign == b'+' { offset } else { -offset }
        }
        _ => return None,
    };
    let days = crate::clock::days_from_civil(y as i64, m as u32, d as u32);
    let local = days * 86_400 + (hh * 3600 + mm * 60 + ss) as i64;
    u64::try_from(local - offset).ok()
}

/// Applies for a refund of `amount` fen of a paid APIv3 order: reserved first (the sum of an
/// order's refunds never exceeds what was paid, also under concurrent calls), then sent to WeChat
/// Pay with the same `out_refund_no` however often it is retried, so it never refunds twice.
pub async fn refund(
    pay: &Payments,
    out_trade_no: &str,
    out_refund_no: &str,
    amount: u64,
    reason: Option<&str>,
) -> Result<Refund, ApiError> {
    let refunds = pay.refunds()?;
    let order = pay.orders.get(out_trade_no).await?.ok_or_else(order_not_found)?;
    if order.status == PAID && order.pay_api.as_deref() == Some(PayApi::V2.as_str()) {
        return Err(apiv2_unsupported("refunding an APIv2 order (secapi/pay/refund)"));
    }
    let refund = match refunds
        .request(&order, out_refund_no, amount, reason, now_unix())
        .await?
    {
        Requested::New(refund) => refund,
        // A retry: send it again only if WeChat Pay may not have it yet.
        Requested::Existing(refund) if refund.status == crate::store::refunds::REQUESTED => refund,
        Requested::Existing(refund) => return Ok(refund),
        Requested::Conflict(_) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "refund_conflict",
                "this out_refund_no is another refund's (another order or amount)",
            ));
        }
        Requested::ExceedsPaid { refunded_total } => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "refund_exceeds_paid",
                format!(
                    "the order's refunds would exceed what was paid ({} fen, {refunded_total} already refunded or pending)",
                    order.amount_total
                ),
            ));
        }
        Requested::NotRefundable(status) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "order_not_refundable",
                format!("only a paid order is refunded; this one is {status}"),
            ));
        }
    };
    submit_refund(pay, &order, refund).await
}

/// Sends a reserved refund to WeChat Pay and records its answer.
///
/// Only WeChat Pay's word ends a refund without money moving: a definitive refusal of this very
/// request is followed by a query, and the reservation is given back (FAILED) only if WeChat
/// Pay then says no refund of this out_refund_no exists — an earlier try whose answer was lost
/// may have been carried out, and a re-send of it can be refused (e.g. "already fully
/// refunded") although the money moved. Anything whose outcome is unknown (a timeout, a cut
/// connection, 429, 5xx, an answer that does not verify) or that may pass (`NOT_ENOUGH`)
/// leaves the refund REQUESTED, for a retry with the same out_refund_no or the reconciler.
async fn submit_refund(pay: &Payments, order: &Order, refund: Refund) -> Result<Refund, ApiError> {
    let refunds = pay.refunds()?;
    let (client, settings) = pay.client()?;
    let merchant = pay.merchant.get().await?;
    let mut request = json!({
        "out_trade_no": refund.out_trade_no,
        "out_refund_no": refund.out_refund_no,
        "notify_url": settings.notify_url,
        "amount": { "refund": refund.amount, "total": order.amount_total, "currency": "CNY" },
    });
    if let Some(reason) = &refund.reason {
        request["reason"] = json!(reason);
    }
    match client.refund(&merchant, &request).await {
        Ok(answer) => {
            record_answer(pay, &refund, &answer).await?;
            tracing::info!(out_refund_no = %refund.out_refund_no, status = %answer.status, "refund applied for");
        }
        Err(refusal) if refusal.is_definitive_refusal() => {
            match client.query_refund(&merchant, &refund.out_refund_no).await {
                Err(PayError::NotFound(_)) => {
                    refunds.release(&refund, FAILED, now_unix()).await?;
                    tracing::warn!(out_refund_no = %refund.out_refund_no, error = %refusal, "refund refused: FAILED");
                    return Err(refusal.into());
                }
                Ok(answer) => {
                    // It exists: an earlier try was carried out. Its state is the refund's.
                    tracing::warn!(
                        out_refund_no = %refund.out_refund_no,
                        error = %refusal,
                        status = %answer.status,
                        "refund re-send refused, but WeChat Pay has the refund"
                    );
                    record_answer(pay, &refund, &answer).await?;
                }
                Err(e) => {
                    tracing::warn!(out_refund_no = %refund.out_refund_no, refusal = %refusal, error = %e, "refund refused and not found out: left REQUESTED");
                    return Err(refusal.into());
                }
            }
        }
        Err(e) => return Err(e.into()),
    }
    refunds.get(&refund.out_refund_no).await?.ok_or_else(refund_not_found)
}

/// Records what WeChat Pay answered about a refund (applied for, or queried).
async fn record_answer(pay: &Payments, refund: &Refund, answer: &RefundState) -> Result<(), ApiError> {
    pay.refunds()?
        .record(
            refund,
            &answer.status,
            answer.refund_id.as_deref(),
            answer.success_time.as_deref(),
            now_unix(),
        )
        .await?;
    Ok(())
}

pub fn refund_not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "refund_not_found",
        "no refund has this out_refund_no",
    )
}

/// The refund as WeChat Pay knows it, when ours is not final: asked about, and recorded. One
/// that never reached WeChat Pay (its answer was lost before) is sent again with its
/// out_refund_no.
pub async fn refresh_refund(pay: &Payments, refund: Refund) -> Result<Refund, ApiError> {
    if !refund.is_pending() {
        return Ok(refund);
    }
    let refunds = pay.refunds()?;
    let (client, _) = pay.client()?;
    let merchant = pay.merchant.get().await?;
    match client.query_refund(&merchant, &refund.out_refund_no).await {
        Ok(answer) => {
            record_answer(pay, &refund, &answer).await?;
        }
        Err(PayError::NotFound(_)) if refund.status == crate::store::refunds::REQUESTED => {
            let order = pay
                .orders
                .get(&refund.out_trade_no)
                .await?
                .ok_or_else(order_not_found)?;
            return submit_refund(pay, &order, refund).await;
        }
        Err(e) => return Err(e.into()),
    }
    refunds.get(&refund.out_refund_no).await?.ok_or_else(refund_not_found)
}

/// Calls a WeChat order API (`/wxa/sec/order/...`) with the access token.
pub async fn wechat_order_api(
    state: &AppState,
    path: &str,
    body: &serde_json::Value,
) -> Result<serde_json::Value, ApiError> {
    state.wechat()?.call(path, body).await.map_err(|e| match e {
        crate::token::TokenError::Wechat(WechatError::Other { errcode: 10060001, .. }) => ApiError::new(
            StatusCode::CONFLICT,
            "payment_not_found_at_wechat",
            "WeChat does not know this payment yet (10060001): try again in a minute",
        ),
        other => other.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_are_read_with_their_offset() {
        assert_eq!(parse_rfc3339("2026-11-26T12:00:00+08:00"), Some(1_795_665_600));
        assert_eq!(parse_rfc3339("2026-11-26T04:00:00Z"), Some(1_795_665_600));
        assert_eq!(parse_rfc3339("2026-11-26T04:00:00.120Z"), Some(1_795_665_600));
        assert_eq!(parse_rfc3339("2026-11-25T23:00:00-05:00"), Some(1_795_665_600));
        for bad in [
            "",
            "2026-11-26",
            "2026-13-26T12:00:00+08:00",
            "2026-11-26T12:00:00",
            "2026-11-26T12:00:00+0800",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        assert_eq!(
            parse_rfc3339(&crate::clock::rfc3339_china(1_795_665_600)),
            Some(1_795_665_600)
        );
    }
}
