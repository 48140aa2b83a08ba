//! WeChat's API security mode (服务端 API 安全鉴权), as the real servers enforce it once an app
//! has turned it on in the console (开发设置 → API 安全):
//! - `POST /__sim/api-security` plays the console: it makes the app's keys (an AES256 key and
//!   its SN, an RSA key pair whose private half it hands out, WeChat's platform certificate and
//!   its SN) and turns the mode on. It answers the `api_security` document the app secret holds.
//! - A call to an API that supports the mode ([`SUPPORTED`]) must then come signed and
//!   encrypted: headers checked, the signature verified over `urlpath\nappid\ntimestamp\nbody`
//!   with the app's public key, the timestamp within 300 s of the real clock (the moved clock of
//!   `/__sim/time` is for codes and tokens, not for this), the body decrypted with AAD
//!   `urlpath|appid|timestamp|sn` and its `_appid`/`_timestamp` matched to the headers. A call
//!   that fails is refused in plain JSON with an errcode of 40230–40240 and never reaches the API.
//! - The API's answer is encrypted under the same key and signed by WeChat's platform key; while
//!   WeChat rotates its key (`POST /__sim/api-security/rotate`) the old key signs too, in the
//!   `-Deprecated` headers.
//! - Faults on answers (`POST /__sim/api-security/fault`): `bad_signature`, `stale_timestamp`,
//!   `wrong_serial`.
//!
//! Errcodes: 40234 (invalid signature) and 40230 (no `Wechatmp-Serial`) are WeChat's as seen in
//! the field; the rest of the range is this simulator's reading of the guide's list.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, KeyPair, RsaKeyPair, UnparsedPublicKey};
use axum::Json;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Shared;
use crate::api::wx_error;
use crate::crypto::random_bytes;
use crate::pay::to_pem;

/// The APIs WeChat's docs mark "支持加密请求" that this simulator serves.
pub const SUPPORTED: &[&str] = &[
    "/wxa/business/getuserphonenumber",
    "/wxa/getuserriskrank",
    "/wxa/msg_sec_check",
    "/wxa/media_check_async",
    "/cgi-bin/message/subscribe/send",
    "/cgi-bin/message/custom/send",
];

const WINDOW_SECS: u64 = 300;

