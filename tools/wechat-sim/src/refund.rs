//! WeChat Pay refunds (APIv3): apply and query, idempotent on `out_refund_no`, never more than the
//! order's total and at most 50 per order. A refund is accepted as PROCESSING and settles
//! (SUCCESS) after [`SETTLE_AFTER_SECS`] on the simulator's clock, or when a test settles it with
//! another outcome; then its notification goes to the refund's notify_url like a payment's.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Shared;
use crate::notify::{Event, Label, MODES, Outgoing, PayNotification, send, send_in_background, v3_envelope};
use crate::pay::{admin_error, v3_begin, v3_begin_json};
use crate::state::{SimState, random_text, rfc3339_cst};

/// A refund to the user's balance settles within minutes at WeChat Pay; here after a minute on the
/// simulator's clock (tests move the clock rather than wait).
pub const SETTLE_AFTER_SECS: i64 = 60;
/// WeChat Pay allows at most 50 refunds of one order.
pub const MAX_REFUNDS_PER_ORDER: usize = 50;

#[derive(Clone, Copy, PartialEq)]
enum Status {
    Processing,
    Success,
    Closed,
    Abnormal,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Processing => "PROCESSING",
            Status::Success => "SUCCESS",
            Status::Closed => "CLOSED",
            Status::Abnormal => "ABNORMAL",
        }
    }

    /// The outcomes a test may settle a refund with.
    fn outcome(text: &str) -> Option<Status> {
        match text {
            "SUCCESS" => Some(Status::Success),
            "CLOSED" => Some(Status::Closed),
            "ABNORMAL" => Some(Status::Abnormal),
            _ => None,
        }
    }

    /// The notification's `event_type` and `summary`.
    fn event(self) -> (&'static str, &'static str) {
        match self {
            Status::Success | Status::Processing => ("REFUND.SUCCESS", "退款成功"),
            Status::Closed => ("REFUND.CLOSED", "退款关闭"),
            Status::Abnormal => ("REFUND.ABNORMAL", "退款异常"),
        }
    }
}

#[derive(Clone)]
struct SimRefund {
    refund_id: String,
    out_refund_no: String,
    out_trade_no: String,
    transaction_id: String,
    mchid: String,
    notify_url: Option<String>,
    refund: u64,
    total: u64,
    status: Status,
    created_at: i64,
    settles_at: i64,
    success_time: Option<i64>,
}

#[derive(Default)]
pub struct RefundState {
    /// By out_refund_no.
    refunds: HashMap<String, SimRefund>,
}

impl RefundState {
    fn of_order<'a>(&'a self, out_trade_no: &'a str) -> impl Iterator<Item = &'a SimRefund> {
        self.refunds.values().filter(move |r| r.out_trade_no == out_trade_no)
    }

    /// Whether the order has a refund that is not closed (its trade_state is then REFUND).
    pub fn any_open(&self, out_trade_no: &str) -> bool {
        self.of_order(out_trade_no).any(|r| r.status != Status::Closed)
    }

    /// Every refund as the ledger lists it, by out_refund_no.
    pub fn ledger(&self) -> Vec<Value> {
        let mut refunds: Vec<&SimRefund> = self.refunds.values().collect();
        refunds.sort_by(|a, b| a.out_refund_no.cmp(&b.out_refund_no));
        refunds
            .into_iter()
            .map(|r| {
                json!({
                    "out_refund_no": r.out_refund_no, "out_trade_no": r.out_trade_no,
                    "status": r.status.as_str(), "refund": r.refund, "refund_id": r.refund_id,
                })
            })
            .collect()
    }

    /// Whether refunds that succeeded add up to the order's whole amount.
    pub fn fully_refunded(&self, out_trade_no: &str, total: u64) -> bool {
        let refunded: u64 = self
            .of_order(out_trade_no)
            .filter(|r| r.status == Status::Success)
            .map(|r| r.refund)
            .sum();
        refunded >= total
    }
}

/// The refund object of the apply and query answers.
fn refund_json(r: &SimRefund) -> Value {
    let mut body = json!({
        "refund_id": r.refund_id, "out_refund_no": r.out_refund_no, "transaction_id": r.transaction_id,
        "out_trade_no": r.out_trade_no, "channel": "ORIGINAL", "user_received_account": "支付用户零钱",
        "create_time": rfc3339_cst(r.created_at), "status": r.status.as_str(), "funds_account": "AVAILABLE",
        "amount": {
            "total": r.total, "refund": r.refund, "from": [], "payer_total": r.total, "payer_refund": r.refund,
            "settlement_refund": r.refund, "settlement_total": r.total, "discount_refund": 0, "currency": "CNY",
            "refund_fee": 0,
        },
        "promotion_detail": [],
    });
    if let Some(time) = r.success_time {
        body["success_time"] = json!(rfc3339_cst(time));
    }
    body
}

