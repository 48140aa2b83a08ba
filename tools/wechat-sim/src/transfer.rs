//! Merchant transfers to a user's wallet (商家转账, the 2025 version with user confirmation), as
//! `../shared/reference/wechatpay.md` describes them: the merchant creates a bill, the user
//! confirms it in the mini-program (`wx.requestMerchantTransfer`, played by
//! `POST /__sim/pay/transfer/confirm`), and WeChat Pay notifies each final state
//! (`MCHTRANSFER.BILL.FINISHED`).
//!
//! States here: WAIT_USER_CONFIRM on creation (ACCEPTED and PROCESSING pass at once), then
//! SUCCESS when the user confirms (TRANSFERING passes at once), FAIL when a test says so
//! (`POST /__sim/pay/transfer/fail`), CANCELLED when the merchant cancels (answered CANCELING) or
//! when the user has not confirmed within 24 hours on the simulator's clock.
//!
//! Limits chosen: 10 fen (0.10 CNY) to 2,000,000 fen (20,000 CNY) a bill; `user_name` required
//! from 200,000 fen (2,000 CNY), encrypted with the platform key (RSA-OAEP, SHA-1 and MGF1-SHA-1)
//! and named by a `Wechatpay-Serial` header; scenes 1000 (cash marketing) and 1005 (commission).

use std::collections::HashMap;

use aws_lc_rs::rsa::{OAEP_SHA1_MGF1SHA1, OaepPrivateDecryptingKey, PrivateDecryptingKey};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Shared;
use crate::crypto::random_bytes;
use crate::notify::{Event, Label, Outgoing, PayNotification, send, send_in_background, v3_envelope};
use crate::pay::{
    PLATFORM_ALTERNATE_SERIAL, PLATFORM_CERT_SERIAL, PLATFORM_PUBLIC_KEY_ID, V3Call, admin_error, platform_pkcs8,
    v3_begin, v3_begin_json,
};
use crate::state::{SimState, random_text, rfc3339_cst};

/// The smallest transfer accepted, in fen.
pub const MIN_AMOUNT: u64 = 10;
/// The largest transfer accepted, in fen.
pub const MAX_AMOUNT: u64 = 2_000_000;
/// From this amount (fen) the payee's real name must be given.
pub const NAME_REQUIRED_FROM: u64 = 200_000;
/// A bill the user has not confirmed within this long is cancelled.
pub const CONFIRM_WITHIN_SECS: i64 = 24 * 3600;
/// The transfer scenes this merchant has opened.
const SCENES: [&str; 2] = ["1000", "1005"];

#[derive(Clone, Copy, PartialEq, Debug)]
enum BillState {
    WaitUserConfirm,
    Success,
    Fail,
    Cancelled,
}

impl BillState {
    fn as_str(self) -> &'static str {
        match self {
            BillState::WaitUserConfirm => "WAIT_USER_CONFIRM",
            BillState::Success => "SUCCESS",
            BillState::Fail => "FAIL",
            BillState::Cancelled => "CANCELLED",
        }
    }
}

/// What the merchant asked for; the same out_bill_no must come with the same terms again.
#[derive(Clone, PartialEq)]
struct Terms {
    appid: String,
    openid: String,
    amount: u64,
    remark: String,
    scene_id: String,
    scene_report: Value,
    perception: Option<String>,
    /// Decrypted: each encryption of the same name differs.
    user_name: Option<String>,
    notify_url: Option<String>,
}

