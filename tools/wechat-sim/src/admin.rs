//! `/__sim/*`: the mini-program's side of the protocol and the test controls.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Shared;
use crate::api::rotate_session_key;
use crate::crypto::{encrypt as aes_encrypt, random_bytes, sorted_sha1};
use crate::state::{Code, Fault, PhoneCode, random_text};

fn bad_request(message: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": message.into() }))).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    openid: String,
    #[serde(default)]
    unionid: Option<String>,
    #[serde(default)]
    session_key: Option<String>,
}

/// `wx.login`: mints a single-use code for `openid` and rotates the user's session key.
pub async fn login(State(state): State<Shared>, Json(body): Json<LoginBody>) -> Response {
    if body.openid.is_empty() {
        return bad_request("openid must not be empty");
    }
    if let Some(key) = &body.session_key
        && STANDARD.decode(key).map(|k| k.len()) != Ok(16)
    {
        return bad_request("session_key must be base64 of 16 bytes");
    }
    let mut sim = state.lock().unwrap();
    rotate_session_key(&mut sim, &body.openid, body.session_key, body.unionid);
    let code = random_text(32);
    let issued_at = sim.now();
    if let Some(user) = sim.users.get_mut(&body.openid) {
        user.active_at = issued_at;
    }
    sim.codes.insert(
        code.clone(),
        Code {
            openid: body.openid,
            issued_at,
            used: false,
        },
    );
    Json(json!({ "code": code })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhoneCodeBody {
    /// Whose button it was; accepted for readability, as the real API does not return it.
    #[serde(default, rename = "openid")]
    _openid: Option<String>,
    #[serde(rename = "phoneNumber")]
    phone_number: String,
    #[serde(rename = "countryCode", default = "china")]
    country_code: String,
}

fn china() -> String {
    "86".into()
}

/// The `getPhoneNumber` button: mints a single-use code for a phone number.
pub async fn phone_code(State(state): State<Shared>, Json(body): Json<PhoneCodeBody>) -> Response {
    if body.phone_number.is_empty() {
        return bad_request("phoneNumber must not be empty");
    }
    let mut sim = state.lock().unwrap();
    let code = random_text(32);
    let issued_at = sim.now();
    sim.phone_codes.insert(
        code.clone(),
        PhoneCode {
            phone_number: body.phone_number,
            country_code: body.country_code,
            issued_at,
            used: false,
        },
    );
    Json(json!({ "code": code })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptBody {
    openid: String,
    data: Value,
    /// Replaces the generated `{appid, timestamp}` watermark (tests of foreign or stale data).
    #[serde(default)]
    watermark: Option<Value>,
    /// Encrypts under this key instead of the user's current one (tests of a rotated key).
    #[serde(default)]
    session_key: Option<String>,
}

/// What the WeChat client does for getPhoneNumber / getWeRunData / getShareInfo: adds a
/// watermark and encrypts the JSON under the user's current session key.
pub async fn encrypt(State(state): State<Shared>, Json(body): Json<EncryptBody>) -> Response {
    let sim = state.lock().unwrap();
    let Value::Object(mut data) = body.data else {
        return bad_request("data must be a JSON object");
    };
    let session_key = match (body.session_key, sim.users.get(&body.openid)) {
        (Some(key), _) => key,
        (None, Some(user)) => user.session_key.clone(),
        (None, None) => {
            return bad_request(format!("unknown openid {}: mint a code for it first", body.openid));
        }
    };
    let watermark = body
        .watermark
        .unwrap_or_else(|| json!({ "appid": sim.config.app_id, "timestamp": sim.now() }));
    data.insert("watermark".into(), watermark);
    let iv = random_bytes::<16>();
    let plaintext = serde_json::to_vec(&data).expect("JSON serializes");
    match aes_encrypt(&session_key, &iv, &plaintext) {
        Ok(encrypted) => Json(json!({ "encryptedData": encrypted, "iv": STANDARD.encode(iv) })).into_response(),
        Err(e) => bad_request(e),
    }
}

/// The user's current session key, for tests to check what the server stored.
pub async fn user(State(state): State<Shared>, Query(params): Query<HashMap<String, String>>) -> Response {
    let sim = state.lock().unwrap();
    let openid = params.get("openid").cloned().unwrap_or_default();
    match sim.users.get(&openid) {
        Some(user) => {
            Json(json!({ "openid": openid, "unionid": user.unionid, "session_key": user.session_key })).into_response()
        }
        None => (StatusCode::NOT_FOUND, Json(json!({ "error": "unknown openid" }))).into_response(),
    }
}

pub async fn add_fault(State(state): State<Shared>, Json(fault): Json<Fault>) -> Response {
    let answers = [
        fault.errcode.is_some(),
        fault.http_status.is_some(),
        fault.pay_error.is_some(),
        fault.cut.is_some(),
    ];
    if answers.iter().filter(|given| **given).count() > 1 {
        return bad_request("give at most one of errcode, http_status, pay_error and cut");
    }
    if let Some(e) = &fault.pay_error
        && (!(400..=599).contains(&e.status) || e.code.is_empty())
    {
        return bad_request("pay_error needs an HTTP status from 400 to 599 and a code");
    }
    state.lock().unwrap().faults.push_back(fault);
    StatusCode::NO_CONTENT.into_response()
}

pub async fn clear_faults(State(state): State<Shared>) -> Response {
    state.lock().unwrap().faults.clear();
    StatusCode::NO_CONTENT.into_response()
}

/// Every call received, and a count per API.
pub async fn requests(State(state): State<Shared>) -> Response {
    let sim = state.lock().unwrap();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for r in &sim.log {
        *counts.entry(r.api.as_str()).or_default() += 1;
    }
    Json(json!({ "counts": counts, "requests": sim.log })).into_response()
}

pub async fn clear_requests(State(state): State<Shared>) -> Response {
    state.lock().unwrap().log.clear();
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdvanceBody {
    advance_secs: i64,
}

/// Moves the simulator's clock forward (code and token expiry without waiting); refunds that are
/// then due settle, transfers left unconfirmed for 24 hours are cancelled, and their
/// notifications and the media checks then due are delivered (or held) before the answer.
pub async fn advance_time(State(state): State<Shared>, Json(body): Json<AdvanceBody>) -> Response {
    let now = {
        let mut sim = state.lock().unwrap();
        sim.clock_offset_secs += body.advance_secs;
        sim.now()
    };
    let refunds = crate::refund::settle_after_clock_moved(&state).await;
    let transfers = crate::transfer::expire_after_clock_moved(&state).await;
    let media_checks = crate::security::deliver_due(&state).await;
    Json(json!({
        "now": now, "refunds_settled": refunds, "transfers_cancelled": transfers,
        "media_checks_delivered": media_checks,
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppBody {
    secret: String,
}

/// Rotates the app secret, as an operator resetting it in the WeChat console would.
pub async fn set_app_secret(State(state): State<Shared>, Json(body): Json<AppBody>) -> Response {
    state.lock().unwrap().config.app_secret = body.secret;
    StatusCode::NO_CONTENT.into_response()
}

/// Makes every issued access token stale (answers 40001 from now on).
pub async fn invalidate_tokens(State(state): State<Shared>) -> Response {
    let mut sim = state.lock().unwrap();
    sim.stable_current = None;
    sim.stable_previous = None;
    sim.cgi_token = None;
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardExtBody {
    card_id: String,
    #[serde(rename = "cardExt")]
    card_ext: String,
}

/// What the WeChat client checks in `wx.addCard`: the `cardExt` signature against the current
/// card `api_ticket`, and the openid it is bound to, if any.
pub async fn verify_card_ext(State(state): State<Shared>, Json(body): Json<CardExtBody>) -> Response {
    let sim = state.lock().unwrap();
    let Ok(ext) = serde_json::from_str::<Value>(&body.card_ext) else {
        return Json(json!({ "valid": false, "reason": "cardExt is not a JSON string" })).into_response();
    };
    let Some(ticket) = sim.card_ticket.as_ref().filter(|t| t.expires_at > sim.now()) else {
        return Json(json!({ "valid": false, "reason": "no live card api_ticket" })).into_response();
    };
    let field = |k: &str| ext[k].as_str().unwrap_or_default().to_owned();
    let values = [
        ticket.value.clone(),
        field("timestamp"),
        body.card_id,
        field("code"),
        field("openid"),
        field("nonce_str"),
    ];
    let present: Vec<&str> = values.iter().map(String::as_str).filter(|v| !v.is_empty()).collect();
    let expected = sorted_sha1(&present);
    let valid = field("signature") == expected;
    Json(json!({ "valid": valid, "openid": ext.get("openid") })).into_response()
}
