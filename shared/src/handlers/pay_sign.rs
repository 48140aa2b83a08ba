//! `POST /pay/sign {"out_trade_no"}` → exactly what `wx.requestPayment` takes:
//! `{timeStamp, nonceStr, package, signType, paySign}`.
//!
//! The order (and its amount) comes from the orders table, put there by the merchant's system;
//! it must be the caller's and unpaid. A prepay_id younger than [`PREPAY_REUSE_SECS`] is reused;
//! otherwise the order is placed with WeChat Pay (APIv3 by default, APIv2 with `PAY_API=v2`) and
//! the prepay_id stored with a conditional write, so concurrent calls agree on one.
//!
//! `POST /transfers/{out_bill_no}/confirm` → what `wx.requestMerchantTransfer` takes,
//! `{mchId, appId, package}`, for a merchant transfer to the caller that waits for them to
//! confirm (`crate::transfer::confirm_package`).

use crate::at_init::AtInit;
use std::collections::BTreeMap;

use lambda_http::http::StatusCode;
use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};
use serde::{Deserialize, Serialize};

use crate::api::request::parse_json_body;
use crate::api::response::json_response;
use crate::clock::now_unix;
use crate::config::{Parts, PayApi};
use crate::function::{Answer, Entry, Function, Route};
use crate::pay::{Merchant, v2, v3};
use crate::random::nonce;
use crate::state::Payments;
use crate::store::orders::{Order, PAID, UNPAID};
use crate::store::sessions::Session;
use crate::{ApiError, AppState, authed};

pub const FUNCTION: Function = Function {
    name: "pay-sign",
    parts: Parts {
        sessions: true,
        orders: true,
        pay: true,
        pay_orders: true,
        transfers: true,
        budget: true,
        ..Parts::NONE
    },
    // Placing an order signs with the merchant's keys and calls WeChat Pay.
    at_init: AtInit {
        dynamodb: true,
        merchant_keys: true,
        wechat_pay: true,
        ..AtInit::NOTHING
    },
    entry: Entry::Routes(&[
        Route::post("/pay/sign", authed!(pay_sign)),
        Route::get("/pay/orders/{out_trade_no}", authed!(order_state)),
        Route::post("/transfers/{out_bill_no}/confirm", authed!(confirm_transfer)),
    ]),
};

/// What the mini-program shows after `wx.requestPayment` returns.
#[derive(Serialize)]
struct OrderState<'a> {
    out_trade_no: &'a str,
    status: &'a str,
    amount_total: u64,
    description: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    success_time: Option<&'a str>,
    refunded_total: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    shipping_state: Option<&'a str>,
}

/// `GET /pay/orders/{out_trade_no}`: the caller's own order, brought up to date from WeChat Pay
/// once when it is unpaid with a prepay_id (the client returns from `wx.requestPayment` before
/// the notification may have arrived). Another user's order is answered as unknown.
async fn order_state(state: &AppState, session: &Session, req: &Request) -> Answer {
    let out_trade_no = crate::function::path_parameter(req, "out_trade_no").unwrap_or_default();
    if !is_out_trade_no(&out_trade_no) {
        return Err(ApiError::bad_request(
            "invalid_request",
            "out_trade_no must be 6 to 32 of [0-9A-Za-z_-|*]",
        ));
    }
    let pay = state.pay()?;
    let order = pay
        .orders
        .get(&out_trade_no)
        .await?
        .filter(|o| o.openid == session.openid)
        .ok_or_else(crate::shop::order_not_found)?;
    // The caller's polling is answered from the table between two questions to WeChat Pay.
    let due = crate::shop::needs_refresh(&order)
        && pay
            .orders
            .claim_query(&order.out_trade_no, now_unix(), ORDER_QUERY_INTERVAL_SECS)
            .await?;
    let order = if due {
        // Each question spends the merchant's query quota: each user gets a share.
        state.spend_budget("order-refresh", &session.openid).await?;
        crate::shop::refresh_order(state, pay, order).await?
    } else {
        order
    };
    Ok(json_response(
        StatusCode::OK,
        &OrderState {
            out_trade_no: &order.out_trade_no,
            status: &order.status,
            amount_total: order.amount_total,
            description: &order.description,
            success_time: order.success_time.as_deref(),
            refunded_total: order.refunded_total,
            shipping_state: order.shipping_state.as_deref(),
        },
    ))
}

/// A caller's `GET /pay/orders/{no}` asks WeChat Pay about one order at most this often.
pub const ORDER_QUERY_INTERVAL_SECS: u64 = 5;

