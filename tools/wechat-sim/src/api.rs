//! The WeChat server APIs, as the real servers answer them.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::Shared;
use crate::crypto::new_session_key;
use crate::state::{CODE_TTL_SECS, Fault, SimState, TOKEN_ROTATE_BEFORE_SECS, TokenCheck, rid};

type Params = Query<HashMap<String, String>>;

/// WeChat's error shape: HTTP 200, `errcode` and an `errmsg` ending in a request id.
pub fn wx_error(errcode: i64, errmsg: &str) -> Response {
    Json(json!({ "errcode": errcode, "errmsg": format!("{errmsg} rid: {}", rid()) })).into_response()
}

/// Logs the call and plays any queued fault. `Some(response)` means answer that instead.
pub(crate) async fn begin(state: &Shared, api: &str) -> Option<Response> {
    let fault: Option<Fault> = state.lock().unwrap().begin(api);
    let fault = fault?;
    if fault.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(fault.delay_ms)).await;
    }
    if let Some(status) = fault.http_status {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
        return Some((status, "<html><body>upstream error</body></html>").into_response());
    }
    let errcode = fault.errcode?;
    let errmsg = match errcode {
        -1 => "system error",
        45011 => "api minute-quota reach limit  mustslower  retry next minute",
        40226 => "code blocked",
        _ => "injected fault",
    };
    Some(wx_error(errcode, errmsg))
}

/// What every JSON API with an access_token does first: logs the call and plays a fault, checks the
/// token, parses the body (44002 when it is empty, 47001 when it is not a JSON object).
pub(crate) async fn begin_json(
    state: &Shared,
    params: &HashMap<String, String>,
    api: &str,
    body: &[u8],
) -> Result<Value, Response> {
    if let Some(response) = begin(state, api).await {
        return Err(response);
    }
    if let Some(response) = token_error(&state.lock().unwrap(), params) {
        return Err(response);
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(wx_error(44002, "empty post data"));
    }
    crate::pay::json_object(body).ok_or_else(|| wx_error(47001, "data format error"))
}

fn param<'a>(params: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    params.get(name).map(String::as_str).filter(|v| !v.is_empty())
}

/// Checks appid and secret as every credentialed API does, before anything else; the error
/// answer when they are wrong.
fn app_error(sim: &SimState, appid: Option<&str>, secret: Option<&str>) -> Option<Response> {
    let Some(appid) = appid else {
        return Some(wx_error(41002, "appid missing"));
    };
    let Some(secret) = secret else {
        return Some(wx_error(41004, "appsecret missing"));
    };
    if appid != sim.config.app_id {
        return Some(wx_error(40013, "invalid appid"));
    }
    if secret != sim.config.app_secret {
        return Some(wx_error(40125, "invalid appsecret"));
    }
    None
}

pub async fn jscode2session(State(state): State<Shared>, Query(params): Params) -> Response {
    if let Some(response) = begin(&state, "jscode2session").await {
        return response;
    }
    let mut sim = state.lock().unwrap();
    if let Some(response) = app_error(&sim, param(&params, "appid"), param(&params, "secret")) {
        return response;
    }
    let Some(js_code) = param(&params, "js_code") else {
        return wx_error(41008, "missing code");
    };
    if param(&params, "grant_type") != Some("authorization_code") {
        return wx_error(40002, "invalid grant_type");
    }
    let now = sim.now();
    let Some(code) = sim.codes.get_mut(js_code) else {
        return wx_error(40029, "invalid code");
    };
    if code.used {
        return wx_error(40163, "code been used");
    }
    if now - code.issued_at > CODE_TTL_SECS {
        return wx_error(40029, "invalid code");
    }
    code.used = true;
    let openid = code.openid.clone();
    let user = &sim.users[&openid];
    let mut body = json!({ "openid": openid, "session_key": user.session_key });
    if let Some(unionid) = &user.unionid {
        body["unionid"] = json!(unionid);
    }
    Json(body).into_response()
}

pub async fn token(State(state): State<Shared>, Query(params): Params) -> Response {
    if let Some(response) = begin(&state, "token").await {
        return response;
    }
    let mut sim = state.lock().unwrap();
    if param(&params, "grant_type") != Some("client_credential") {
        return wx_error(40002, "invalid grant_type");
    }
    if let Some(response) = app_error(&sim, param(&params, "appid"), param(&params, "secret")) {
        return response;
    }
    // Each call invalidates the previous cgi-bin/token token.
    let token = sim.new_token();
    sim.cgi_token = Some(token.clone());
    Json(json!({ "access_token": token.value, "expires_in": token.expires_at - sim.now() })).into_response()
}

