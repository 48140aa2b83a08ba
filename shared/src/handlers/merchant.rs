//! `merchant`: the merchant's back office drives orders, refunds and shipping by **invoking** this
//! function (Lambda Invoke, authorised by IAM `lambda:InvokeFunction`; no public route). The
//! event is a JSON command `{"op": ..., ...}`; the answer `{"ok": ...}` or
//! `{"error": {"code", "message", "request_id"}}`.
//!
//! Ops: `create_order`, `get_order`, `close_order`, `refund`, `get_refund`, `upload_shipping`,
//! `get_shipping_state`, `notify_confirm_receive`. Every change of state is a conditional write
//! (see `store::orders`, `store::refunds`); the rules are `shop`'s, shared with the notifications,
//! the mini-program's order page and the reconciler.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::clock::{now_unix, rfc3339_china};
use crate::config::Parts;
use crate::function::{Entry, Function, Outcome};
use crate::shop::{self, order_not_found};
use crate::store::orders::{Created, NewOrder, PAID};
use crate::{ApiError, AppState, op};

pub const FUNCTION: Function = Function {
    name: "merchant",
    parts: Parts {
        wechat: true,
        orders: true,
        pay: true,
        pay_orders: true,
        refunds: true,
        ..Parts::NONE
    },
    entry: Entry::Ops(&[
        op!(create_order),
        op!(get_order),
        op!(close_order),
        op!(refund),
        op!(get_refund),
        op!(upload_shipping),
        op!(get_shipping_state),
        op!(notify_confirm_receive),
    ]),
};

/// The command's fields (all but `op`), as `T`: unknown fields are refused, with the serde message
/// (it is about the caller's own command).
fn command<T: DeserializeOwned>(event: &Value) -> Result<T, ApiError> {
    let mut fields = event.as_object().cloned().unwrap_or_default();
    fields.remove("op");
    serde_json::from_value(Value::Object(fields))
        .map_err(|e| ApiError::bad_request("invalid_command", format!("the command's fields: {e}")))
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_command", message)
}

fn checked_out_trade_no(no: &str) -> Result<(), ApiError> {
    if crate::handlers::pay_sign::is_out_trade_no(no) {
        Ok(())
    } else {
        Err(invalid("out_trade_no must be 6 to 32 of [0-9A-Za-z_-|*]"))
    }
}

/// WeChat Pay's out_refund_no: 1 to 64 of `[0-9A-Za-z_-|*@]`.
fn checked_out_refund_no(no: &str) -> Result<(), ApiError> {
    let ok = (1..=64).contains(&no.len()) && no.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-|*@".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid("out_refund_no must be 1 to 64 of [0-9A-Za-z_-|*@]"))
    }
}

/// The most a single order may be (WeChat Pay's own ceiling is far below): keeps sums in range.
const MAX_AMOUNT: u64 = 100_000_000_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ByOrder {
    out_trade_no: String,
}

async fn create_order(state: &AppState, event: &Value) -> Outcome {
    let new: NewOrder = command(event)?;
    checked_out_trade_no(&new.out_trade_no)?;
    if new.openid.is_empty()
        || new.openid.len() > 128
        || !new
            .openid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b))
    {
        return Err(invalid(
            "openid must be the buyer's openid ([A-Za-z0-9_-], at most 128)",
        ));
    }
    if new.description.trim().is_empty() || new.description.chars().count() > 127 {
        return Err(invalid("description must be 1 to 127 characters"));
    }
    if !(1..=MAX_AMOUNT).contains(&new.amount_total) {
        return Err(invalid(format!("amount_total must be 1 to {MAX_AMOUNT} fen")));
    }
    if new.attach.as_ref().is_some_and(|a| a.chars().count() > 128) {
        return Err(invalid("attach must be at most 128 characters"));
    }
    if let Some(expire) = &new.time_expire
        && shop::parse_rfc3339(expire).is_none()
    {
        return Err(invalid(
            "time_expire must be an RFC 3339 time, such as 2026-11-26T12:00:00+08:00",
        ));
    }
    let pay = state.pay()?;
    match pay.orders.create(&new, now_unix()).await? {
        Created::New(order) => {
            tracing::info!(out_trade_no = %order.out_trade_no, amount = order.amount_total, "order created");
            Ok(json!(order))
        }
        Created::Existing(order) => Ok(json!(order)),
        Created::Conflict => Err(ApiError::new(
            lambda_http::http::StatusCode::CONFLICT,
            "order_conflict",
            "another order has this out_trade_no",
        )),
    }
}

