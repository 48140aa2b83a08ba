//! `POST /pay/notify`: WeChat Pay's payment and refund notifications (no login token: WeChat
//! calls it; refunds are applied for with this same `notify_url`).
//!
//! APIv3 (JSON): the signature over `timestamp\nnonce\nbody\n` is checked on the raw body with the
//! platform key named by `Wechatpay-Serial`, before anything in the body is read; stale
//! timestamps and `WECHATPAY/SIGNTEST/` probes are refused; the AES-256-GCM resource is decrypted
//! with the APIv3 key; appid and mchid are checked; then one conditional write records the
//! payment (amount and payer are part of its condition), so any number of deliveries, concurrent
//! or not, change the order once. A payment the order cannot take (closed, paid twice, another
//! amount or payer) is kept on the order for the merchant, logged as `PAYMENT NEEDS ATTENTION`,
//! and acknowledged: WeChat's retries cannot change it. 204 on success,
//! `{"code":"FAIL","message"}` with a 4xx/5xx otherwise, saying nothing about our internals;
//! the detail goes to the log. APIv2 (XML): the same with the v2 sign, of the configured sign
//! type only, and the XML reply. Refund notifications (`REFUND.SUCCESS`, `REFUND.ABNORMAL`,
//! `REFUND.CLOSED`) are verified and decrypted the same way and recorded with the refund's
//! conditional write: a hundred copies change it once. Merchant transfer notifications
//! (`MCHTRANSFER.BILL.FINISHED`, resource `mch_payment`) are verified and decrypted the same way
//! (signature first, over the raw bytes) and recorded with the bill's conditional write
//! (`crate::transfer::record_notification`).

use crate::at_init::AtInit;
use lambda_http::http::{HeaderValue, StatusCode, header};
use lambda_http::{Body, Request, Response};
use serde::Deserialize;

use crate::clock::now_unix;
use crate::config::Parts;
use crate::function::{Answer, Entry, Function, Route};
use crate::pay::client::{RefundState, Transaction};
use crate::pay::{Merchant, v2, v3};
use crate::shop::{self, PaymentRefused};
use crate::state::Payments;
use crate::store::orders::{Payment, Settled};
use crate::store::refunds::Change;
use crate::{AppState, public};

pub const FUNCTION: Function = Function {
    name: "pay-notify",
    parts: Parts {
        orders: true,
        pay: true,
        refunds: true,
        transfers: true,
        ..Parts::NONE
    },
    // Every notification is verified with the merchant's keys.
    at_init: AtInit {
        dynamodb: true,
        merchant_keys: true,
        ..AtInit::NOTHING
    },
    entry: Entry::Routes(&[Route::post("/pay/notify", public!(notify))]),
};

/// A refusal, answered in the dialect of the notification: `message` is all WeChat Pay (or
/// whoever posted) hears; `detail` goes to the log.
struct Fail {
    status: StatusCode,
    message: &'static str,
    detail: String,
}

fn fail(status: StatusCode, message: &'static str, detail: impl std::fmt::Display) -> Fail {
    Fail {
        status,
        message,
        detail: detail.to_string(),
    }
}

/// Our side cannot process notifications now (store, secret): WeChat Pay retries.
fn unavailable(detail: impl std::fmt::Display) -> Fail {
    fail(StatusCode::SERVICE_UNAVAILABLE, "try again later", detail)
}

fn refused(detail: impl std::fmt::Display) -> Fail {
    fail(StatusCode::BAD_REQUEST, "the notification was refused", detail)
}

async fn notify(state: &AppState, req: &Request) -> Answer {
    let body: &[u8] = match req.body() {
        Body::Text(text) => text.as_bytes(),
        Body::Binary(bytes) => bytes,
        _ => &[],
    };
    let is_xml = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'<');
    let result = match state.pay() {
        Err(e) => Err(fail(StatusCode::INTERNAL_SERVER_ERROR, "try again later", e)),
        Ok(pay) if is_xml => notify_v2(state, pay, body).await,
        Ok(pay) => notify_v3(state, pay, req, body).await,
    };
    Ok(match result {
        Ok(()) if is_xml => xml_reply(StatusCode::OK, "SUCCESS", "OK"),
        Ok(()) => {
            let mut response = Response::new(Body::Empty);
            *response.status_mut() = StatusCode::NO_CONTENT;
            response
        }
        Err(f) => {
            if f.status.is_server_error() {
                tracing::error!(status = f.status.as_u16(), detail = %f.detail, "payment notification failed");
            } else {
                tracing::warn!(status = f.status.as_u16(), detail = %f.detail, "payment notification refused");
                crate::metrics::count(crate::metrics::Metric::NotificationsRejected);
            }
            if is_xml {
                xml_reply(f.status, "FAIL", f.message)
            } else {
                crate::api::response::json_response(
                    f.status,
                    &serde_json::json!({ "code": "FAIL", "message": f.message }),
                )
            }
        }
    })
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