pub async fn stable_token(State(state): State<Shared>, body: axum::body::Bytes) -> Response {
    if let Some(response) = begin(&state, "stable_token").await {
        return response;
    }
    let mut sim = state.lock().unwrap();
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return wx_error(47001, "data format error");
    };
    if body["grant_type"].as_str() != Some("client_credential") {
        return wx_error(40002, "invalid grant_type");
    }
    if let Some(response) = app_error(&sim, body["appid"].as_str(), body["secret"].as_str()) {
        return response;
    }
    let now = sim.now();
    let force = body["force_refresh"].as_bool().unwrap_or(false);
    match &sim.stable_current {
        Some(current) if !force && current.expires_at - now > TOKEN_ROTATE_BEFORE_SECS => {}
        Some(current) if !force && current.expires_at > now => {
            // Near expiry: issue the next token; the old one keeps working until it expires.
            sim.stable_previous = Some(current.clone());
            sim.stable_current = Some(sim.new_token());
        }
        _ => {
            // First call, expired, or force_refresh: a new token, and the old ones stop working.
            sim.stable_previous = None;
            sim.stable_current = Some(sim.new_token());
        }
    }
    let current = sim.stable_current.clone().expect("set above");
    Json(json!({ "access_token": current.value, "expires_in": current.expires_at - now })).into_response()
}

/// The 40001/42001 answer for a token-protected API, if the token is not valid.
pub fn token_error(sim: &SimState, params: &HashMap<String, String>) -> Option<Response> {
    let Some(token) = param(params, "access_token") else {
        return Some(wx_error(41001, "access_token missing"));
    };
    match sim.check_token(token) {
        TokenCheck::Valid => None,
        TokenCheck::Expired => Some(wx_error(42001, "access_token expired")),
        TokenCheck::Unknown => Some(wx_error(
            40001,
            "invalid credential, access_token is invalid or not latest",
        )),
    }
}

/// hex(HMAC-SHA256(key = the session_key's base64 text, message = "")).
pub fn session_signature(session_key: &str) -> String {
    let mac = Hmac::<Sha256>::new_from_slice(session_key.as_bytes()).expect("any key length");
    hex::encode(mac.finalize().into_bytes())
}

pub async fn checksession(State(state): State<Shared>, Query(params): Params) -> Response {
    if let Some(response) = begin(&state, "checksession").await {
        return response;
    }
    let sim = state.lock().unwrap();
    if let Some(response) = token_error(&sim, &params) {
        return response;
    }
    if param(&params, "sig_method") != Some("hmac_sha256") {
        return wx_error(87009, "invalid signature method");
    }
    let Some(user) = param(&params, "openid").and_then(|openid| sim.users.get(openid)) else {
        return wx_error(40003, "invalid openid");
    };
    if param(&params, "signature") != Some(session_signature(&user.session_key).as_str()) {
        return wx_error(87009, "invalid signature");
    }
    Json(json!({ "errcode": 0, "errmsg": "ok" })).into_response()
}

/// A fresh session key for `openid`, replacing the previous one (what a new `wx.login` does).
pub fn rotate_session_key(sim: &mut SimState, openid: &str, explicit: Option<String>, unionid: Option<String>) {
    let session_key = explicit.unwrap_or_else(new_session_key);
    let user = sim.users.entry(openid.to_owned()).or_insert(crate::state::User {
        unionid: None,
        session_key: String::new(),
        previous_keys: Vec::new(),
        active_at: 0,
    });
    let old = std::mem::replace(&mut user.session_key, session_key);
    if !old.is_empty() {
        user.previous_keys.push(old);
    }
    if unionid.is_some() {
        user.unionid = unionid;
    }
}

/// `POST /wxa/business/getuserphonenumber?access_token=` `{"code"}`: phone codes are single-use
/// and valid 5 minutes (a used or expired code answers 40029 like an unknown one).
pub async fn getuserphonenumber(
    State(state): State<Shared>,
    Query(params): Params,
    body: axum::body::Bytes,
) -> Response {
    if let Some(response) = begin(&state, "getuserphonenumber").await {
        return response;
    }
    let mut sim = state.lock().unwrap();
    if let Some(response) = token_error(&sim, &params) {
        return response;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return wx_error(47001, "data format error");
    };
    let Some(code) = body["code"].as_str() else {
        return wx_error(47001, "data format error: code missing");
    };
    let now = sim.now();
    let app_id = sim.config.app_id.clone();
    let Some(entry) = sim
        .phone_codes
        .get_mut(code)
        .filter(|c| !c.used && now - c.issued_at <= CODE_TTL_SECS)
    else {
        return wx_error(40029, "invalid code");
    };
    entry.used = true;
    let pure = entry
        .phone_number
        .trim_start_matches(&format!("+{}", entry.country_code))
        .trim()
        .to_owned();
    let phone_number = if entry.country_code == "86" {
        pure.clone()
    } else {
        format!("+{} {pure}", entry.country_code)
    };
    Json(json!({
        "errcode": 0,
        "errmsg": "ok",
        "phone_info": {
            "phoneNumber": phone_number,
            "purePhoneNumber": pure,
            "countryCode": entry.country_code,
            "watermark": { "timestamp": now, "appid": app_id },
        }
    }))
    .into_response()
}

