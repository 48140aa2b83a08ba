//! `POST /pay/notify`: WeChat Pay's payment notifications (no login token: WeChat calls it).
//!
//! APIv3 (JSON): the signature over `timestamp\nnonce\nbody\n` is checked on the raw body with the
//! platform key named by `Wechatpay-Serial`; stale timestamps and `WECHATPAY/SIGNTEST/` probes are
//! refused; the AES-256-GCM resource is decrypted with the APIv3 key; appid, mchid, the order and
//! its amount are checked; the order is marked paid with a conditional write, so any number of
//! deliveries, concurrent or not, change it once. 204 on success, `{"code":"FAIL","message"}`
//! with a 4xx/5xx otherwise. APIv2 (XML): the same checks with the v2 sign, and the XML reply.

use lambda_http::http::{HeaderValue, Method, StatusCode, header};
use lambda_http::{Body, Request, Response};
use serde::Deserialize;

use crate::AppState;
use crate::pay::Merchant;
use crate::pay::orders::MarkPaid;
use crate::pay::v2;
use crate::pay::v3::{self, SignedHeaders};
use crate::session::now_unix;

/// A refusal, answered in the dialect of the notification.
struct Fail {
    status: StatusCode,
    message: String,
}

fn fail(status: StatusCode, message: impl Into<String>) -> Fail {
    Fail {
        status,
        message: message.into(),
    }
}

pub async fn handle(state: &AppState, req: Request) -> Response<Body> {
    let body: &[u8] = match req.body() {
        Body::Text(text) => text.as_bytes(),
        Body::Binary(bytes) => bytes,
        _ => &[],
    };
    let is_xml = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'<');
    let result = if req.method() != Method::POST {
        Err(fail(
            StatusCode::METHOD_NOT_ALLOWED,
            "WeChat Pay notifications are POSTed",
        ))
    } else if is_xml {
        notify_v2(state, body).await
    } else {
        notify_v3(state, &req, body).await
    };
    match result {
        Ok(()) if is_xml => xml_reply(StatusCode::OK, "SUCCESS", "OK"),
        Ok(()) => {
            let mut response = Response::new(Body::Empty);
            *response.status_mut() = StatusCode::NO_CONTENT;
            response
        }
        Err(f) => {
            if f.status.is_server_error() {
                tracing::error!(status = f.status.as_u16(), message = %f.message, "payment notification failed");
            } else {
                tracing::warn!(status = f.status.as_u16(), message = %f.message, "payment notification refused");
            }
            if is_xml {
                xml_reply(f.status, "FAIL", &f.message)
            } else {
                crate::http::json_response(f.status, &serde_json::json!({ "code": "FAIL", "message": f.message }))
            }
        }
    }
}