async fn notify_v3(state: &AppState, pay: &Payments, req: &Request, body: &[u8]) -> Result<(), Fail> {
    let merchant = pay.merchant.get().await.map_err(unavailable)?;
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let signed = v3::SignedHeaders {
        timestamp: header("wechatpay-timestamp"),
        nonce: header("wechatpay-nonce"),
        signature: header("wechatpay-signature"),
        serial: header("wechatpay-serial"),
    };
    v3::verify_signed(&signed, body, merchant.platform_keys(), now_unix())
        .map_err(|e| fail(StatusCode::UNAUTHORIZED, "the signature does not verify", e))?;
    let envelope: Envelope = serde_json::from_slice(body).map_err(|e| refused(format!("not a notification: {e}")))?;
    let refund = envelope.event_type.starts_with("REFUND.");
    let transfer = envelope.event_type == "MCHTRANSFER.BILL.FINISHED";
    if envelope.event_type != "TRANSACTION.SUCCESS" && !refund && !transfer {
        tracing::info!(event_type = %envelope.event_type, "notification acknowledged without action");
        return Ok(());
    }
    if envelope.resource.algorithm != "AEAD_AES_256_GCM" {
        return Err(refused("the resource is not AEAD_AES_256_GCM"));
    }
    let apiv3_key = merchant.apiv3_key.as_ref().ok_or_else(|| {
        fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            "try again later",
            "WeChat Pay: the pay secret has no apiv3_key",
        )
    })?;
    let r = &envelope.resource;
    let plain = v3::decrypt_resource(apiv3_key, &r.nonce, &r.associated_data, &r.ciphertext)
        .ok_or_else(|| refused("the resource does not decrypt with the APIv3 key"))?;
    if refund {
        return record_refund(pay, &merchant, &plain).await;
    }
    if transfer {
        return record_transfer(pay, &merchant, &plain).await;
    }
    let tx: Transaction = serde_json::from_slice(&plain)
        .map_err(|e| refused(format!("the transaction is not the expected JSON: {e}")))?;
    if tx.trade_state != "SUCCESS" {
        return Ok(());
    }
    let payment = Payment {
        transaction_id: tx.transaction_id.as_deref().unwrap_or_default(),
        amount_total: tx.amount.as_ref().map_or(0, |a| a.total),
        payer_openid: tx.payer.as_ref().and_then(|p| p.openid.as_deref()),
        success_time: tx.success_time.as_deref(),
        paid_at: now_unix(),
    };
    let recorded = shop::record_payment(state, pay, &merchant, &tx.appid, &tx.mchid, &tx.out_trade_no, &payment).await;
    answered(recorded, &tx.out_trade_no)
}