#[derive(Clone)]
struct Bill {
    out_bill_no: String,
    transfer_bill_no: String,
    mchid: String,
    terms: Terms,
    /// What `wx.requestMerchantTransfer` is given to confirm this bill.
    package_info: String,
    state: BillState,
    fail_reason: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl Bill {
    fn create_json(&self) -> Value {
        let mut body = json!({
            "out_bill_no": self.out_bill_no, "transfer_bill_no": self.transfer_bill_no,
            "create_time": rfc3339_cst(self.created_at), "state": self.state.as_str(),
        });
        // Only a bill waiting for the user has something to confirm.
        if self.state == BillState::WaitUserConfirm {
            body["package_info"] = json!(self.package_info);
        }
        body
    }

    fn query_json(&self) -> Value {
        let mut body = json!({
            "mch_id": self.mchid, "out_bill_no": self.out_bill_no, "transfer_bill_no": self.transfer_bill_no,
            "appid": self.terms.appid, "state": self.state.as_str(), "transfer_amount": self.terms.amount,
            "transfer_remark": self.terms.remark, "openid": self.terms.openid,
            "create_time": rfc3339_cst(self.created_at), "update_time": rfc3339_cst(self.updated_at),
        });
        if let Some(reason) = &self.fail_reason {
            body["fail_reason"] = json!(reason);
        }
        body
    }

    /// The plaintext of the MCHTRANSFER.BILL.FINISHED notification.
    fn notification_json(&self) -> Value {
        let mut body = json!({
            "out_bill_no": self.out_bill_no, "transfer_bill_no": self.transfer_bill_no,
            "state": self.state.as_str(), "mch_id": self.mchid, "transfer_amount": self.terms.amount,
            "openid": self.terms.openid, "create_time": rfc3339_cst(self.created_at),
            "update_time": rfc3339_cst(self.updated_at),
        });
        if let Some(reason) = &self.fail_reason {
            body["fail_reason"] = json!(reason);
        }
        body
    }
}

#[derive(Default)]
pub struct TransferState {
    /// By out_bill_no.
    bills: HashMap<String, Bill>,
}

impl TransferState {
    /// Every bill as the ledger lists it, by out_bill_no.
    pub fn ledger(&self) -> Vec<Value> {
        let mut bills: Vec<&Bill> = self.bills.values().collect();
        bills.sort_by(|a, b| a.out_bill_no.cmp(&b.out_bill_no));
        bills
            .into_iter()
            .map(|b| {
                json!({
                    "out_bill_no": b.out_bill_no, "transfer_bill_no": b.transfer_bill_no,
                    "state": b.state.as_str(), "transfer_amount": b.terms.amount, "openid": b.terms.openid,
                })
            })
            .collect()
    }
}

/// The notification of a bill that reached a final state; none without a notify_url.
fn notification(sim: &SimState, bill: &Bill) -> Option<PayNotification> {
    let url = bill.terms.notify_url.clone()?;
    let resource = bill.notification_json();
    let event = Event {
        event_type: "MCHTRANSFER.BILL.FINISHED",
        summary: "商家转账单据终态通知",
        original_type: "mch_payment",
        resource: &resource,
    };
    let apiv3_key = &sim.pay.merchant()?.apiv3_key;
    let (headers, body) = v3_envelope(apiv3_key, &event, sim.now(), "normal", sim.pay.signer.serial());
    Some(PayNotification {
        label: Label {
            kind: "transfer",
            key: bill.out_bill_no.clone(),
            state: bill.state.as_str().to_owned(),
        },
        outgoing: Outgoing { url, headers, body },
        copies: 1,
        mode: "normal".into(),
    })
}

/// Moves a bill to a final state; its notification.
fn finish(sim: &mut SimState, out_bill_no: &str, state: BillState, reason: Option<String>) -> Option<PayNotification> {
    let now = sim.now();
    let bill = sim.transfers.bills.get_mut(out_bill_no)?;
    bill.state = state;
    bill.fail_reason = reason;
    bill.updated_at = now;
    let bill = bill.clone();
    notification(sim, &bill)
}

/// Cancels the bills left unconfirmed for 24 hours; their notifications.
fn expire_due(sim: &mut SimState) -> Vec<PayNotification> {
    let now = sim.now();
    let expired: Vec<String> = sim
        .transfers
        .bills
        .values()
        .filter(|b| b.state == BillState::WaitUserConfirm && b.created_at + CONFIRM_WITHIN_SECS <= now)
        .map(|b| b.out_bill_no.clone())
        .collect();
    expired
        .iter()
        .filter_map(|no| finish(sim, no, BillState::Cancelled, None))
        .collect()
}

/// While answering a call: expires what is due, its notifications sent (or held) in the background.
pub fn expire_due_in_background(sim: &mut SimState) {
    let notifications = expire_due(sim);
    send_in_background(sim, notifications);
}

/// After the clock moved: cancels the bills left unconfirmed and delivers their notifications;
/// the out_bill_no of each with what its notification got.
pub async fn expire_after_clock_moved(state: &Shared) -> Vec<Value> {
    let notifications = expire_due(&mut state.lock().unwrap());
    let mut answers = Vec::new();
    for n in notifications {
        let out_bill_no = n.label.key.clone();
        answers.push(json!({ "out_bill_no": out_bill_no, "deliveries": send(state, n).await }));
    }
    answers
}

/// `n` random decimal digits.
fn digits(n: usize) -> String {
    random_bytes::<32>()
        .iter()
        .take(n)
        .map(|b| char::from(b'0' + b % 10))
        .collect()
}

/// `user_name` decrypted with the platform key, as WeChat Pay reads it.
fn decrypt_user_name(encrypted: &str) -> Option<String> {
    let ciphertext = STANDARD.decode(encrypted).ok()?;
    let key = PrivateDecryptingKey::from_pkcs8(&platform_pkcs8()).ok()?;
    let key = OaepPrivateDecryptingKey::new(key).ok()?;
    let mut plaintext = vec![0; key.min_output_size()];
    let name = key
        .decrypt(&OAEP_SHA1_MGF1SHA1, &ciphertext, &mut plaintext, None)
        .ok()?;
    String::from_utf8(name.to_vec()).ok().filter(|n| !n.is_empty())
}

/// A refusal: status, code and message.
type Refusal = (StatusCode, &'static str, String);

fn param_error(message: &str) -> Refusal {
    (StatusCode::BAD_REQUEST, "PARAM_ERROR", message.to_owned())
}

/// The terms of a create request, checked as WeChat Pay checks them.
fn terms(req: &Value, headers: &HeaderMap) -> Result<Terms, Refusal> {
    let text = |k: &str| req[k].as_str().unwrap_or_default().to_owned();
    let optional_text = |k: &str| match req.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(param_error(&format!("{k} 须为非空字符串"))),
    };
    let (appid, openid, scene_id, remark) = (
        text("appid"),
        text("openid"),
        text("transfer_scene_id"),
        text("transfer_remark"),
    );
    if appid.is_empty() || openid.is_empty() {
        return Err(param_error("appid 和 openid 为必填参数"));
    }
    if scene_id.is_empty() {
        return Err(param_error("transfer_scene_id 为必填参数"));
    }
    if !SCENES.contains(&scene_id.as_str()) {
        return Err((StatusCode::FORBIDDEN, "NO_AUTH", "商户号未开通该转账场景".into()));
    }
    let amount = req["transfer_amount"].as_u64().unwrap_or(0);
    if !(MIN_AMOUNT..=MAX_AMOUNT).contains(&amount) {
        return Err(param_error("transfer_amount 须为 10 到 2000000 分"));
    }
    if remark.is_empty() || remark.chars().count() > 32 {
        return Err(param_error("transfer_remark 为 1 到 32 个字符"));
    }
    let notify_url = optional_text("notify_url")?;
    if notify_url.as_ref().is_some_and(|u| u.contains('?')) {
        return Err(param_error("notify_url 须为不带参数的 URL"));
    }
    let scene_report = req["transfer_scene_report_infos"].clone();
    let report_ok = scene_report.as_array().is_some_and(|infos| {
        !infos.is_empty()
            && infos.iter().all(|i| {
                ["info_type", "info_content"]
                    .iter()
                    .all(|k| i[k].as_str().is_some_and(|v| !v.is_empty()))
            })
    });
    if !report_ok {
        return Err(param_error(
            "transfer_scene_report_infos 须为非空的 {info_type, info_content} 数组",
        ));
    }
    let perception = optional_text("user_recv_perception")?;
    let user_name = match optional_text("user_name")? {
        Some(encrypted) => {
            let serial = headers
                .get("wechatpay-serial")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if ![PLATFORM_PUBLIC_KEY_ID, PLATFORM_CERT_SERIAL, PLATFORM_ALTERNATE_SERIAL].contains(&serial) {
                return Err(param_error(
                    "加密敏感信息时须以 Wechatpay-Serial 指明微信支付公钥ID或平台证书序列号",
                ));
            }
            Some(decrypt_user_name(&encrypted).ok_or_else(|| param_error("user_name 解密失败"))?)
        }
        None if amount >= NAME_REQUIRED_FROM => {
            return Err(param_error("转账金额 >= 2000 元时须填写收款用户姓名 user_name"));
        }
        None => None,
    };
    Ok(Terms {
        appid,
        openid,
        amount,
        remark,
        scene_id,
        scene_report,
        perception,
        user_name,
        notify_url,
    })
}

/// `POST /v3/fund-app/mch-transfer/transfer-bills`.
pub async fn create(State(state): State<Shared>, request: Parts, body: Bytes) -> Response {
    let (call, req) = match v3_begin_json(&state, "transfer_create", &request, &body).await {
        Ok(begun) => begun,
        Err(response) => return response,
    };
    let out_bill_no = req["out_bill_no"].as_str().unwrap_or_default().to_owned();
    if !(5..=32).contains(&out_bill_no.len()) || !out_bill_no.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return call.error(
            StatusCode::BAD_REQUEST,
            "PARAM_ERROR",
            "out_bill_no 为 5 到 32 位数字或字母",
        );
    }
    let terms = match terms(&req, &request.headers) {
        Ok(terms) => terms,
        Err((status, code, message)) => return call.error(status, code, &message),
    };
    let mut sim = state.lock().unwrap();
    expire_due_in_background(&mut sim);
    if terms.appid != sim.config.app_id {
        return call.error(StatusCode::BAD_REQUEST, "APPID_MCHID_NOT_MATCH", "appid 与商户号不匹配");
    }
    if let Some(existing) = sim.transfers.bills.get(&out_bill_no) {
        // A retry of the same bill answers it as it is now; another bill under its number is refused.
        return if existing.terms == terms && existing.mchid == call.merchant_id() {
            call.reply(StatusCode::OK, &existing.create_json())
        } else {
            call.error(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "商户单号已存在，且请求参数与原单不一致",
            )
        };
    }
    let bill = Bill {
        out_bill_no: out_bill_no.clone(),
        transfer_bill_no: format!("1330{}{}", call.now, digits(20)),
        mchid: call.merchant_id().to_owned(),
        terms,
        package_info: format!("ABBQO+oYAAABAAAAAAB{}", random_text(40)),
        state: BillState::WaitUserConfirm,
        fail_reason: None,
        created_at: call.now,
        updated_at: call.now,
    };
    let answer = bill.create_json();
    sim.transfers.bills.insert(out_bill_no, bill);
    call.reply(StatusCode::OK, &answer)
}