fn xml_reply(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let fields = [("return_code", code), ("return_msg", message)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let mut response = Response::new(Body::Text(v2::to_xml(&fields.collect())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/xml; charset=utf-8"),
    );
    response
}

async fn merchant_of(state: &AppState) -> Result<std::sync::Arc<crate::secrets::AppSecrets>, Fail> {
    let secrets = state.secrets.get().await.map_err(|e| {
        fail(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot read the merchant keys: {e}"),
        )
    })?;
    secrets
        .merchant()
        .map_err(|e| fail(StatusCode::INTERNAL_SERVER_ERROR, format!("WeChat Pay: {e}")))?;
    Ok(secrets)
}

#[derive(Deserialize)]
struct Envelope {
    event_type: String,
    resource: Resource,
}

#[derive(Deserialize)]
struct Resource {
    algorithm: String,
    ciphertext: String,
    #[serde(default)]
    associated_data: String,
    nonce: String,
}

#[derive(Deserialize)]
struct Transaction {
    appid: String,
    mchid: String,
    out_trade_no: String,
    transaction_id: String,
    trade_state: String,
    amount: Amount,
    #[serde(default)]
    payer: Option<Payer>,
}

#[derive(Deserialize)]
struct Amount {
    total: u64,
}

#[derive(Deserialize)]
struct Payer {
    openid: String,
}

async fn notify_v3(state: &AppState, req: &Request, body: &[u8]) -> Result<(), Fail> {
    let secrets = merchant_of(state).await?;
    let merchant = secrets.merchant().expect("checked by merchant_of");
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let signed = SignedHeaders {
        timestamp: header("wechatpay-timestamp"),
        nonce: header("wechatpay-nonce"),
        signature: header("wechatpay-signature"),
        serial: header("wechatpay-serial"),
    };
    v3::verify_signed(&signed, body, merchant.platform_keys(), now_unix())
        .map_err(|e| fail(StatusCode::UNAUTHORIZED, e.to_string()))?;
    let envelope: Envelope =
        serde_json::from_slice(body).map_err(|e| fail(StatusCode::BAD_REQUEST, format!("not a notification: {e}")))?;
    if envelope.event_type != "TRANSACTION.SUCCESS" {
        tracing::info!(event_type = %envelope.event_type, "notification acknowledged without action");
        return Ok(());
    }
    if envelope.resource.algorithm != "AEAD_AES_256_GCM" {
        return Err(fail(StatusCode::BAD_REQUEST, "the resource is not AEAD_AES_256_GCM"));
    }
    let apiv3_key = merchant.apiv3_key.as_ref().ok_or_else(|| {
        fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            "WeChat Pay: the secret has no wechatpay.apiv3_key",
        )
    })?;
    let r = &envelope.resource;
    let plain = v3::decrypt_resource(apiv3_key, &r.nonce, &r.associated_data, &r.ciphertext).ok_or_else(|| {
        fail(
            StatusCode::BAD_REQUEST,
            "the resource does not decrypt with the APIv3 key",
        )
    })?;
    let tx: Transaction = serde_json::from_slice(&plain).map_err(|e| {
        fail(
            StatusCode::BAD_REQUEST,
            format!("the transaction is not the expected JSON: {e}"),
        )
    })?;
    if tx.trade_state != "SUCCESS" {
        return Ok(());
    }
    settle(
        state,
        merchant,
        &tx.appid,
        &tx.mchid,
        &tx.out_trade_no,
        &tx.transaction_id,
        tx.amount.total,
        tx.payer.as_ref().map(|p| p.openid.as_str()),
    )
    .await
}

async fn notify_v2(state: &AppState, body: &[u8]) -> Result<(), Fail> {
    let text = std::str::from_utf8(body).map_err(|_| fail(StatusCode::BAD_REQUEST, "the XML is not UTF-8"))?;
    let fields = v2::from_xml(text).ok_or_else(|| fail(StatusCode::BAD_REQUEST, "not a WeChat Pay XML document"))?;
    let get = |k: &str| fields.get(k).map(String::as_str).unwrap_or_default();
    match get("return_code") {
        "SUCCESS" => {}
        "FAIL" => return Ok(()), // a communication failure report: nothing to record
        _ => {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                "not a WeChat Pay notification: no return_code",
            ));
        }
    }
    let secrets = merchant_of(state).await?;
    let merchant = secrets.merchant().expect("checked by merchant_of");
    let key = merchant.apiv2_key.as_ref().ok_or_else(|| {
        fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            "WeChat Pay: the secret has no wechatpay.apiv2_key",
        )
    })?;
    if !v2::verify(&fields, key) {
        return Err(fail(StatusCode::UNAUTHORIZED, "the sign does not match"));
    }
    if get("result_code") != "SUCCESS" {
        return Ok(());
    }
    let total: u64 = get("total_fee")
        .parse()
        .map_err(|_| fail(StatusCode::BAD_REQUEST, "total_fee is not a number"))?;
    let openid = Some(get("openid")).filter(|o| !o.is_empty());
    settle(
        state,
        merchant,
        get("appid"),
        get("mch_id"),
        get("out_trade_no"),
        get("transaction_id"),
        total,
        openid,
    )
    .await
}

/// The checks both dialects share, then the one conditional write.
#[allow(clippy::too_many_arguments)]
async fn settle(
    state: &AppState,
    merchant: &Merchant,
    appid: &str,
    mchid: &str,
    out_trade_no: &str,
    transaction_id: &str,
    total: u64,
    payer_openid: Option<&str>,
) -> Result<(), Fail> {
    if appid != state.config.app_id {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            format!("appid {appid} is not this app's"),
        ));
    }
    if mchid != merchant.mchid {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            format!("mchid {mchid} is not this merchant's"),
        ));
    }
    let unavailable = |e: crate::session::StoreError| fail(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
    let order = state
        .orders
        .get(out_trade_no)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| fail(StatusCode::NOT_FOUND, format!("no order {out_trade_no}")))?;
    if total != order.amount_total {
        tracing::error!(
            out_trade_no,
            paid = total,
            expected = order.amount_total,
            "amount mismatch in a payment notification"
        );
        return Err(fail(
            StatusCode::BAD_REQUEST,
            format!("amount {total} does not match the order's {}", order.amount_total),
        ));
    }
    if payer_openid.is_some_and(|openid| openid != order.openid) {
        return Err(fail(StatusCode::BAD_REQUEST, "the payer is not the order's user"));
    }
    match state
        .orders
        .mark_paid(out_trade_no, transaction_id, now_unix())
        .await
        .map_err(unavailable)?
    {
        MarkPaid::Changed => tracing::info!(out_trade_no, transaction_id, "order paid"),
        MarkPaid::AlreadyPaid => tracing::info!(out_trade_no, "repeated notification: order already paid"),
        MarkPaid::NotPayable(status) => {
            // The money moved; retries cannot change that. The merchant must refund or reopen.
            tracing::error!(out_trade_no, status = %status, "payment notified for an order that is not unpaid");
        }
    }
    Ok(())
}
