//! The mini-program shipping-info service (发货信息管理), a WeChat server API (access_token in the
//! query): the merchant uploads how a payment was shipped, WeChat shows it to the user, who
//! confirms receipt; errors are the documented `errcode`s. A payment becomes visible to the
//! service about a minute after it is made, and may be re-shipped once.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Shared;
use crate::api::{begin_json, wx_error};
use crate::pay::{SimOrder, admin_error};
use crate::state::{SimState, is_rfc3339};

/// The shipping service finds a payment about a minute after it (10060001 before that).
pub const VISIBLE_AFTER_SECS: i64 = 60;
/// At most 15 packages per payment (10060024 "支付单物流信息列表长度不可大于 15").
pub const MAX_PACKAGES: usize = 15;

#[derive(Clone)]
struct Shipment {
    logistics_type: u64,
    delivery_mode: u64,
    /// Unified delivery, or split delivery with `is_all_delivered`.
    finished: bool,
    finish_count: u32,
    /// The one re-shipment a payment is allowed has been used.
    reshipped: bool,
    shipped_at: i64,
    list: Vec<Value>,
    reminded: bool,
    confirmed: bool,
    settled: bool,
}

#[derive(Default)]
pub struct ShippingState {
    /// By transaction_id.
    shipments: HashMap<String, Shipment>,
}

type Params = Query<HashMap<String, String>>;

fn ok() -> Response {
    Json(json!({ "errcode": 0, "errmsg": "ok" })).into_response()
}

/// How a call names a payment.
enum Key<'a> {
    Transaction(&'a str),
    Merchant { mchid: &'a str, out_trade_no: &'a str },
}