/// The two query URLs: by the merchant's number or by WeChat Pay's.
enum BillNo {
    Merchant(String),
    WeChat(String),
}

async fn query(state: Shared, request: Parts, number: BillNo) -> Response {
    let call = match v3_begin(&state, "transfer_query", &request, b"").await {
        Ok(call) => call,
        Err(response) => return response,
    };
    let mut sim = state.lock().unwrap();
    expire_due_in_background(&mut sim);
    let bill = match &number {
        BillNo::Merchant(no) => sim.transfers.bills.get(no),
        BillNo::WeChat(no) => sim.transfers.bills.values().find(|b| &b.transfer_bill_no == no),
    };
    match bill.filter(|b| b.mchid == call.merchant_id()) {
        Some(bill) => call.reply(StatusCode::OK, &bill.query_json()),
        None => not_found(&call),
    }
}

fn not_found(call: &V3Call) -> Response {
    call.error(StatusCode::NOT_FOUND, "NOT_FOUND", "转账单据不存在")
}

/// `GET /v3/fund-app/mch-transfer/transfer-bills/out-bill-no/{out_bill_no}`.
pub async fn query_by_out_bill_no(
    State(state): State<Shared>,
    Path(out_bill_no): Path<String>,
    request: Parts,
) -> Response {
    query(state, request, BillNo::Merchant(out_bill_no)).await
}

