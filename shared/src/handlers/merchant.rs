//! `merchant`: the merchant's back office drives orders, refunds and shipping by **invoking** this
//! function (Lambda Invoke, authorised by IAM `lambda:InvokeFunction`; no public route). The
//! event is a JSON command `{"op": ..., ...}`; the answer `{"ok": ...}` or
//! `{"error": {"code", "message", "request_id"}}`.
//!
//! Ops: `create_order`, `get_order`, `close_order`, `refund`, `get_refund`, `upload_shipping`,
//! `get_shipping_state`, `notify_confirm_receive` (orders); `create_transfer`, `get_transfer`,
//! `cancel_transfer` (merchant transfers to a user's wallet, `crate::transfer`); `send_subscribe_message`,
//! `get_subscription`, `generate_url_link`, `generate_scheme`, `generate_short_link`, `user_risk_rank` (messages and
//! links); `get_conversation`, `send_customer_message`, `set_typing`, `upload_temp_media`
//! (customer service, `customer_service`). Every change of state is a conditional write
//! (see `store::orders`, `store::refunds`); the rules are `shop`'s, shared with the notifications,
//! the mini-program's order page and the reconciler.

use crate::at_init::AtInit;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use lambda_http::http::StatusCode;

use crate::clock::{now_unix, rfc3339_china};
use crate::config::Parts;
use crate::function::{Entry, Function, Outcome};
use crate::shop::{self, order_not_found};
use crate::store::orders::{Created, NewOrder, PAID};
use crate::token::TokenError;
use crate::wechat::WechatError;
use crate::{ApiError, AppState, op};

mod customer_service;
use customer_service::{get_conversation, send_customer_message, set_typing, upload_temp_media};