/// `GET /cgi-bin/ticket/getticket?access_token=&type=wx_card|jsapi`: one ticket per 2 hours.
pub async fn getticket(State(state): State<Shared>, Query(params): Params) -> Response {
    if let Some(response) = begin(&state, "getticket").await {
        return response;
    }
    let mut sim = state.lock().unwrap();
    if let Some(response) = token_error(&sim, &params) {
        return response;
    }
    if !matches!(param(&params, "type"), Some("wx_card" | "jsapi")) {
        return wx_error(40097, "invalid args: type");
    }
    let now = sim.now();
    let ticket = match &sim.card_ticket {
        Some(t) if t.expires_at > now => t.clone(),
        _ => {
            let t = sim.new_token();
            sim.card_ticket = Some(t.clone());
            t
        }
    };
    Json(json!({ "errcode": 0, "errmsg": "ok", "ticket": ticket.value, "expires_in": ticket.expires_at - now }))
        .into_response()
}

/// `GET /wxa/resetusersessionkey`: a new session key for the user, given a signature by a key
/// WeChat issued to that user (the current one or an earlier one).
pub async fn resetusersessionkey(State(state): State<Shared>, Query(params): Params) -> Response {
    if let Some(response) = begin(&state, "resetusersessionkey").await {
        return response;
    }
    let mut sim = state.lock().unwrap();
    if let Some(response) = token_error(&sim, &params) {
        return response;
    }
    let Some(openid) = param(&params, "openid").map(str::to_owned) else {
        return wx_error(40003, "invalid openid");
    };
    let Some(user) = sim.users.get(&openid) else {
        return wx_error(40003, "invalid openid");
    };
    let signature = param(&params, "signature").unwrap_or_default();
    let known = std::iter::once(&user.session_key)
        .chain(&user.previous_keys)
        .any(|k| session_signature(k) == signature);
    if param(&params, "sig_method") != Some("hmac_sha256") || !known {
        return wx_error(87009, "invalid signature");
    }
    rotate_session_key(&mut sim, &openid, None, None);
    let session_key = sim.users[&openid].session_key.clone();
    Json(json!({ "errcode": 0, "errmsg": "ok", "openid": openid, "session_key": session_key })).into_response()
}

/// `POST /wxa/getwxacodeunlimit?access_token=`: a PNG encoding the scene and page, or 40169
/// (bad scene), 41030 (page not in the released version while `check_path` is on), 47001.
pub async fn getwxacodeunlimit(
    State(state): State<Shared>,
    Query(params): Params,
    body: axum::body::Bytes,
) -> Response {
    if let Some(response) = begin(&state, "getwxacodeunlimit").await {
        return response;
    }
    let sim = state.lock().unwrap();
    if let Some(response) = token_error(&sim, &params) {
        return response;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return wx_error(47001, "data format error");
    };
    const SCENE_EXTRA: &str = "!#$&'()*+,/:;=?@-._~";
    let scene = body["scene"].as_str().unwrap_or_default();
    if scene.is_empty()
        || scene.len() > 32
        || !scene
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || SCENE_EXTRA.contains(c))
    {
        return wx_error(40169, "invalid length for scene, or the data is not json string");
    }
    let page = body["page"].as_str().unwrap_or_default();
    let check_path = body["check_path"].as_bool().unwrap_or(true);
    if check_path && !page.is_empty() && !crate::state::PAGES.contains(&page) {
        return wx_error(41030, "invalid page");
    }
    let width = body["width"].as_u64().unwrap_or(430).clamp(280, 1280).to_string();
    let env_version = body["env_version"].as_str().unwrap_or("release");
    let image = crate::png::code_image(&[
        ("scene", scene),
        ("page", page),
        ("width", &width),
        ("env_version", env_version),
    ]);
    ([(axum::http::header::CONTENT_TYPE, "image/png")], image).into_response()
}