async fn get_order(state: &AppState, event: &Value) -> Outcome {
    let ByOrder { out_trade_no } = command(event)?;
    checked_out_trade_no(&out_trade_no)?;
    let pay = state.pay()?;
    let order = pay.orders.get(&out_trade_no).await?.ok_or_else(order_not_found)?;
    Ok(json!(shop::refresh_order(state, pay, order).await?))
}

async fn close_order(state: &AppState, event: &Value) -> Outcome {
    let ByOrder { out_trade_no } = command(event)?;
    checked_out_trade_no(&out_trade_no)?;
    let pay = state.pay()?;
    let order = pay.orders.get(&out_trade_no).await?.ok_or_else(order_not_found)?;
    Ok(json!(shop::close_order(state, pay, order).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefundCommand {
    out_trade_no: String,
    out_refund_no: String,
    amount: u64,
    #[serde(default)]
    reason: Option<String>,
}

async fn refund(state: &AppState, event: &Value) -> Outcome {
    let c: RefundCommand = command(event)?;
    checked_out_trade_no(&c.out_trade_no)?;
    checked_out_refund_no(&c.out_refund_no)?;
    if !(1..=MAX_AMOUNT).contains(&c.amount) {
        return Err(invalid(format!("amount must be 1 to {MAX_AMOUNT} fen")));
    }
    if c.reason.as_ref().is_some_and(|r| r.chars().count() > 80) {
        return Err(invalid("reason must be at most 80 characters"));
    }
    let pay = state.pay()?;
    let refund = shop::refund(pay, &c.out_trade_no, &c.out_refund_no, c.amount, c.reason.as_deref()).await?;
    Ok(json!(refund))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ByRefund {
    out_refund_no: String,
}

async fn get_refund(state: &AppState, event: &Value) -> Outcome {
    let ByRefund { out_refund_no } = command(event)?;
    checked_out_refund_no(&out_refund_no)?;
    let pay = state.pay()?;
    let refund = pay
        .refunds()?
        .get(&out_refund_no)
        .await?
        .ok_or_else(shop::refund_not_found)?;
    Ok(json!(shop::refresh_refund(pay, refund).await?))
}

#[derive(Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct ShippingItem {
    tracking_no: String,
    express_company: String,
    item_desc: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    contact: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShippingCommand {
    out_trade_no: String,
    /// 1 express, 2 same-city delivery, 3 virtual goods, 4 user pickup.
    logistics_type: u8,
    /// 1 unified, 2 split.
    delivery_mode: u8,
    shipping_list: Vec<ShippingItem>,
    #[serde(default)]
    is_all_delivered: Option<bool>,
}

/// The paid order of a shipping op, and its transaction id (WeChat keys shipping on it).
async fn paid_order(state: &AppState, out_trade_no: &str) -> Result<(crate::store::orders::Order, String), ApiError> {
    let pay = state.pay()?;
    let order = pay.orders.get(out_trade_no).await?.ok_or_else(order_not_found)?;
    let order = shop::refresh_order(state, pay, order).await?;
    match (&order.status, order.transaction_id.clone()) {
        (status, Some(transaction_id)) if status == PAID => Ok((order, transaction_id)),
        _ => Err(ApiError::new(
            lambda_http::http::StatusCode::CONFLICT,
            "order_not_paid",
            "shipping is recorded for a paid order only",
        )),
    }
}

async fn upload_shipping(state: &AppState, event: &Value) -> Outcome {
    let c: ShippingCommand = command(event)?;
    checked_out_trade_no(&c.out_trade_no)?;
    if !(1..=4).contains(&c.logistics_type) {
        return Err(invalid(
            "logistics_type must be 1 (express), 2 (same-city), 3 (virtual) or 4 (pickup)",
        ));
    }
    if !(1..=2).contains(&c.delivery_mode) {
        return Err(invalid("delivery_mode must be 1 (unified) or 2 (split)"));
    }
    if !(1..=10).contains(&c.shipping_list.len()) {
        return Err(invalid("shipping_list must have 1 to 10 items"));
    }
    for item in &c.shipping_list {
        let long = |s: &str, max| s.is_empty() || s.chars().count() > max;
        if long(&item.tracking_no, 128) || long(&item.express_company, 128) || long(&item.item_desc, 120) {
            return Err(invalid(
                "each shipping_list item needs tracking_no and express_company (≤ 128) and item_desc (≤ 120)",
            ));
        }
    }
    let (order, transaction_id) = paid_order(state, &c.out_trade_no).await?;
    let mut body = json!({
        "order_key": { "order_number_type": 2, "transaction_id": transaction_id },
        "logistics_type": c.logistics_type,
        "delivery_mode": c.delivery_mode,
        "shipping_list": c.shipping_list,
        "upload_time": rfc3339_china(now_unix()),
        "payer": { "openid": order.payer_openid.as_deref().unwrap_or(&order.openid) },
    });
    if let Some(all) = c.is_all_delivered {
        body["is_all_delivered"] = json!(all);
    }
    shop::wechat_order_api(state, "/wxa/sec/order/upload_shipping_info", &body).await?;
    state
        .pay()?
        .orders
        .record_shipping(&order.out_trade_no, "SHIPPED", now_unix())
        .await?;
    tracing::info!(out_trade_no = %order.out_trade_no, "shipping uploaded");
    let order = state
        .pay()?
        .orders
        .get(&order.out_trade_no)
        .await?
        .ok_or_else(order_not_found)?;
    Ok(json!(order))
}

async fn get_shipping_state(state: &AppState, event: &Value) -> Outcome {
    let ByOrder { out_trade_no } = command(event)?;
    checked_out_trade_no(&out_trade_no)?;
    let (order, transaction_id) = paid_order(state, &out_trade_no).await?;
    let answer = shop::wechat_order_api(
        state,
        "/wxa/sec/order/get_order",
        &json!({ "transaction_id": transaction_id }),
    )
    .await?;
    let order_state = answer["order"]["order_state"].as_u64().unwrap_or(0);
    // 3 confirmed, 4 settled: the user has it.
    if order_state >= 3 && order_state != 5 {
        state
            .pay()?
            .orders
            .record_shipping(&order.out_trade_no, "CONFIRMED", now_unix())
            .await?;
    }
    Ok(json!({ "out_trade_no": order.out_trade_no, "order_state": order_state, "order": answer["order"] }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfirmCommand {
    out_trade_no: String,
    /// Unix seconds; now by default.
    #[serde(default)]
    received_time: Option<u64>,
}

async fn notify_confirm_receive(state: &AppState, event: &Value) -> Outcome {
    let c: ConfirmCommand = command(event)?;
    checked_out_trade_no(&c.out_trade_no)?;
    let (order, transaction_id) = paid_order(state, &c.out_trade_no).await?;
    shop::wechat_order_api(
        state,
        "/wxa/sec/order/notify_confirm_receive",
        &json!({ "transaction_id": transaction_id, "received_time": c.received_time.unwrap_or_else(now_unix) }),
    )
    .await?;
    Ok(json!({ "out_trade_no": order.out_trade_no, "notified": true }))
}