/// The scheme the simulator is served over (`http` or `https`): part of the signed urlpath.
#[derive(Clone, Copy)]
pub struct Scheme(pub &'static str);

/// WeChat's signing key: the SN the console shows with it, and the key.
struct PlatformKey {
    sn: String,
    key: RsaKeyPair,
    certificate_pem: String,
}

pub struct Mode {
    aes: Arc<LessSafeKey>,
    aes_key_b64: String,
    aes_sn: String,
    /// The app's public key (SPKI DER) and its SN.
    app_public: Vec<u8>,
    app_private_pem: String,
    app_sn: String,
    /// The current platform key, then the one being retired (during a rotation).
    platform: Vec<Arc<PlatformKey>>,
}

#[derive(Default)]
pub struct ApiSecurityState {
    mode: Option<Arc<Mode>>,
    /// Faults for the next answers, in order.
    faults: std::collections::VecDeque<AnswerFault>,
    /// Calls verified and calls refused, for tests.
    verified: u64,
    refused: u64,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum AnswerFault {
    /// The answer's signature does not verify.
    BadSignature,
    /// The answer is signed with a timestamp 10 minutes old.
    StaleTimestamp,
    /// The answer names a platform key serial the app does not hold.
    WrongSerial,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn platform_key(sn: String) -> PlatformKey {
    let key = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("an RSA key");
    let pkcs8: Pkcs8V1Der = key.as_der().expect("PKCS#8");
    let for_cert = rcgen::KeyPair::try_from(pkcs8.as_ref()).expect("rcgen reads an RSA PKCS#8 key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("no names");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "WeChat API platform certificate (simulator)");
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2100, 1, 1);
    let cert = params.self_signed(&for_cert).expect("a self-signed certificate");
    PlatformKey {
        sn,
        key,
        certificate_pem: cert.pem(),
    }
}

fn hex_sn() -> String {
    hex::encode(random_bytes::<16>())
}

impl Mode {
    fn new() -> Self {
        let aes_key = random_bytes::<32>();
        let app = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("an RSA key");
        let app_private: Pkcs8V1Der = app.as_der().expect("PKCS#8");
        let app_public: PublicKeyX509Der = app.public_key().as_der().expect("SPKI");
        Self {
            aes: Arc::new(LessSafeKey::new(
                UnboundKey::new(&AES_256_GCM, &aes_key).expect("AES-256"),
            )),
            aes_key_b64: STANDARD.encode(aes_key),
            aes_sn: hex_sn(),
            app_public: app_public.as_ref().to_vec(),
            app_private_pem: to_pem("PRIVATE KEY", app_private.as_ref()),
            app_sn: hex_sn(),
            platform: vec![Arc::new(platform_key(hex_sn()))],
        }
    }

    /// The `api_security` document of the app secret, as the console's page gives its parts.
    fn document(&self) -> Value {
        json!({
            "aes_key": self.aes_key_b64,
            "aes_sn": self.aes_sn,
            "private_key": self.app_private_pem,
            "private_key_sn": self.app_sn,
            "platform_certificates": self.platform.iter()
                .map(|p| json!({"sn": p.sn, "certificate": p.certificate_pem}))
                .collect::<Vec<_>>(),
        })
    }
}

/// `POST /__sim/api-security` (`{}`): new keys, the mode on; the app secret's `api_security`.
pub async fn configure(State(state): State<Shared>) -> Json<Value> {
    let mode = Arc::new(Mode::new());
    let document = mode.document();
    let mut sim = state.lock().unwrap();
    sim.api_security.mode = Some(mode);
    sim.api_security.faults.clear();
    Json(document)
}

/// `DELETE /__sim/api-security`: the mode off (calls are plain again).
pub async fn turn_off(State(state): State<Shared>) -> Json<Value> {
    state.lock().unwrap().api_security.mode = None;
    Json(json!({"ok": true}))
}

/// `GET /__sim/api-security`: calls verified and refused so far.
pub async fn counts(State(state): State<Shared>) -> Json<Value> {
    let sim = state.lock().unwrap();
    let s = &sim.api_security;
    Json(json!({"on": s.mode.is_some(), "verified": s.verified, "refused": s.refused}))
}

/// `POST /__sim/api-security/rotate`: WeChat starts signing with a new platform key; the current
/// one signs too (the `-Deprecated` pair) until the next rotation. Answers the new document.
pub async fn rotate(State(state): State<Shared>) -> Response {
    let mut sim = state.lock().unwrap();
    let Some(mode) = sim.api_security.mode.as_ref() else {
        return crate::pay::admin_error(axum::http::StatusCode::CONFLICT, "the API security mode is off");
    };
    let fresh = Arc::new(platform_key(hex_sn()));
    let current = mode.platform[0].clone();
    let rotated = Mode {
        aes: mode.aes.clone(),
        aes_key_b64: mode.aes_key_b64.clone(),
        aes_sn: mode.aes_sn.clone(),
        app_public: mode.app_public.clone(),
        app_private_pem: mode.app_private_pem.clone(),
        app_sn: mode.app_sn.clone(),
        platform: vec![fresh, current],
    };
    let document = rotated.document();
    sim.api_security.mode = Some(Arc::new(rotated));
    Json(document).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRequest {
    answer: AnswerFault,
    #[serde(default = "one")]
    times: usize,
}

fn one() -> usize {
    1
}

/// `POST /__sim/api-security/fault` `{"answer": "bad_signature"|"stale_timestamp"|"wrong_serial", "times"?}`.
pub async fn add_fault(State(state): State<Shared>, Json(fault): Json<FaultRequest>) -> Json<Value> {
    let mut sim = state.lock().unwrap();
    for _ in 0..fault.times {
        sim.api_security.faults.push_back(fault.answer);
    }
    Json(json!({"queued": sim.api_security.faults.len()}))
}

/// A refusal of the mode (plain JSON, as WeChat answers one).
fn refuse(state: &Shared, errcode: i64, errmsg: &str) -> Response {
    state.lock().unwrap().api_security.refused += 1;
    wx_error(errcode, errmsg)
}

/// The middleware: calls to [`SUPPORTED`] APIs checked and opened while the mode is on, their
/// answers sealed and signed.
pub async fn layer(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let mode = state.lock().unwrap().api_security.mode.clone();
    let Some(mode) = mode.filter(|_| SUPPORTED.contains(&path.as_str())) else {
        return next.run(request).await;
    };
    let scheme = request.extensions().get::<Scheme>().map_or("http", |s| s.0);
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let url_path = format!("{scheme}://{host}{path}");
    let app_id = state.lock().unwrap().config.app_id.clone();
    let (parts, body) = request.into_parts();
    let Ok(body) = to_bytes(body, 1 << 20).await else {
        return refuse(&state, 40235, "invalid request body");
    };
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let Some(serial) = header("Wechatmp-Serial") else {
        return refuse(&state, 40230, "API_Missing_Wechatmp_Serial");
    };
    if header("Wechatmp-Appid") != Some(app_id.as_str()) {
        return refuse(&state, 40231, "invalid or missing Wechatmp-Appid");
    }
    let Some(timestamp) = header("Wechatmp-TimeStamp") else {
        return refuse(&state, 40232, "missing Wechatmp-TimeStamp");
    };
    let Some(sig) = header("Wechatmp-Signature").and_then(|s| STANDARD.decode(s).ok()) else {
        return refuse(&state, 40233, "missing Wechatmp-Signature");
    };
    if serial != mode.app_sn {
        return refuse(&state, 40237, "no asymmetric key with this serial");
    }
    let mut signed = format!("{url_path}\n{app_id}\n{timestamp}\n").into_bytes();
    signed.extend_from_slice(&body);
    let verified = UnparsedPublicKey::new(&signature::RSA_PSS_2048_8192_SHA256, &mode.app_public)
        .verify(&signed, &sig)
        .is_ok();
    if !verified {
        return refuse(&state, 40234, "invalid signature");
    }
    let Ok(ts) = timestamp.parse::<u64>() else {
        return refuse(&state, 40238, "invalid timestamp");
    };
    if ts.abs_diff(now()) > WINDOW_SECS {
        return refuse(&state, 40238, "timestamp expired");
    }
    let aad = format!("{url_path}|{app_id}|{timestamp}|{}", mode.aes_sn);
    let Some(mut plain) = open(&mode.aes, &aad, &body) else {
        return refuse(&state, 40236, "invalid encrypted data");
    };
    if plain.get("_appid").and_then(Value::as_str) != Some(app_id.as_str())
        || plain.get("_timestamp").and_then(Value::as_u64) != Some(ts)
        || plain.get("_n").and_then(Value::as_str).is_none_or(str::is_empty)
    {
        return refuse(&state, 40239, "_n, _appid or _timestamp missing or not the headers'");
    }
    for field in ["_n", "_appid", "_timestamp"] {
        plain.as_object_mut().expect("an object").remove(field);
    }
    let fault = {
        let mut sim = state.lock().unwrap();
        sim.api_security.verified += 1;
        sim.api_security.faults.pop_front()
    };
    let mut parts = parts;
    parts.headers.remove(header::CONTENT_LENGTH);
    let opened = Request::from_parts(parts, Body::from(plain.to_string()));
    let answer = next.run(opened).await;
    seal(&mode, &url_path, &app_id, answer, fault).await
}

/// The request's plaintext JSON object, when `body` is `{iv, data, authtag}` that opens.
fn open(key: &LessSafeKey, aad: &str, body: &[u8]) -> Option<Value> {
    #[derive(Deserialize)]
    struct Sealed {
        iv: String,
        data: String,
        authtag: String,
    }
    let sealed: Sealed = serde_json::from_slice(body).ok()?;
    let iv: [u8; 12] = STANDARD.decode(&sealed.iv).ok()?.try_into().ok()?;
    let mut data = STANDARD.decode(&sealed.data).ok()?;
    data.extend(STANDARD.decode(&sealed.authtag).ok()?);
    let plain = key
        .open_in_place(Nonce::assume_unique_for_key(iv), Aad::from(aad.as_bytes()), &mut data)
        .ok()?;
    serde_json::from_slice::<Value>(plain).ok().filter(Value::is_object)
}

/// The API's answer, encrypted and signed as WeChat sends it in the mode.
async fn seal(mode: &Mode, url_path: &str, app_id: &str, answer: Response, fault: Option<AnswerFault>) -> Response {
    let (mut parts, body) = answer.into_parts();
    let Ok(plain) = to_bytes(body, 4 << 20).await else {
        return crate::pay_faults::severed();
    };
    // A gateway's error page (an injected HTTP fault) is not the API's answer: not sealed.
    if !parts.status.is_success() {
        return Response::from_parts(parts, Body::from(plain));
    }
    let ts = match fault {
        Some(AnswerFault::StaleTimestamp) => now() - 600,
        _ => now(),
    };
    let aad = format!("{url_path}|{app_id}|{ts}|{}", mode.aes_sn);
    let iv = random_bytes::<12>();
    let mut data = plain.to_vec();
    let tag = mode
        .aes
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(iv), Aad::from(aad.as_bytes()), &mut data)
        .expect("AES-GCM seals");
    let body = json!({
        "iv": STANDARD.encode(iv),
        "data": STANDARD.encode(&data),
        "authtag": STANDARD.encode(tag.as_ref()),
    })
    .to_string();
    let mut signed = format!("{url_path}\n{app_id}\n{ts}\n").into_bytes();
    signed.extend_from_slice(body.as_bytes());
    let sign = |key: &RsaKeyPair| {
        let mut sig = vec![0; key.public_modulus_len()];
        key.sign(&signature::RSA_PSS_SHA256, &SystemRandom::new(), &signed, &mut sig)
            .expect("RSA signs");
        if fault == Some(AnswerFault::BadSignature) {
            sig[0] ^= 1;
        }
        STANDARD.encode(sig)
    };
    let headers = &mut parts.headers;
    headers.remove(header::CONTENT_LENGTH);
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let mut set = |name: &'static str, value: String| {
        headers.insert(name, HeaderValue::from_str(&value).expect("ASCII header"));
    };
    set("Wechatmp-Appid", app_id.to_owned());
    set("Wechatmp-TimeStamp", ts.to_string());
    let current = &mode.platform[0];
    let serial = if fault == Some(AnswerFault::WrongSerial) {
        hex_sn()
    } else {
        current.sn.clone()
    };
    set("Wechatmp-Serial", serial);
    set("Wechatmp-Signature", sign(&current.key));
    if let Some(retiring) = mode.platform.get(1).filter(|_| fault != Some(AnswerFault::WrongSerial)) {
        set("Wechatmp-Serial-Deprecated", retiring.sn.clone());
        set("Wechatmp-Signature-Deprecated", sign(&retiring.key));
    }
    Response::from_parts(parts, Body::from(body))
}