pub const FUNCTION: Function = Function {
    name: "merchant",
    parts: Parts {
        wechat: true,
        access_token: true,
        orders: true,
        pay: true,
        pay_orders: true,
        refunds: true,
        transfers: true,
        messages: true,
        ..Parts::NONE
    },
    // Its ops differ in what they call; each reads the orders table.
    at_init: AtInit::DYNAMODB,
    entry: Entry::Ops(&[
        op!(create_order),
        op!(get_order),
        op!(close_order),
        op!(refund),
        op!(get_refund),
        op!(create_transfer),
        op!(get_transfer),
        op!(cancel_transfer),
        op!(upload_shipping),
        op!(get_shipping_state),
        op!(notify_confirm_receive),
        op!(send_subscribe_message),
        op!(get_subscription),
        op!(generate_url_link),
        op!(generate_scheme),
        op!(generate_short_link),
        op!(user_risk_rank),
        op!(get_conversation),
        op!(send_customer_message),
        op!(set_typing),
        op!(upload_temp_media),
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
    check_openid(&new.openid)?;
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
            StatusCode::CONFLICT,
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

/// WeChat Pay's out_bill_no: 5 to 32 of `[0-9A-Za-z]`.
fn checked_out_bill_no(no: &str) -> Result<(), ApiError> {
    if (5..=32).contains(&no.len()) && no.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(invalid("out_bill_no must be 5 to 32 of [0-9A-Za-z]"))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferCommand {
    out_bill_no: String,
    openid: String,
    /// Fen.
    amount: u64,
    /// WeChat Pay's `transfer_scene_id` (1000 cash marketing, 1005 commission...).
    scene_id: String,
    /// `transfer_remark`, shown to the user.
    remark: String,
    /// `transfer_scene_report_infos`, as the scene requires.
    report_infos: Vec<crate::store::transfers::ReportInfo>,
    /// The user's real name (required from 2,000 CNY): sealed for WeChat Pay, never kept or
    /// logged in the clear.
    #[serde(default)]
    user_name: Option<crate::redacted::Secret>,
}

/// Pays a user from the merchant's balance: recorded first, then created at WeChat Pay; the
/// user confirms in the mini-program (`POST /transfers/{out_bill_no}/confirm`). A retry with the
/// same out_bill_no and fields answers the same bill (see `crate::transfer`).
async fn create_transfer(state: &AppState, event: &Value) -> Outcome {
    let c: TransferCommand = command(event)?;
    checked_out_bill_no(&c.out_bill_no)?;
    check_openid(&c.openid)?;
    if !(1..=MAX_AMOUNT).contains(&c.amount) {
        return Err(invalid(format!("amount must be 1 to {MAX_AMOUNT} fen")));
    }
    if c.scene_id.is_empty() || c.scene_id.len() > 36 || !c.scene_id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid("scene_id must be WeChat Pay's transfer_scene_id, such as 1000"));
    }
    if c.remark.trim().is_empty() || c.remark.chars().count() > 32 {
        return Err(invalid("remark must be 1 to 32 characters"));
    }
    if !(1..=10).contains(&c.report_infos.len()) {
        return Err(invalid(
            "report_infos must have 1 to 10 items [{info_type, info_content}], as the scene requires",
        ));
    }
    for info in &c.report_infos {
        let bad = |s: &str, max| s.trim().is_empty() || s.chars().count() > max;
        if bad(&info.info_type, 15) || bad(&info.info_content, 32) {
            return Err(invalid(
                "each report_infos item needs info_type (1 to 15 characters) and info_content (1 to 32)",
            ));
        }
    }
    let user_name = c
        .user_name
        .as_ref()
        .map(|n| n.expose().trim())
        .filter(|n| !n.is_empty());
    if c.user_name.is_some() && user_name.is_none_or(|n| n.chars().count() > 64) {
        return Err(invalid("user_name must be 1 to 64 characters"));
    }
    if c.amount >= crate::transfer::USER_NAME_REQUIRED_FROM && user_name.is_none() {
        return Err(invalid(format!(
            "user_name is required from {} fen (2,000 CNY)",
            crate::transfer::USER_NAME_REQUIRED_FROM
        )));
    }
    let new = crate::store::transfers::NewTransfer {
        out_bill_no: c.out_bill_no,
        openid: c.openid,
        amount: c.amount,
        scene_id: c.scene_id,
        remark: c.remark,
        report_infos: c.report_infos,
        user_name: None,
    };
    let pay = state.pay()?;
    let transfer = crate::transfer::create_transfer(pay, &state.config.app_id, new, user_name).await?;
    Ok(json!(transfer))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ByBill {
    out_bill_no: String,
}

async fn bill(state: &AppState, event: &Value) -> Result<crate::store::transfers::Transfer, ApiError> {
    let ByBill { out_bill_no } = command(event)?;
    checked_out_bill_no(&out_bill_no)?;
    state
        .pay()?
        .transfers()?
        .get(&out_bill_no)
        .await?
        .ok_or_else(crate::transfer::transfer_not_found)
}

/// The bill, brought up to date from WeChat Pay when it is not final (and sent again when it
/// is still CREATING and WeChat Pay does not know it).
async fn get_transfer(state: &AppState, event: &Value) -> Outcome {
    let transfer = bill(state, event).await?;
    let pay = state.pay()?;
    Ok(json!(
        crate::transfer::refresh_transfer(pay, &state.config.app_id, transfer).await?
    ))
}

/// Cancels a bill the user has not confirmed (→ CANCELING, then CANCELLED).
async fn cancel_transfer(state: &AppState, event: &Value) -> Outcome {
    let transfer = bill(state, event).await?;
    let pay = state.pay()?;
    Ok(json!(
        crate::transfer::cancel_transfer(pay, &state.config.app_id, transfer).await?
    ))
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
            StatusCode::CONFLICT,
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
        .record_shipping(&order.out_trade_no, crate::store::orders::SHIPPED, now_unix())
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
            .record_shipping(&order.out_trade_no, crate::store::orders::CONFIRMED, now_unix())
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeMessage {
    openid: String,
    template_id: String,
    #[serde(default)]
    page: Option<String>,
    data: serde_json::Map<String, Value>,
    #[serde(default)]
    miniprogram_state: Option<String>,
    #[serde(default)]
    lang: Option<String>,
}

/// The longest value of a template field, by its kind (the prefix of its key, `thing1`...),
/// as WeChat documents them.
fn max_chars(key: &str) -> Option<usize> {
    let kind = key.trim_end_matches(|c: char| c.is_ascii_digit());
    Some(match kind {
        "thing" => 20,
        "number" | "letter" | "character_string" => 32,
        "symbol" | "phrase" => 5,
        "phone_number" => 17,
        "car_number" => 8,
        "name" => 10,
        "amount" | "date" | "time" => 64,
        _ => return None,
    })
}

async fn send_subscribe_message(state: &AppState, event: &Value) -> Outcome {
    let c: SubscribeMessage = command(event)?;
    check_openid(&c.openid)?;
    check_template_id(&c.template_id)?;
    if c.data.is_empty() || c.data.len() > 20 {
        return Err(invalid(
            "data must have 1 to 20 fields: {\"thing1\": {\"value\": ...}, ...}",
        ));
    }
    for (key, field) in &c.data {
        let value = field
            .get("value")
            .and_then(Value::as_str)
            .filter(|_| field.as_object().is_some_and(|o| o.len() == 1));
        let Some(value) = value else {
            return Err(invalid(format!("data.{key} must be {{\"value\": \"...\"}}")));
        };
        let Some(max) = max_chars(key) else {
            return Err(invalid(format!(
                "data.{key}: not a template field kind (thing, number, phrase, time, ...)"
            )));
        };
        let chars = value.chars().count();
        if chars == 0 || chars > max {
            return Err(invalid(format!("data.{key}.value must be 1 to {max} characters")));
        }
    }
    if let Some(page) = &c.page
        && (page.starts_with('/') || page.len() > 256)
    {
        return Err(invalid(
            "page must be a page path such as pages/index/index (no leading /)",
        ));
    }
    if c.miniprogram_state
        .as_deref()
        .is_some_and(|s| !matches!(s, "developer" | "trial" | "formal"))
    {
        return Err(invalid("miniprogram_state must be developer, trial or formal"));
    }
    if c.lang
        .as_deref()
        .is_some_and(|l| !matches!(l, "zh_CN" | "en_US" | "zh_HK" | "zh_TW"))
    {
        return Err(invalid("lang must be zh_CN, en_US, zh_HK or zh_TW"));
    }
    let mut body = json!({ "touser": c.openid, "template_id": c.template_id, "data": c.data });
    for (name, value) in [
        ("page", &c.page),
        ("miniprogram_state", &c.miniprogram_state),
        ("lang", &c.lang),
    ] {
        if let Some(value) = value {
            body[name] = json!(value);
        }
    }
    let messages = state.messages()?;
    let sent = state.wechat()?.call("/cgi-bin/message/subscribe/send", &body).await;
    match sent {
        Ok(answer) => {
            messages.record_send(&c.openid, &c.template_id).await?;
            Ok(json!({ "msgid": answer["msgid"] }))
        }
        Err(TokenError::Wechat(WechatError::Other { errcode, errmsg })) => Err(match errcode {
            43101 => {
                messages.record_none_left(&c.openid, &c.template_id, now_unix()).await?;
                ApiError::new(
                    StatusCode::CONFLICT,
                    "no_subscription_left",
                    "the user has not (or no longer) accepted this template: ask again with wx.requestSubscribeMessage",
                )
            }
            47003 => invalid(match field_named(&errmsg) {
                Some(field) => format!("WeChat refused data.{field} (47003)"),
                None => "WeChat refused a data field (47003)".to_owned(),
            }),
            41030 => invalid("WeChat refused the page (41030): it must be a page of the released version"),
            40037 => invalid("WeChat does not know this template_id (40037)"),
            40003 => invalid("WeChat does not know this openid (40003)"),
            _ => ApiError::from(WechatError::Other { errcode, errmsg }),
        }),
        Err(e) => Err(e.into()),
    }
}

/// The `data.<field>` WeChat's errmsg names (`argument invalid! data.thing1.value ...`): only
/// the field's key is answered, never WeChat's words.
fn field_named(errmsg: &str) -> Option<&str> {
    let rest = &errmsg[errmsg.find("data.")? + 5..];
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    Some(&rest[..end]).filter(|f| !f.is_empty())
}

fn check_template_id(template_id: &str) -> Result<(), ApiError> {
    let ok = !template_id.is_empty()
        && template_id.len() <= 64
        && template_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "template_id must be a template's id ([A-Za-z0-9_-], at most 64)",
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscriptionQuery {
    openid: String,
    template_id: String,
}

/// What the pushes and sends recorded of a user and a template: its status and the one-time
/// sends left (`none`, 0 before any event).
async fn get_subscription(state: &AppState, event: &Value) -> Outcome {
    let c: SubscriptionQuery = command(event)?;
    check_openid(&c.openid)?;
    check_template_id(&c.template_id)?;
    let record = state.messages()?.subscription(&c.openid, &c.template_id).await?;
    Ok(match record {
        Some(record) => json!(record),
        None => json!({ "template_id": c.template_id, "status": "none", "remaining": 0 }),
    })
}

fn check_openid(openid: &str) -> Result<(), ApiError> {
    let ok = !openid.is_empty()
        && openid.len() <= 128
        && openid.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid("openid must be a user's openid ([A-Za-z0-9_-], at most 128)"))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkCommand {
    /// A page of the released version (no leading `/`); the home page when absent.
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    env_version: Option<String>,
    /// Days the link works (1 to 30; WeChat's maximum is 30).
    #[serde(default)]
    expire_days: Option<u64>,
}

/// The `jump_wxa`-style target of a link, checked.
fn link_target(c: &LinkCommand) -> Result<(Value, u64), ApiError> {
    let path = c.path.as_deref().unwrap_or_default();
    if path.starts_with('/')
        || path.len() > 256
        || !path.bytes().all(|b| b.is_ascii_alphanumeric() || b"/_-.".contains(&b))
    {
        return Err(invalid(
            "path must be a page path such as pages/index/index (no leading /)",
        ));
    }
    let query = c.query.as_deref().unwrap_or_default();
    if query.len() > 512 || !query.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid("query must be at most 512 printable ASCII characters"));
    }
    let env_version = c.env_version.as_deref().unwrap_or("release");
    if !matches!(env_version, "release" | "trial" | "develop") {
        return Err(invalid("env_version must be release, trial or develop"));
    }
    let days = c.expire_days.unwrap_or(30);
    if !(1..=30).contains(&days) {
        return Err(invalid(
            "expire_days must be 1 to 30 (WeChat's links last at most 30 days)",
        ));
    }
    Ok((
        json!({ "path": path, "query": query, "env_version": env_version }),
        days,
    ))
}

/// The errors every link API shares.
fn link_error(e: TokenError) -> ApiError {
    let TokenError::Wechat(WechatError::Other { errcode, errmsg }) = e else {
        return e.into();
    };
    match errcode {
        85079 => ApiError::new(
            StatusCode::CONFLICT,
            "no_released_version",
            "the mini-program has no released version yet (85079)",
        ),
        40165 | 40066 => invalid(format!(
            "WeChat refused the page ({errcode}): it must be a page of the released version"
        )),
        40212 | 85402 | 85401 | 40225 => invalid(format!("WeChat refused the link's parameters ({errcode})")),
        44993 | 45009 | 85400 => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "quota_exceeded",
            format!("WeChat's quota for links is used up ({errcode}): try again tomorrow"),
        ),
        _ => WechatError::Other { errcode, errmsg }.into(),
    }
}

/// A user WeChat only answers about while they are active (61010: no visit in 2 hours).
fn user_error(e: TokenError) -> ApiError {
    match e {
        TokenError::Wechat(WechatError::Other { errcode: 61010, .. }) => ApiError::new(
            StatusCode::CONFLICT,
            "user_not_active",
            "WeChat answers about a user who used the mini-program within 2 hours (61010)",
        ),
        TokenError::Wechat(WechatError::Other { errcode: 40003, .. }) => {
            invalid("WeChat does not know this openid (40003)")
        }
        TokenError::Wechat(WechatError::Other { errcode: 40129, .. }) => invalid("WeChat refused the scene (40129)"),
        other => other.into(),
    }
}

async fn generate_url_link(state: &AppState, event: &Value) -> Outcome {
    let c: LinkCommand = command(event)?;
    let (target, days) = link_target(&c)?;
    let body = json!({
        "path": target["path"], "query": target["query"], "env_version": target["env_version"],
        "is_expire": true, "expire_type": 1, "expire_interval": days,
    });
    let answer = state
        .wechat()?
        .call("/wxa/generate_urllink", &body)
        .await
        .map_err(link_error)?;
    Ok(json!({ "url_link": answer["url_link"], "expire_days": days }))
}

async fn generate_scheme(state: &AppState, event: &Value) -> Outcome {
    let c: LinkCommand = command(event)?;
    let (target, days) = link_target(&c)?;
    let body = json!({ "jump_wxa": target, "is_expire": true, "expire_type": 1, "expire_interval": days });
    let answer = state
        .wechat()?
        .call("/wxa/generatescheme", &body)
        .await
        .map_err(link_error)?;
    Ok(json!({ "openlink": answer["openlink"], "expire_days": days }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShortLinkCommand {
    /// The page with its query (`pages/index/index?a=1`).
    page_url: String,
    #[serde(default)]
    page_title: Option<String>,
    #[serde(default)]
    is_permanent: bool,
}

async fn generate_short_link(state: &AppState, event: &Value) -> Outcome {
    let c: ShortLinkCommand = command(event)?;
    if c.page_url.is_empty()
        || c.page_url.starts_with('/')
        || c.page_url.len() > 1024
        || c.page_url.chars().any(char::is_whitespace)
    {
        return Err(invalid(
            "page_url must be a page path with its query, such as pages/index/index?a=1",
        ));
    }
    if c.page_title.as_ref().is_some_and(|t| t.chars().count() > 64) {
        return Err(invalid("page_title must be at most 64 characters"));
    }
    let body = json!({ "page_url": c.page_url, "page_title": c.page_title.unwrap_or_default(), "is_permanent": c.is_permanent });
    let answer = state
        .wechat()?
        .call("/wxa/genwxashortlink", &body)
        .await
        .map_err(link_error)?;
    Ok(json!({ "link": answer["link"] }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RiskCommand {
    openid: String,
    /// 0 sign-up, 1 cheating (marketing activities), 2 user-generated content.
    scene: u8,
    client_ip: String,
    #[serde(default)]
    mobile_no: Option<String>,
    #[serde(default)]
    email_address: Option<String>,
}

async fn user_risk_rank(state: &AppState, event: &Value) -> Outcome {
    let c: RiskCommand = command(event)?;
    check_openid(&c.openid)?;
    if c.scene > 2 {
        return Err(invalid("scene must be 0 (sign-up), 1 (cheating) or 2 (user content)"));
    }
    if c.client_ip.parse::<std::net::IpAddr>().is_err() {
        return Err(invalid("client_ip must be an IPv4 or IPv6 address"));
    }
    let mut body =
        json!({ "appid": state.config.app_id, "openid": c.openid, "scene": c.scene, "client_ip": c.client_ip });
    if let Some(mobile) = c.mobile_no {
        body["mobile_no"] = json!(mobile);
    }
    if let Some(email) = c.email_address {
        body["email_address"] = json!(email);
    }
    let answer = state
        .wechat()?
        .call("/wxa/getuserriskrank", &body)
        .await
        .map_err(user_error)?;
    Ok(json!({ "risk_rank": answer["risk_rank"] }))
}