/// What `wx.requestMerchantTransfer` takes (with the user's openId, which the page has).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RequestMerchantTransfer<'a> {
    mch_id: &'a str,
    app_id: &'a str,
    package: &'a str,
}

/// `POST /transfers/{out_bill_no}/confirm`: the caller's own bill waiting for their
/// confirmation. Another user's bill and an unknown one are answered alike (404); one in any
/// other state is a 409 naming why (`transfer_not_ready`, `transfer_already_confirmed`,
/// `transfer_cancelled`, `transfer_failed`).
async fn confirm_transfer(state: &AppState, session: &Session, req: &Request) -> Answer {
    // From API Gateway's pathParameters, else the segment before `/confirm`.
    let out_bill_no = req
        .path_parameters_ref()
        .and_then(|p| p.first("out_bill_no"))
        .or_else(|| {
            let path = req.uri().path().trim_end_matches('/');
            path.strip_suffix("/confirm")?.rsplit('/').next()
        })
        .unwrap_or_default()
        .to_owned();
    if !((5..=32).contains(&out_bill_no.len()) && out_bill_no.bytes().all(|b| b.is_ascii_alphanumeric())) {
        return Err(ApiError::bad_request(
            "invalid_request",
            "out_bill_no must be 5 to 32 of [0-9A-Za-z]",
        ));
    }
    let pay = state.pay()?;
    let app_id = &state.config.app_id;
    let (_, package) = crate::transfer::confirm_package(pay, app_id, &session.openid, &out_bill_no).await?;
    let merchant = pay.merchant.get().await?;
    Ok(json_response(
        StatusCode::OK,
        &RequestMerchantTransfer {
            mch_id: &merchant.mchid,
            app_id,
            package: &package,
        },
    ))
}

/// APIv2 `body` is at most 128 bytes (APIv3 `description` 127 characters).
const V2_BODY_MAX_BYTES: usize = 128;
const V3_DESCRIPTION_MAX_CHARS: usize = 127;

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