impl<'a> Key<'a> {
    /// `{transaction_id}` or `{merchant_id, merchant_trade_no}` (get_order, notify_confirm_receive).
    fn of_query(body: &'a Value) -> Option<Key<'a>> {
        let text = |k: &str| body[k].as_str().filter(|v| !v.is_empty());
        match (text("transaction_id"), text("merchant_id"), text("merchant_trade_no")) {
            (Some(transaction_id), _, _) => Some(Key::Transaction(transaction_id)),
            (None, Some(mchid), Some(out_trade_no)) => Some(Key::Merchant { mchid, out_trade_no }),
            _ => None,
        }
    }
}

/// The paid order `key` names, if the shipping service sees it yet.
fn payment(sim: &SimState, key: &Key) -> Option<SimOrder> {
    let order = match key {
        Key::Transaction(id) => sim.pay.order_by_transaction_id(id),
        Key::Merchant { mchid, out_trade_no } => sim.pay.order(out_trade_no).filter(|o| &o.mchid == mchid),
    }?;
    let paid_at = order.paid_at?;
    (sim.now() - paid_at >= VISIBLE_AFTER_SECS).then(|| order.clone())
}

fn transaction_id(order: &SimOrder) -> &str {
    order.transaction_id.as_deref().unwrap_or_default()
}

/// `order_state`: 1 waiting for shipment, 2 shipped, 3 receipt confirmed, 4 settled, 5 refunded.
fn order_state(sim: &SimState, order: &SimOrder) -> u64 {
    if sim.refunds.fully_refunded(&order.out_trade_no, order.total) {
        return 5;
    }
    match sim.shipping.shipments.get(transaction_id(order)) {
        Some(s) if s.settled => 4,
        Some(s) if s.confirmed => 3,
        Some(s) if s.finished => 2,
        _ => 1,
    }
}

/// The checks on the request alone: the payment's key, the shipment and the payer, or WeChat's
/// errcode and errmsg.
fn parse_upload(req: &Value) -> Result<(Key<'_>, Shipment, &str), (i64, &'static str)> {
    let Some(list) = req["shipping_list"].as_array() else {
        return Err((47001, "data format error"));
    };
    let (order_key, payer) = (&req["order_key"], &req["payer"]);
    if !order_key.is_object() || !payer.is_object() {
        return Err((47001, "data format error"));
    }
    let text = |v: &'_ Value, k: &str| v[k].as_str().unwrap_or_default().to_owned();
    let key = match order_key["order_number_type"].as_u64() {
        Some(1) => match (order_key["mchid"].as_str(), order_key["out_trade_no"].as_str()) {
            (None | Some(""), _) => return Err((268485196, "商户侧单号形式下 mchid 字段不能为空")),
            (_, None | Some("")) => return Err((268485197, "商户侧单号形式下 out_trade_no 字段不能为空")),
            (Some(mchid), Some(out_trade_no)) => Key::Merchant { mchid, out_trade_no },
        },
        Some(2) => match order_key["transaction_id"].as_str() {
            None | Some("") => return Err((268485195, "微信支付单号形式下 transaction_id 字段不能为空")),
            Some(id) => Key::Transaction(id),
        },
        _ => return Err((268485194, "订单单号类型非法")),
    };
    let logistics_type = req["logistics_type"].as_u64().unwrap_or(0);
    if !(1..=4).contains(&logistics_type) {
        return Err((10060005, "物流类型有误"));
    }
    let delivery_mode = req["delivery_mode"].as_u64().unwrap_or(0);
    if !matches!(delivery_mode, 1 | 2) {
        return Err((268485224, "发货模式非法"));
    }
    if delivery_mode == 1 && list.len() != 1 {
        return Err((268485228, "统一发货模式下，物流信息列表长度必须为 1"));
    }
    if list.is_empty() {
        return Err((10060014, "参数错误: shipping_list 不能为空"));
    }
    if list.len() > MAX_PACKAGES {
        return Err((10060024, "物流信息列表太长"));
    }
    if delivery_mode == 2 && logistics_type != 1 {
        return Err((10060006, "非快递发货时不允许分拆发货"));
    }
    let finished = match (delivery_mode, req["is_all_delivered"].as_bool()) {
        (1, _) => true,
        (_, Some(all)) => all,
        (_, None) => return Err((10060007, "分拆发货模式下必须填写 is_all_delivered 字段")),
    };
    let mut packages = Vec::new();
    for item in list {
        let item_desc = text(item, "item_desc");
        if item_desc.is_empty() {
            return Err((10060008, "商品描述 item_desc 字段不能为空"));
        }
        if item_desc.chars().count() > 120 {
            return Err((10060009, "商品描述 item_desc 字段太长"));
        }
        let (tracking_no, express_company) = (text(item, "tracking_no"), text(item, "express_company"));
        if logistics_type == 1 {
            if tracking_no.is_empty() {
                return Err((268485226, "物流单号不能为空"));
            }
            if express_company.is_empty() {
                return Err((268485227, "物流公司编码不能为空"));
            }
        }
        if tracking_no.len() > 128 {
            return Err((10060026, "物流单号太长"));
        }
        if express_company.len() > 128 {
            return Err((10060025, "物流公司编码太长"));
        }
        let mut package =
            json!({ "tracking_no": tracking_no, "express_company": express_company, "goods_desc": item_desc });
        if item["contact"].is_object() {
            package["contact"] = item["contact"].clone();
        }
        packages.push(package);
    }
    if !req["upload_time"].as_str().is_some_and(is_rfc3339) {
        return Err((268485216, "上传时间非法，请按照 RFC 3339 格式填写"));
    }
    let Some(openid) = payer["openid"].as_str().filter(|o| !o.is_empty()) else {
        return Err((47001, "data format error"));
    };
    let shipment = Shipment {
        logistics_type,
        delivery_mode,
        finished,
        finish_count: 0,
        reshipped: false,
        shipped_at: 0,
        list: packages,
        reminded: false,
        confirmed: false,
        settled: false,
    };
    Ok((key, shipment, openid))
}

/// `POST /wxa/sec/order/upload_shipping_info?access_token=`.
pub async fn upload_shipping_info(State(state): State<Shared>, Query(params): Params, body: Bytes) -> Response {
    let req = match begin_json(&state, &params, "upload_shipping_info", &body).await {
        Ok(req) => req,
        Err(response) => return response,
    };
    let (key, mut shipment, openid) = match parse_upload(&req) {
        Ok(parsed) => parsed,
        Err((errcode, errmsg)) => return wx_error(errcode, errmsg),
    };
    let mut sim = state.lock().unwrap();
    let Some(order) = payment(&sim, &key) else {
        return wx_error(10060001, "支付单不存在");
    };
    if order.openid != openid {
        return wx_error(10060031, "该笔支付单不属于 openid 所指定的用户");
    }
    if matches!(order_state(&sim, &order), 3..=5) {
        return wx_error(10060004, "支付单处于不可发货的状态");
    }
    let now = sim.now();
    let previous = sim.shipping.shipments.get(transaction_id(&order));
    // Shipping a payment again once it is shipped, or changing its modes, is the one re-shipment.
    let reship = previous.is_some_and(|p| {
        p.finished || p.logistics_type != shipment.logistics_type || p.delivery_mode != shipment.delivery_mode
    });
    if reship && previous.is_some_and(|p| p.reshipped) {
        return wx_error(10060003, "支付单已使用重新发货机会");
    }
    let previous_count = previous.map_or(0, |p| p.finish_count);
    shipment.reshipped = reship || previous.is_some_and(|p| p.reshipped);
    shipment.reminded = previous.is_some_and(|p| p.reminded);
    shipment.finish_count = previous_count + u32::from(shipment.finished);
    shipment.shipped_at = now;
    for package in &mut shipment.list {
        package["upload_time"] = json!(now);
    }
    sim.shipping
        .shipments
        .insert(transaction_id(&order).to_owned(), shipment);
    ok()
}

/// `POST /wxa/sec/order/get_order?access_token=` `{transaction_id | merchant_id + merchant_trade_no}`.
pub async fn get_order(State(state): State<Shared>, Query(params): Params, body: Bytes) -> Response {
    let req = match begin_json(&state, &params, "get_shipping_order", &body).await {
        Ok(req) => req,
        Err(response) => return response,
    };
    let Some(key) = Key::of_query(&req) else {
        return wx_error(47001, "data format error");
    };
    let mut sim = state.lock().unwrap();
    crate::refund::settle_due_in_background(&mut sim);
    let Some(order) = payment(&sim, &key) else {
        return wx_error(10060001, "支付单不存在");
    };
    let shipment = sim.shipping.shipments.get(transaction_id(&order));
    let shipping = json!({
        "delivery_mode": shipment.map_or(0, |s| s.delivery_mode),
        "logistics_type": shipment.map_or(0, |s| s.logistics_type),
        "finish_shipping": shipment.is_some_and(|s| s.finished),
        "goods_desc": "",
        "finish_shipping_count": shipment.map_or(0, |s| s.finish_count),
        "shipping_list": shipment.map_or_else(Vec::new, |s| s.list.clone()),
    });
    Json(json!({
        "errcode": 0,
        "errmsg": "ok",
        "order": {
            "transaction_id": order.transaction_id, "merchant_id": order.mchid, "sub_merchant_id": "",
            "merchant_trade_no": order.out_trade_no, "description": order.description,
            "paid_amount": order.total, "openid": order.openid, "trade_create_time": order.created_at,
            "pay_time": order.paid_at, "order_state": order_state(&sim, &order), "in_complaint": false,
            "shipping": shipping,
        }
    }))
    .into_response()
}

/// `POST /wxa/sec/order/notify_confirm_receive?access_token=` `{transaction_id | merchant_id +
/// merchant_trade_no, received_time}`: reminds the user to confirm receipt of an express
/// shipment, once. The user confirms with `/__sim/shipping/confirm-receive`.
pub async fn notify_confirm_receive(State(state): State<Shared>, Query(params): Params, body: Bytes) -> Response {
    let req = match begin_json(&state, &params, "notify_confirm_receive", &body).await {
        Ok(req) => req,
        Err(response) => return response,
    };
    let (Some(key), Some(received_time)) = (Key::of_query(&req), req["received_time"].as_i64()) else {
        return wx_error(47001, "data format error");
    };
    let mut sim = state.lock().unwrap();
    let Some(order) = payment(&sim, &key) else {
        return wx_error(10060001, "支付单不存在");
    };
    let shipped = order_state(&sim, &order) == 2;
    let Some(shipment) = sim
        .shipping
        .shipments
        .get_mut(transaction_id(&order))
        .filter(|_| shipped)
    else {
        return wx_error(10060028, "支付单不是已发货状态");
    };
    if shipment.logistics_type != 1 {
        return wx_error(10060032, "只有物流快递发货时允许提醒用户确认收货");
    }
    if received_time < shipment.shipped_at {
        return wx_error(10060029, "签收时间非法");
    }
    if shipment.reminded {
        return wx_error(10060030, "支付单已使用提醒收货机会");
    }
    shipment.reminded = true;
    ok()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmBody {
    transaction_id: String,
    /// Also settle the funds (order_state 4).
    #[serde(default)]
    settle: bool,
}

/// `POST /__sim/shipping/confirm-receive`: the user confirms receipt of a shipped payment.
pub async fn confirm_receive(State(state): State<Shared>, Json(body): Json<ConfirmBody>) -> Response {
    let mut sim = state.lock().unwrap();
    let Some(shipment) = sim.shipping.shipments.get_mut(&body.transaction_id) else {
        return admin_error(
            StatusCode::NOT_FOUND,
            "no shipping info was uploaded for this transaction_id",
        );
    };
    if !shipment.finished {
        return admin_error(StatusCode::CONFLICT, "the payment is not fully shipped");
    }
    shipment.confirmed = true;
    shipment.settled |= body.settle;
    let order = sim.pay.order_by_transaction_id(&body.transaction_id).cloned();
    let state = order.map(|o| order_state(&sim, &o));
    Json(json!({ "order_state": state })).into_response()
}