/// The notification of `refund`, as it is now, shaped by `mode`; none without a notify_url.
fn notification(sim: &SimState, r: &SimRefund, mode: &str, copies: u32) -> Option<PayNotification> {
    let url = r.notify_url.clone()?;
    let mut resource = json!({
        "mchid": r.mchid, "out_trade_no": r.out_trade_no, "transaction_id": r.transaction_id,
        "out_refund_no": r.out_refund_no, "refund_id": r.refund_id, "refund_status": r.status.as_str(),
        "user_received_account": "支付用户零钱",
        "amount": { "total": r.total, "refund": r.refund, "payer_total": r.total, "payer_refund": r.refund },
    });
    if let Some(time) = r.success_time {
        resource["success_time"] = json!(rfc3339_cst(time));
    }
    let (event_type, summary) = r.status.event();
    let event = Event {
        event_type,
        summary,
        original_type: "refund",
        resource: &resource,
    };
    let apiv3_key = &sim.pay.merchant()?.apiv3_key;
    let (headers, body) = v3_envelope(apiv3_key, &event, sim.now(), mode, sim.pay.signer.serial());
    Some(PayNotification {
        label: Label {
            kind: "refund",
            key: r.out_refund_no.clone(),
            state: r.status.as_str().to_owned(),
        },
        outgoing: Outgoing { url, headers, body },
        copies,
        mode: mode.to_owned(),
    })
}

/// A refund settled on the clock, and its notification.
pub struct Settled {
    out_refund_no: String,
    status: Status,
    notification: Option<PayNotification>,
}

/// Settles every PROCESSING refund whose time has come (SUCCESS), with their notifications.
pub fn settle_due(sim: &mut SimState) -> Vec<Settled> {
    let now = sim.now();
    let mut settled = Vec::new();
    for refund in sim.refunds.refunds.values_mut() {
        if refund.status == Status::Processing && refund.settles_at <= now {
            refund.status = Status::Success;
            refund.success_time = Some(now);
            settled.push(refund.clone());
        }
    }
    settled
        .iter()
        .map(|r| Settled {
            out_refund_no: r.out_refund_no.clone(),
            status: r.status,
            notification: notification(sim, r, "normal", 1),
        })
        .collect()
}

/// While answering a call: settles what is due, its notifications sent (or held) without holding
/// up the answer.
pub fn settle_due_in_background(sim: &mut SimState) {
    let settled = settle_due(sim);
    let notifications = settled.into_iter().filter_map(|s| s.notification).collect();
    send_in_background(sim, notifications);
}

/// After the clock moved: settles what is due and delivers the notifications, answering what
/// each refund's notification got.
pub async fn settle_after_clock_moved(state: &Shared) -> Vec<Value> {
    let settled = settle_due(&mut state.lock().unwrap());
    let mut answers = Vec::new();
    for s in settled {
        let deliveries = match s.notification {
            Some(n) => send(state, n).await,
            None => Vec::new(),
        };
        answers
            .push(json!({ "out_refund_no": s.out_refund_no, "status": s.status.as_str(), "deliveries": deliveries }));
    }
    answers
}

/// A PARAM_ERROR unless `out_refund_no` is 1 to 64 of `[0-9A-Za-z_-|*@]`.
fn valid_refund_no(no: &str) -> bool {
    (1..=64).contains(&no.len()) && no.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-|*@".contains(&b))
}

