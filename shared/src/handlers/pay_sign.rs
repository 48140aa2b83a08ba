//! `POST /pay/sign {"out_trade_no"}` → exactly what `wx.requestPayment` takes:
//! `{timeStamp, nonceStr, package, signType, paySign}`.
//!
//! The order (and its amount) comes from the orders table, put there by the merchant's system;
//! it must be the caller's and unpaid. A prepay_id younger than [`PREPAY_REUSE_SECS`] is reused;
//! otherwise the order is placed with WeChat Pay (APIv3 by default, APIv2 with `PAY_API=v2`) and
//! the prepay_id stored with a conditional write, so concurrent calls agree on one.

use std::collections::BTreeMap;

use lambda_http::http::{Method, StatusCode, header};
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};

use crate::card::nonce;
use crate::config::PayApi;
use crate::http::{json_response, parse_json_body, require_method};
use crate::pay::orders::{Order, PAID, UNPAID};
use crate::pay::{Merchant, v2, v3};
use crate::session::{Session, now_unix};
use crate::{ApiError, AppState};

/// A prepay_id is valid for 2 hours; reuse it for 1 h 50 min so the payment sheet never opens
/// on an expired one.
pub const PREPAY_REUSE_SECS: u64 = 2 * 3600 - 600;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PaySignRequest {
    out_trade_no: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RequestPayment {
    time_stamp: String,
    nonce_str: String,
    package: String,
    sign_type: &'static str,
    pay_sign: String,
}

/// 6 to 32 of `[0-9A-Za-z_-|*]`, as WeChat Pay requires.
pub fn is_out_trade_no(s: &str) -> bool {
    (6..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-|*".contains(&b))
}

pub async fn handle(state: &AppState, req: Request) -> Response<Body> {
    super::respond(pay_sign(state, &req).await)
}

async fn pay_sign(state: &AppState, req: &Request) -> Result<Response<Body>, ApiError> {
    require_method(req, Method::POST)?;
    let session = state.authenticate(req).await?;
    let body: PaySignRequest = parse_json_body(req)?;
    if !is_out_trade_no(&body.out_trade_no) {
        return Err(ApiError::bad_request(
            "invalid_request",
            "out_trade_no must be 6 to 32 of [0-9A-Za-z_-|*]",
        ));
    }
    let order = payable_order(state, &session, &body.out_trade_no).await?;
    let secrets = state.secrets.get().await?;
    let merchant = secrets
        .merchant()
        .map_err(|e| ApiError::misconfigured(format!("WeChat Pay: {e}")))?;
    let api = match state.config.pay_api {
        PayApi::V3 => "v3",
        PayApi::V2(_) => "v2",
    };
    let prepay_id = match fresh_prepay_id(&order, api) {
        Some(id) => id.to_owned(),
        None => place_order(state, req, merchant, &order, api).await?,
    };

    let time_stamp = now_unix().to_string();
    let nonce_str = nonce();
    let package = format!("prepay_id={prepay_id}");
    let app_id = &state.config.app_id;
    let (sign_type, pay_sign) = match state.config.pay_api {
        PayApi::V3 => {
            let key = merchant.signing_key.as_ref().ok_or_else(|| {
                ApiError::misconfigured("WeChat Pay: the secret has no wechatpay.merchant_private_key")
            })?;
            ("RSA", v3::pay_sign(key, app_id, &time_stamp, &nonce_str, &package))
        }
        PayApi::V2(sign_type) => {
            let key = merchant
                .apiv2_key
                .as_ref()
                .ok_or_else(|| ApiError::misconfigured("WeChat Pay: the secret has no wechatpay.apiv2_key"))?;
            (
                sign_type.as_str(),
                v2::pay_sign(key, sign_type, app_id, &time_stamp, &nonce_str, &package),
            )
        }
    };
    Ok(json_response(
        StatusCode::OK,
        &RequestPayment {
            time_stamp,
            nonce_str,
            package,
            sign_type,
            pay_sign,
        },
    ))
}

async fn payable_order(state: &AppState, session: &Session, out_trade_no: &str) -> Result<Order, ApiError> {
    let order = state.orders.get(out_trade_no).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "order_not_found",
            "no order has this out_trade_no",
        )
    })?;
    if order.openid != session.openid {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "order_not_yours",
            "this order belongs to another user",
        ));
    }
    match order.status.as_str() {
        UNPAID => Ok(order),
        PAID => Err(ApiError::new(
            StatusCode::CONFLICT,
            "order_already_paid",
            "this order is already paid",
        )),
        other => Err(ApiError::new(
            StatusCode::CONFLICT,
            "order_not_payable",
            format!("this order's status is {other}, not {UNPAID}"),
        )),
    }
}

fn fresh_prepay_id<'a>(order: &'a Order, api: &str) -> Option<&'a str> {
    let created = order.prepay_created_at?;
    let fresh = created + PREPAY_REUSE_SECS > now_unix() && order.pay_api.as_deref() == Some(api);
    fresh.then_some(order.prepay_id.as_deref()?)
}

/// Places the order with WeChat Pay and stores the prepay_id; when another call stored one
/// first, uses that one.
async fn place_order(
    state: &AppState,
    req: &Request,
    merchant: &Merchant,
    order: &Order,
    api: &str,
) -> Result<String, ApiError> {
    let notify_url = notify_url(state, req)?;
    let app_id = state.config.app_id.as_str();
    let prepay_id = match state.config.pay_api {
        PayApi::V3 => {
            let body = serde_json::json!({
                "appid": app_id,
                "mchid": merchant.mchid,
                "description": truncate(&order.description, 127),
                "out_trade_no": order.out_trade_no,
                "notify_url": notify_url,
                "amount": { "total": order.amount_total, "currency": "CNY" },
                "payer": { "openid": order.openid },
            });
            state.pay.jsapi_prepay(merchant, &body).await?
        }
        PayApi::V2(sign_type) => {
            let client_ip = req
                .headers()
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .map(str::trim)
                .filter(|ip| !ip.is_empty())
                .unwrap_or("127.0.0.1");
            let fields: BTreeMap<String, String> = [
                ("appid", app_id),
                ("mch_id", &merchant.mchid),
                ("nonce_str", &nonce()),
                ("body", truncate(&order.description, 127)),
                ("out_trade_no", &order.out_trade_no),
                ("total_fee", &order.amount_total.to_string()),
                ("spbill_create_ip", client_ip),
                ("notify_url", &notify_url),
                ("trade_type", "JSAPI"),
                ("openid", &order.openid),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
            state.pay.unified_order(merchant, fields, sign_type).await?
        }
    };
    if state.orders.save_prepay(order, &prepay_id, now_unix(), api).await? {
        return Ok(prepay_id);
    }
    // A concurrent call stored its prepay_id first: everyone pays with that one.
    let current = state.orders.get(&order.out_trade_no).await?;
    current
        .as_ref()
        .filter(|o| o.status == UNPAID)
        .and_then(|o| fresh_prepay_id(o, api))
        .map(str::to_owned)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "order_changed",
                "the order changed meanwhile: try again",
            )
        })
}

fn notify_url(state: &AppState, req: &Request) -> Result<String, ApiError> {
    if let Some(url) = &state.config.pay_notify_url {
        return Ok(url.clone());
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| !h.is_empty());
    host.map(|h| format!("https://{h}/pay/notify"))
        .ok_or_else(|| ApiError::misconfigured("set PAY_NOTIFY_URL: the request has no Host to derive it from"))
}

fn truncate(text: &str, max_chars: usize) -> &str {
    text.char_indices().nth(max_chars).map_or(text, |(i, _)| &text[..i])
}