/// `GET /v3/fund-app/mch-transfer/transfer-bills/transfer-bill-no/{transfer_bill_no}`.
pub async fn query_by_transfer_bill_no(
    State(state): State<Shared>,
    Path(transfer_bill_no): Path<String>,
    request: Parts,
) -> Response {
    query(state, request, BillNo::WeChat(transfer_bill_no)).await
}

/// `POST /v3/fund-app/mch-transfer/transfer-bills/out-bill-no/{out_bill_no}/cancel`: a bill the
/// user has not confirmed is cancelled (answered CANCELING, CANCELLED at once here, with its
/// notification); a cancelled one answers CANCELLED again; a finished one cannot be.
pub async fn cancel(
    State(state): State<Shared>,
    Path(out_bill_no): Path<String>,
    request: Parts,
    body: Bytes,
) -> Response {
    let call = match v3_begin(&state, "transfer_cancel", &request, &body).await {
        Ok(call) => call,
        Err(response) => return response,
    };
    let mut sim = state.lock().unwrap();
    expire_due_in_background(&mut sim);
    let Some(bill) = sim
        .transfers
        .bills
        .get(&out_bill_no)
        .filter(|b| b.mchid == call.merchant_id())
        .cloned()
    else {
        return not_found(&call);
    };
    let answer = |state: &str, updated_at: i64| {
        json!({
            "out_bill_no": bill.out_bill_no, "transfer_bill_no": bill.transfer_bill_no,
            "state": state, "update_time": rfc3339_cst(updated_at),
        })
    };
    match bill.state {
        BillState::WaitUserConfirm => {
            let notification = finish(&mut sim, &out_bill_no, BillState::Cancelled, None);
            send_in_background(&mut sim, notification.into_iter().collect());
            call.reply(StatusCode::OK, &answer("CANCELING", call.now))
        }
        BillState::Cancelled => call.reply(StatusCode::OK, &answer("CANCELLED", bill.updated_at)),
        BillState::Success | BillState::Fail => {
            call.error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", "转账单据已是终态，不可撤销")
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmBody {
    package: String,
    openid: String,
}

/// `POST /__sim/pay/transfer/confirm`: the user confirms the bill in
/// `wx.requestMerchantTransfer`; only the payee, only while it waits. SUCCESS and its notification.
pub async fn confirm(State(state): State<Shared>, Json(body): Json<ConfirmBody>) -> Response {
    let (bill, pending) = {
        let mut sim = state.lock().unwrap();
        expire_due_in_background(&mut sim);
        let Some(bill) = sim.transfers.bills.values().find(|b| b.package_info == body.package) else {
            return admin_error(StatusCode::NOT_FOUND, "unknown package");
        };
        if bill.terms.openid != body.openid {
            return admin_error(StatusCode::FORBIDDEN, "the bill is for another user");
        }
        if bill.state != BillState::WaitUserConfirm {
            return admin_error(StatusCode::CONFLICT, "the bill is not waiting for the user");
        }
        let out_bill_no = bill.out_bill_no.clone();
        let pending = finish(&mut sim, &out_bill_no, BillState::Success, None);
        (sim.transfers.bills[&out_bill_no].query_json(), pending)
    };
    let deliveries = match pending {
        Some(n) => send(&state, n).await,
        None => Vec::new(),
    };
    Json(json!({ "bill": bill, "deliveries": deliveries })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailBody {
    out_bill_no: String,
    #[serde(default = "payee_abnormal")]
    reason: String,
}

fn payee_abnormal() -> String {
    "PAYEE_ACCOUNT_ABNORMAL".into()
}

/// `POST /__sim/pay/transfer/fail`: WeChat Pay fails a bill not yet final (its `fail_reason`),
/// with its notification.
pub async fn fail(State(state): State<Shared>, Json(body): Json<FailBody>) -> Response {
    let (bill, pending) = {
        let mut sim = state.lock().unwrap();
        expire_due_in_background(&mut sim);
        let Some(bill) = sim.transfers.bills.get(&body.out_bill_no) else {
            return admin_error(StatusCode::NOT_FOUND, "unknown out_bill_no");
        };
        if bill.state != BillState::WaitUserConfirm {
            return admin_error(StatusCode::CONFLICT, "the bill already has a final state");
        }
        let pending = finish(&mut sim, &body.out_bill_no, BillState::Fail, Some(body.reason));
        (sim.transfers.bills[&body.out_bill_no].query_json(), pending)
    };
    let deliveries = match pending {
        Some(n) => send(&state, n).await,
        None => Vec::new(),
    };
    Json(json!({ "bill": bill, "deliveries": deliveries })).into_response()
}