/// `POST /v3/refund/domestic/refunds`.
pub async fn apply(State(state): State<Shared>, request: Parts, body: Bytes) -> Response {
    let (call, req) = match v3_begin_json(&state, "refund", &request, &body).await {
        Ok(begun) => begun,
        Err(response) => return response,
    };
    let param_error = |message: &str| call.error(StatusCode::BAD_REQUEST, "PARAM_ERROR", message);
    let text = |k: &str| req[k].as_str().unwrap_or_default().to_owned();
    let out_refund_no = text("out_refund_no");
    if !valid_refund_no(&out_refund_no) {
        return param_error("out_refund_no 为 1 到 64 位的数字、大小写字母或 _-|*@");
    }
    let (out_trade_no, transaction_id) = (text("out_trade_no"), text("transaction_id"));
    if out_trade_no.is_empty() && transaction_id.is_empty() {
        return param_error("transaction_id 和 out_trade_no 必须二选一");
    }
    let amount = &req["amount"];
    let (refund, total) = (
        amount["refund"].as_u64().unwrap_or(0),
        amount["total"].as_u64().unwrap_or(0),
    );
    if refund == 0 || total == 0 || amount["currency"].as_str() != Some("CNY") {
        return param_error("amount.refund、amount.total 须为正整数，amount.currency 须为 CNY");
    }
    if req
        .get("reason")
        .is_some_and(|r| r.as_str().is_none_or(|r| r.chars().count() > 80))
    {
        return param_error("reason 不超过 80 个字符");
    }
    let notify_url = match req.get("notify_url") {
        None => None,
        Some(Value::String(url)) if !url.is_empty() && !url.contains('?') => Some(url.clone()),
        Some(_) => return param_error("notify_url 须为不带参数的 URL"),
    };
    let mut sim = state.lock().unwrap();
    settle_due_in_background(&mut sim);
    if let Some(existing) = sim.refunds.refunds.get(&out_refund_no) {
        // The same out_refund_no refunds once: a retry answers the same refund.
        let same_order = existing.out_trade_no == out_trade_no || existing.transaction_id == transaction_id;
        return if same_order && existing.refund == refund && existing.total == total {
            call.reply(StatusCode::OK, &refund_json(existing))
        } else {
            call.error(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "订单金额或退款金额与之前请求不一致，请核实后再试",
            )
        };
    }
    let order = if transaction_id.is_empty() {
        sim.pay.order(&out_trade_no)
    } else {
        sim.pay.order_by_transaction_id(&transaction_id)
    };
    let Some(order) = order
        .filter(|o| o.transaction_id.is_some() && o.mchid == call.merchant_id())
        .cloned()
    else {
        return call.error(StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", "订单不存在");
    };
    if total != order.total {
        return call.error(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "amount.total 与原订单金额不一致",
        );
    }
    if sim.refunds.of_order(&order.out_trade_no).count() >= MAX_REFUNDS_PER_ORDER {
        return call.error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", "该订单的退款次数已达上限");
    }
    let committed: u64 = sim
        .refunds
        .of_order(&order.out_trade_no)
        .filter(|r| r.status != Status::Closed)
        .map(|r| r.refund)
        .sum();
    if committed >= order.total {
        return call.error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", "订单已全额退款");
    }
    if refund > order.total - committed {
        return call.error(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "申请退款金额超过订单可退金额",
        );
    }
    let now = call.now;
    let created = SimRefund {
        refund_id: format!("50{}{}", now, random_text(12)),
        out_refund_no: out_refund_no.clone(),
        out_trade_no: order.out_trade_no.clone(),
        transaction_id: order.transaction_id.clone().unwrap_or_default(),
        mchid: order.mchid.clone(),
        notify_url,
        refund,
        total,
        status: Status::Processing,
        created_at: now,
        settles_at: now + SETTLE_AFTER_SECS,
        success_time: None,
    };
    let answer = refund_json(&created);
    sim.refunds.refunds.insert(out_refund_no, created);
    call.reply(StatusCode::OK, &answer)
}

/// `GET /v3/refund/domestic/refunds/{out_refund_no}`: the refund object, or 404
/// RESOURCE_NOT_EXISTS.
pub async fn query(State(state): State<Shared>, Path(out_refund_no): Path<String>, request: Parts) -> Response {
    let call = match v3_begin(&state, "refund_query", &request, b"").await {
        Ok(call) => call,
        Err(response) => return response,
    };
    let mut sim = state.lock().unwrap();
    settle_due_in_background(&mut sim);
    match sim
        .refunds
        .refunds
        .get(&out_refund_no)
        .filter(|r| r.mchid == call.merchant_id())
    {
        Some(refund) => call.reply(StatusCode::OK, &refund_json(refund)),
        None => call.error(StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", "退款单不存在"),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettleBody {
    out_refund_no: String,
    /// SUCCESS (default), ABNORMAL or CLOSED.
    #[serde(default)]
    status: Option<String>,
    /// As `/__sim/pay/complete`: normal | tampered | stale | signtest | wrong_key | certificate | drop
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    copies: Option<u32>,
}

/// `POST /__sim/pay/refund/settle`: WeChat Pay finishes a refund now, with the given outcome, and
/// notifies (again, if it was settled before with the same outcome). SUCCESS and CLOSED are final;
/// an ABNORMAL refund may still succeed or close.
pub async fn settle(State(state): State<Shared>, Json(body): Json<SettleBody>) -> Response {
    let mode = body.mode.unwrap_or_else(|| "normal".into());
    if !MODES.contains(&mode.as_str()) {
        return admin_error(StatusCode::BAD_REQUEST, "unknown mode");
    }
    let Some(outcome) = Status::outcome(body.status.as_deref().unwrap_or("SUCCESS")) else {
        return admin_error(StatusCode::BAD_REQUEST, "status is SUCCESS, ABNORMAL or CLOSED");
    };
    let (refund, pending) = {
        let mut sim = state.lock().unwrap();
        let now = sim.now();
        let Some(refund) = sim.refunds.refunds.get_mut(&body.out_refund_no) else {
            return admin_error(StatusCode::NOT_FOUND, "unknown out_refund_no");
        };
        let is_final = matches!(refund.status, Status::Success | Status::Closed);
        if is_final && refund.status != outcome {
            return admin_error(StatusCode::CONFLICT, "the refund already has a final status");
        }
        if refund.status != outcome {
            refund.status = outcome;
            refund.success_time = (outcome == Status::Success).then_some(now);
        }
        let refund = refund.clone();
        let pending = notification(&sim, &refund, &mode, body.copies.unwrap_or(1));
        (refund, pending)
    };
    let deliveries = match pending {
        Some(n) => send(&state, n).await,
        None => Vec::new(),
    };
    Json(json!({ "refund": refund_json(&refund), "deliveries": deliveries })).into_response()
}