/// A refund notification's resource: the refund's new state, once per state.
async fn record_refund(pay: &Payments, merchant: &Merchant, plain: &[u8]) -> Result<(), Fail> {
    #[derive(Deserialize)]
    struct RefundResource {
        mchid: String,
        #[serde(flatten)]
        state: RefundState,
    }
    let resource: RefundResource =
        serde_json::from_slice(plain).map_err(|e| refused(format!("the refund is not the expected JSON: {e}")))?;
    if resource.mchid != merchant.mchid {
        return Err(refused(format!("mchid {} is not this merchant's", resource.mchid)));
    }
    let refunds = pay
        .refunds()
        .map_err(|e| fail(StatusCode::INTERNAL_SERVER_ERROR, "try again later", e))?;
    let out_refund_no = resource.state.out_refund_no.as_str();
    let Some(refund) = refunds.get(out_refund_no).await.map_err(unavailable)? else {
        // Made elsewhere (the merchant platform): nothing of ours to change, and retries would not help.
        tracing::warn!(
            out_refund_no,
            "refund notification for a refund this server did not make"
        );
        return Ok(());
    };
    let state = &resource.state;
    let change = refunds
        .record(
            &refund,
            &state.status,
            state.refund_id.as_deref(),
            state.success_time.as_deref(),
            now_unix(),
        )
        .await
        .map_err(unavailable)?;
    match change {
        Change::Changed => tracing::info!(out_refund_no, status = %state.status, "refund notified"),
        Change::Unchanged => tracing::info!(out_refund_no, "repeated refund notification"),
        // Logged and counted by the store; acknowledged, as a retry cannot change it.
        Change::NeedsAttention { .. } => {}
    }
    if state.status == crate::store::refunds::ABNORMAL {
        // The money did not reach the user (a closed card, say): someone must act.
        tracing::error!(out_refund_no, "REFUND NEEDS ATTENTION");
    }
    Ok(())
}

/// A transfer notification's resource: the bill's final state, recorded once.
async fn record_transfer(pay: &Payments, merchant: &Merchant, plain: &[u8]) -> Result<(), Fail> {
    let bill: crate::pay::transfer::TransferBill =
        serde_json::from_slice(plain).map_err(|e| refused(format!("the transfer is not the expected JSON: {e}")))?;
    match crate::transfer::record_notification(pay, merchant, &bill).await {
        Ok(_) => Ok(()),
        Err(crate::transfer::Refusal::NotOurs(why)) => Err(refused(why)),
        Err(crate::transfer::Refusal::Unavailable(e)) => Err(unavailable(e)),
    }
}

async fn notify_v2(state: &AppState, pay: &Payments, body: &[u8]) -> Result<(), Fail> {
    let text = std::str::from_utf8(body).map_err(|_| refused("the XML is not UTF-8"))?;
    let fields = v2::from_xml(text).ok_or_else(|| refused("not a WeChat Pay XML document"))?;
    let get = |k: &str| fields.get(k).map(String::as_str).unwrap_or_default();
    match get("return_code") {
        "SUCCESS" => {}
        "FAIL" => return Ok(()), // a communication failure report: nothing to record
        _ => return Err(refused("not a WeChat Pay notification: no return_code")),
    }
    let merchant = pay.merchant.get().await.map_err(unavailable)?;
    let key = merchant.apiv2_key.as_ref().ok_or_else(|| {
        fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            "try again later",
            "WeChat Pay: the pay secret has no apiv2_key",
        )
    })?;
    if !v2::verify(&fields, key, pay.settings.v2_sign_type) {
        return Err(fail(
            StatusCode::UNAUTHORIZED,
            "the signature does not verify",
            format!(
                "the v2 sign does not match, or is not {} (PAY_V2_SIGN_TYPE)",
                pay.settings.v2_sign_type.as_str()
            ),
        ));
    }
    if get("result_code") != "SUCCESS" {
        return Ok(());
    }
    let total: u64 = get("total_fee")
        .parse()
        .map_err(|_| refused("total_fee is not a number"))?;
    let payment = Payment {
        transaction_id: get("transaction_id"),
        amount_total: total,
        payer_openid: Some(get("openid")).filter(|o| !o.is_empty()),
        success_time: Some(get("time_end")).filter(|t| !t.is_empty()),
        paid_at: now_unix(),
    };
    let recorded = shop::record_payment(
        state,
        pay,
        &merchant,
        get("appid"),
        get("mch_id"),
        get("out_trade_no"),
        &payment,
    )
    .await;
    answered(recorded, get("out_trade_no"))
}

/// The answer to a payment recorded by `shop::record_payment` (the one conditional write both
/// dialects and the queries share).
fn answered(recorded: Result<Settled, PaymentRefused>, out_trade_no: &str) -> Result<(), Fail> {
    match recorded {
        Ok(Settled::UnknownOrder) => Err(fail(
            StatusCode::NOT_FOUND,
            "the notification was refused",
            format!("no order {out_trade_no}"),
        )),
        Ok(_) => Ok(()),
        Err(PaymentRefused::NotOurs(why)) => Err(refused(why)),
        Err(PaymentRefused::Store(e)) => Err(unavailable(e)),
    }
}