async fn pay_sign(state: &AppState, session: &Session, req: &Request) -> Answer {
    let body: PaySignRequest = parse_json_body(req)?;
    if !is_out_trade_no(&body.out_trade_no) {
        return Err(ApiError::bad_request(
            "invalid_request",
            "out_trade_no must be 6 to 32 of [0-9A-Za-z_-|*]",
        ));
    }
    let pay = state.pay()?;
    let order = payable_order(pay, session, &body.out_trade_no).await?;
    let merchant = pay.merchant.get().await?;
    let api = pay.settings.api;
    let prepay_id = match fresh_prepay_id(&order, api) {
        Some(id) => id.to_owned(),
        None => place_order(state, pay, req, &merchant, &order).await?,
    };

    let time_stamp = now_unix().to_string();
    let nonce_str = nonce();
    let package = format!("prepay_id={prepay_id}");
    let app_id = &state.config.app_id;
    let (sign_type, pay_sign) = match api {
        PayApi::V3 => {
            let key = merchant
                .signing_key
                .as_ref()
                .ok_or_else(|| ApiError::misconfigured("WeChat Pay: the pay secret has no merchant_private_key"))?;
            ("RSA", v3::pay_sign(key, app_id, &time_stamp, &nonce_str, &package))
        }
        PayApi::V2 => {
            let sign_type = pay.settings.v2_sign_type;
            let key = merchant
                .apiv2_key
                .as_ref()
                .ok_or_else(|| ApiError::misconfigured("WeChat Pay: the pay secret has no apiv2_key"))?;
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

async fn payable_order(pay: &Payments, session: &Session, out_trade_no: &str) -> Result<Order, ApiError> {
    // Another user's order is answered as unknown: a caller learns nothing of others' orders.
    let order = pay
        .orders
        .get(out_trade_no)
        .await?
        .filter(|o| o.openid == session.openid)
        .ok_or_else(crate::shop::order_not_found)?;
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

fn fresh_prepay_id(order: &Order, api: PayApi) -> Option<&str> {
    let created = order.prepay_created_at?;
    let fresh =
        created.saturating_add(PREPAY_REUSE_SECS) > now_unix() && order.pay_api.as_deref() == Some(api.as_str());
    fresh.then_some(order.prepay_id.as_deref()?)
}

/// Places the order with WeChat Pay and stores the prepay_id; when another call stored one
/// first, uses that one.
async fn place_order(
    state: &AppState,
    pay: &Payments,
    req: &Request,
    merchant: &Merchant,
    order: &Order,
) -> Result<String, ApiError> {
    let (client, settings) = pay
        .client
        .as_ref()
        .ok_or_else(|| ApiError::misconfigured("this function does not declare the part pay_orders"))?;
    let notify_url = settings.notify_url.as_str();
    let app_id = state.config.app_id.as_str();
    let api = pay.settings.api;
    let prepay_id = match api {
        PayApi::V3 => {
            // Pending before the call: if its answer is lost, the reconciler still finds the
            // order (WeChat Pay may have it) and closes it there once it is abandoned.
            if order.placed_at.is_none() && !pay.orders.mark_placed(&order.out_trade_no, now_unix()).await? {
                return Err(order_changed());
            }
            let body = serde_json::json!({
                "appid": app_id,
                "mchid": merchant.mchid,
                "description": truncate_chars(&order.description, V3_DESCRIPTION_MAX_CHARS),
                "out_trade_no": order.out_trade_no,
                "notify_url": notify_url,
                "amount": { "total": order.amount_total, "currency": "CNY" },
                "payer": { "openid": order.openid },
            });
            // What the back office gave the order: WeChat Pay closes it itself at time_expire,
            // and gives attach back in the notification.
            let mut body = body;
            if let Some(expire) = &order.time_expire {
                body["time_expire"] = serde_json::json!(expire);
            }
            if let Some(attach) = &order.attach {
                body["attach"] = serde_json::json!(attach);
            }
            client.jsapi_prepay(merchant, &body).await?
        }
        PayApi::V2 => {
            let client_ip = source_ip(req);
            let fields: BTreeMap<String, String> = [
                ("appid", app_id),
                ("mch_id", &merchant.mchid),
                ("nonce_str", &nonce()),
                ("body", truncate_bytes(&order.description, V2_BODY_MAX_BYTES)),
                ("out_trade_no", &order.out_trade_no),
                ("total_fee", &order.amount_total.to_string()),
                ("spbill_create_ip", client_ip),
                ("notify_url", notify_url),
                ("trade_type", "JSAPI"),
                ("openid", &order.openid),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
            client
                .unified_order(merchant, fields, pay.settings.v2_sign_type)
                .await?
        }
    };
    if pay
        .orders
        .save_prepay(order, &prepay_id, now_unix(), api.as_str())
        .await?
    {
        return Ok(prepay_id);
    }
    // A concurrent call stored its prepay_id first: everyone pays with that one.
    let current = pay.orders.get(&order.out_trade_no).await?;
    current
        .as_ref()
        .filter(|o| o.status == UNPAID)
        .and_then(|o| fresh_prepay_id(o, api))
        .map(str::to_owned)
        .ok_or_else(order_changed)
}

fn order_changed() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "order_changed",
        "the order changed meanwhile: try again",
    )
}

/// The payer's IP as API Gateway saw the connection (`requestContext.http.sourceIp`), never a
/// header the client could write.
fn source_ip(req: &Request) -> &str {
    let ip = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context.http.source_ip.as_deref(),
        _ => None,
    };
    ip.filter(|ip| !ip.is_empty()).unwrap_or("127.0.0.1")
}

fn truncate_chars(text: &str, max_chars: usize) -> &str {
    text.char_indices().nth(max_chars).map_or(text, |(i, _)| &text[..i])
}

/// At most `max_bytes` of `text`, cut on a character boundary (a Chinese character is 3 bytes).
fn truncate_bytes(text: &str, max_bytes: usize) -> &str {
    let mut end = text.len().min(max_bytes);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payer_ip_is_the_connections_not_a_header() {
        let event = r#"{"version": "2.0", "routeKey": "POST /pay/sign", "rawPath": "/pay/sign",
            "headers": {"x-forwarded-for": "198.51.100.99, 10.0.0.1"},
            "requestContext": {"http": {"method": "POST", "path": "/pay/sign", "sourceIp": "203.0.113.7"},
                               "routeKey": "POST /pay/sign", "requestId": "r", "timeEpoch": 0},
            "isBase64Encoded": false}"#;
        let request = lambda_http::request::from_str(event).unwrap();
        assert_eq!(source_ip(&request), "203.0.113.7");
    }

    #[test]
    fn descriptions_are_cut_on_character_boundaries() {
        let tea = "一杯好茶".repeat(20); // 80 characters, 240 bytes
        let body = truncate_bytes(&tea, V2_BODY_MAX_BYTES);
        assert_eq!(body.len(), 126, "42 whole characters");
        assert!(tea.starts_with(body));
        assert_eq!(truncate_bytes("tea", V2_BODY_MAX_BYTES), "tea");
        assert_eq!(truncate_chars(&tea, V3_DESCRIPTION_MAX_CHARS), tea);
        assert_eq!(truncate_chars(&tea, 3), "一杯好");
    }
}
