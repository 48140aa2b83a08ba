//! WeChat Pay as the simulator plays it: APIv3 JSAPI prepay (our Authorization checked with the
//! merchant's public key, answers signed with the simulator's platform key), APIv2 unified order
//! (XML, sign checked both ways), and payment completion that delivers the notification to the
//! order's notify_url the way WeChat Pay does: signed, encrypted, retried until acknowledged, and
//! on request tampered, stale, a signature probe, signed with the wrong key, or duplicated.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, KeyPair, RsaKeyPair, UnparsedPublicKey};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::Shared;
use crate::state::random_text;

/// The simulator's platform key (test only), also presented as a certificate with this serial.
const PLATFORM_KEY_PEM: &str = include_str!("platform_key.pem");
pub const PLATFORM_CERT_PEM: &str = include_str!("platform_cert.pem");
pub const PLATFORM_CERT_SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A72";
pub const PLATFORM_PUBLIC_KEY_ID: &str = "PUB_KEY_ID_0114232134912410000000000000";

/// DER as a PEM block (64-character lines, LF).
pub fn to_pem(label: &str, der: &[u8]) -> String {
    pem_rfc7468::encode_string(label, pem_rfc7468::LineEnding::LF, der).expect("a PEM label and any DER encode")
}

pub fn platform_key() -> RsaKeyPair {
    let der = PrivatePkcs8KeyDer::from_pem_slice(PLATFORM_KEY_PEM.as_bytes()).expect("PEM");
    RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).expect("the platform key parses")
}

fn rsa_sign(key: &RsaKeyPair, message: &[u8]) -> String {
    let mut sig = vec![0; key.public_modulus_len()];
    key.sign(&signature::RSA_PKCS1_SHA256, &SystemRandom::new(), message, &mut sig)
        .expect("signing works");
    STANDARD.encode(sig)
}

#[derive(Clone)]
pub struct MerchantConfig {
    mchid: String,
    serial_no: String,
    public_key: Vec<u8>,
    apiv3_key: String,
    apiv2_key: String,
}

#[derive(Clone, Copy, PartialEq)]
enum Api {
    V3,
    V2 { hmac: bool },
}

#[derive(Clone)]
struct SimOrder {
    out_trade_no: String,
    appid: String,
    mchid: String,
    openid: String,
    total: u64,
    notify_url: String,
    api: Api,
    transaction_id: Option<String>,
}

#[derive(Default)]
pub struct PayState {
    merchant: Option<MerchantConfig>,
    orders: HashMap<String, SimOrder>,
}

fn pay_error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({ "code": code, "message": message }))).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MerchantBody {
    mchid: String,
    serial_no: String,
    /// The merchant API certificate's public key, `BEGIN PUBLIC KEY` PEM.
    public_key: String,
    apiv3_key: String,
    apiv2_key: String,
}

/// `POST /__sim/pay/merchant`: the merchant account WeChat Pay knows.
pub async fn set_merchant(State(state): State<Shared>, Json(body): Json<MerchantBody>) -> Response {
    let Ok(public_key) = SubjectPublicKeyInfoDer::from_pem_slice(body.public_key.as_bytes()) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "public_key must be a BEGIN PUBLIC KEY PEM"})),
        )
            .into_response();
    };
    state.lock().unwrap().pay.merchant = Some(MerchantConfig {
        mchid: body.mchid,
        serial_no: body.serial_no,
        public_key: public_key.to_vec(),
        apiv3_key: body.apiv3_key,
        apiv2_key: body.apiv2_key,
    });
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /__sim/pay/platform`: WeChat Pay's public key and certificate, for the merchant's secret.
pub async fn platform() -> Response {
    let spki: PublicKeyX509Der = platform_key().public_key().as_der().expect("an RSA public key encodes");
    Json(json!({
        "public_key_id": PLATFORM_PUBLIC_KEY_ID,
        "public_key": to_pem("PUBLIC KEY", spki.as_ref()),
        "certificate_serial": PLATFORM_CERT_SERIAL,
        "certificate": PLATFORM_CERT_PEM,
    }))
    .into_response()
}

/// The parts of a `WECHATPAY2-SHA256-RSA2048` Authorization header.
fn parse_authorization(value: &str) -> Option<HashMap<String, String>> {
    let rest = value.strip_prefix("WECHATPAY2-SHA256-RSA2048 ")?;
    Some(
        rest.split(',')
            .filter_map(|part| {
                let (k, v) = part.trim().split_once('=')?;
                Some((k.to_owned(), v.trim_matches('"').to_owned()))
            })
            .collect(),
    )
}

/// A response signed the way WeChat Pay signs: `Wechatpay-*` headers over `ts\nnonce\nbody\n`.
fn signed_json(status: StatusCode, body: &Value, now: i64, tamper: bool) -> Response {
    let text = body.to_string();
    let nonce = random_text(32);
    let signature = rsa_sign(&platform_key(), format!("{now}\n{nonce}\n{text}\n").as_bytes());
    let sent = if tamper { text.replace("wx", "wy") } else { text };
    (
        status,
        [
            ("content-type", "application/json".to_owned()),
            ("wechatpay-timestamp", now.to_string()),
            ("wechatpay-nonce", nonce),
            ("wechatpay-signature", signature),
            ("wechatpay-serial", PLATFORM_PUBLIC_KEY_ID.to_owned()),
        ],
        sent,
    )
        .into_response()
}

/// `POST /v3/pay/transactions/jsapi`.
pub async fn jsapi(State(state): State<Shared>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let fault = state.lock().unwrap().begin("pay_jsapi");
    if let Some(f) = &fault {
        if f.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(f.delay_ms)).await;
        }
        if let Some(status) = f.http_status {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return pay_error(status, "SYSTEM_ERROR", "injected fault");
        }
    }
    let tamper = fault.as_ref().is_some_and(|f| f.bad_signature);
    let mut sim = state.lock().unwrap();
    let now = sim.now();
    let Some(merchant) = sim.pay.merchant.clone() else {
        return pay_error(
            StatusCode::UNAUTHORIZED,
            "SIGN_ERROR",
            "no merchant is configured in the simulator",
        );
    };
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_authorization);
    let Some(auth) = auth else {
        return pay_error(
            StatusCode::UNAUTHORIZED,
            "SIGN_ERROR",
            "missing or malformed Authorization",
        );
    };
    let field = |k: &str| auth.get(k).cloned().unwrap_or_default();
    let message = [
        format!(
            "POST\n/v3/pay/transactions/jsapi\n{}\n{}\n",
            field("timestamp"),
            field("nonce_str")
        )
        .as_bytes(),
        &body,
        b"\n",
    ]
    .concat();
    let signature = STANDARD.decode(field("signature")).unwrap_or_default();
    let verified = UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, &merchant.public_key)
        .verify(&message, &signature)
        .is_ok();
    if !verified || field("mchid") != merchant.mchid || field("serial_no") != merchant.serial_no {
        return pay_error(
            StatusCode::UNAUTHORIZED,
            "SIGN_ERROR",
            "签名错误: the Authorization signature does not verify",
        );
    }
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return pay_error(StatusCode::BAD_REQUEST, "PARAM_ERROR", "the body is not JSON");
    };
    let s = |k: &str| req[k].as_str().unwrap_or_default().to_owned();
    let total = req["amount"]["total"].as_u64().unwrap_or(0);
    let out_trade_no = s("out_trade_no");
    let valid_no = (6..=32).contains(&out_trade_no.len())
        && out_trade_no
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-|*".contains(&b));
    if s("appid").is_empty() || s("mchid") != merchant.mchid || !valid_no || total == 0 || s("notify_url").is_empty() {
        return pay_error(
            StatusCode::BAD_REQUEST,
            "PARAM_ERROR",
            "appid, mchid, out_trade_no, amount.total, notify_url",
        );
    }
    if s("description").chars().count() > 127 || req["payer"]["openid"].as_str().unwrap_or_default().is_empty() {
        return pay_error(StatusCode::BAD_REQUEST, "PARAM_ERROR", "description or payer.openid");
    }
    if let Some(existing) = sim.pay.orders.values().find(|o| o.out_trade_no == out_trade_no) {
        if existing.transaction_id.is_some() {
            return pay_error(StatusCode::BAD_REQUEST, "ORDERPAID", "该订单已支付");
        }
        if existing.total != total {
            return pay_error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", "参数与首次请求时不一致");
        }
    }
    let prepay_id = format!("wx{}{}", now, random_text(18));
    sim.pay.orders.insert(
        prepay_id.clone(),
        SimOrder {
            out_trade_no,
            appid: s("appid"),
            mchid: s("mchid"),
            openid: req["payer"]["openid"].as_str().unwrap_or_default().to_owned(),
            total,
            notify_url: s("notify_url"),
            api: Api::V3,
            transaction_id: None,
        },
    );
    signed_json(StatusCode::OK, &json!({ "prepay_id": prepay_id }), now, tamper)
}

/// The v2 sign rule, written here independently of the server's.
fn v2_sign(fields: &BTreeMap<String, String>, key: &str, hmac: bool) -> String {
    let mut text: String = fields
        .iter()
        .filter(|(k, v)| k.as_str() != "sign" && !v.is_empty())
        .map(|(k, v)| format!("{k}={v}&"))
        .collect();
    text.push_str(&format!("key={key}"));
    if hmac {
        let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("any key");
        mac.update(text.as_bytes());
        hex::encode_upper(mac.finalize().into_bytes())
    } else {
        use md5::Digest;
        hex::encode_upper(md5::Md5::digest(text.as_bytes()))
    }
}

/// Flat `<xml>` parsing for the simulator: `<k>v</k>` or `<k><![CDATA[v]]></k>`.
fn parse_xml(xml: &str) -> Option<BTreeMap<String, String>> {
    let inner = xml.trim().strip_prefix("<xml>")?.strip_suffix("</xml>")?;
    let mut fields = BTreeMap::new();
    let mut rest = inner.trim();
    while !rest.is_empty() {
        let open_end = rest.find('>')?;
        let name = rest.strip_prefix('<')?[..open_end - 1].to_owned();
        let close = format!("</{name}>");
        let after = &rest[open_end + 1..];
        let end = after.find(&close)?;
        let raw = &after[..end];
        let value = raw
            .strip_prefix("<![CDATA[")
            .and_then(|v| v.strip_suffix("]]>"))
            .unwrap_or(raw);
        fields.insert(name, value.to_owned());
        rest = after[end + close.len()..].trim_start();
    }
    Some(fields)
}

fn to_xml(fields: &BTreeMap<String, String>) -> String {
    let body: String = fields
        .iter()
        .map(|(k, v)| format!("<{k}><![CDATA[{v}]]></{k}>"))
        .collect();
    format!("<xml>{body}</xml>")
}

/// `POST /pay/unifiedorder` (APIv2).
pub async fn unifiedorder(State(state): State<Shared>, body: String) -> Response {
    let fault = state.lock().unwrap().begin("pay_unifiedorder");
    let tamper = fault.as_ref().is_some_and(|f| f.bad_signature);
    let mut sim = state.lock().unwrap();
    let reply = |fields: BTreeMap<String, String>| ([("content-type", "text/xml")], to_xml(&fields)).into_response();
    let fail = |msg: &str| {
        reply(
            [("return_code", "FAIL"), ("return_msg", msg)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    };
    let Some(merchant) = sim.pay.merchant.clone() else {
        return fail("no merchant is configured");
    };
    let Some(req) = parse_xml(&body) else {
        return fail("XML格式错误");
    };
    let get = |k: &str| req.get(k).cloned().unwrap_or_default();
    let hmac = match get("sign_type").as_str() {
        "" | "MD5" => false,
        "HMAC-SHA256" => true,
        _ => return fail("签名类型错误"),
    };
    if get("sign") != v2_sign(&req, &merchant.apiv2_key, hmac) {
        return fail("签名错误");
    }
    let total: u64 = get("total_fee").parse().unwrap_or(0);
    let mut answer: BTreeMap<String, String> = [
        ("return_code", "SUCCESS".to_owned()),
        ("return_msg", "OK".to_owned()),
        ("appid", get("appid")),
        ("mch_id", get("mch_id")),
        ("nonce_str", random_text(16)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    if get("mch_id") != merchant.mchid || total == 0 || get("trade_type") != "JSAPI" || get("openid").is_empty() {
        answer.insert("result_code".into(), "FAIL".into());
        answer.insert("err_code".into(), "PARAM_ERROR".into());
        answer.insert("err_code_des".into(), "参数错误".into());
    } else {
        let prepay_id = format!("wx{}{}", sim.now(), random_text(18));
        sim.pay.orders.insert(
            prepay_id.clone(),
            SimOrder {
                out_trade_no: get("out_trade_no"),
                appid: get("appid"),
                mchid: get("mch_id"),
                openid: get("openid"),
                total,
                notify_url: get("notify_url"),
                api: Api::V2 { hmac },
                transaction_id: None,
            },
        );
        answer.insert("result_code".into(), "SUCCESS".into());
        answer.insert("trade_type".into(), "JSAPI".into());
        answer.insert("prepay_id".into(), prepay_id);
    }
    if hmac {
        answer.insert("sign_type".into(), "HMAC-SHA256".into());
    }
    let sign = v2_sign(&answer, &merchant.apiv2_key, hmac);
    answer.insert("sign".into(), if tamper { sign.replace('A', "B") } else { sign });
    reply(answer)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompleteBody {
    prepay_id: String,
    /// normal | tampered | stale | signtest | wrong_key | certificate
    #[serde(default)]
    mode: Option<String>,
    /// Deliver this many copies at once (duplicate notifications).
    #[serde(default)]
    copies: Option<u32>,
    /// Claim this amount in the notification instead of the order's.
    #[serde(default)]
    amount: Option<u64>,
}

/// `POST /__sim/pay/complete`: the user pays; WeChat Pay notifies the merchant.
pub async fn complete(State(state): State<Shared>, Json(body): Json<CompleteBody>) -> Response {
    let mode = body.mode.unwrap_or_else(|| "normal".into());
    let (order, merchant, now) = {
        let mut sim = state.lock().unwrap();
        let now = sim.now();
        let Some(merchant) = sim.pay.merchant.clone() else {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "no merchant configured"})),
            )
                .into_response();
        };
        let Some(order) = sim.pay.orders.get_mut(&body.prepay_id) else {
            return (StatusCode::NOT_FOUND, Json(json!({"error": "unknown prepay_id"}))).into_response();
        };
        let transaction_id = order
            .transaction_id
            .get_or_insert_with(|| format!("4200{}{}", now, random_text(8)));
        let _ = transaction_id;
        (order.clone(), merchant, now)
    };
    let total = body.amount.unwrap_or(order.total);
    let (headers, payload) = match order.api {
        Api::V3 => v3_notification(&order, &merchant, total, now, &mode),
        Api::V2 { hmac } => v2_notification(&order, &merchant, total, hmac, &mode),
    };
    let copies = body.copies.unwrap_or(1).clamp(1, 200);
    // A correct notification is retried until acknowledged, like WeChat Pay (faster here).
    let attempts = if mode == "normal" || mode == "certificate" {
        3
    } else {
        1
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..copies {
        let (client, url, headers, payload) = (
            client.clone(),
            order.notify_url.clone(),
            headers.clone(),
            payload.clone(),
        );
        tasks.spawn(async move { deliver(&client, &url, &headers, &payload, attempts).await });
    }
    let mut deliveries = Vec::new();
    while let Some(result) = tasks.join_next().await {
        if let Ok(d) = result {
            deliveries.push(d);
        }
    }
    Json(
        json!({ "transaction_id": order.transaction_id, "out_trade_no": order.out_trade_no, "deliveries": deliveries }),
    )
    .into_response()
}

async fn deliver(
    client: &reqwest::Client,
    url: &str,
    headers: &[(String, String)],
    body: &str,
    attempts: u32,
) -> Value {
    let mut last = json!(null);
    for attempt in 1..=attempts {
        let mut request = client.post(url).body(body.to_owned());
        for (k, v) in headers {
            request = request.header(k, v);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_default();
                last = json!({ "status": status, "body": text, "attempts": attempt });
                if (200..300).contains(&status) {
                    break;
                }
            }
            Err(e) => last = json!({ "status": 0, "body": e.to_string(), "attempts": attempt }),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}

fn v3_notification(
    order: &SimOrder,
    merchant: &MerchantConfig,
    total: u64,
    now: i64,
    mode: &str,
) -> (Vec<(String, String)>, String) {
    let transaction = json!({
        "appid": order.appid, "mchid": order.mchid, "out_trade_no": order.out_trade_no,
        "transaction_id": order.transaction_id, "trade_type": "JSAPI", "trade_state": "SUCCESS",
        "trade_state_desc": "支付成功", "bank_type": "OTHERS", "attach": "", "success_time": "2026-11-25T12:00:00+08:00",
        "payer": { "openid": order.openid },
        "amount": { "total": total, "payer_total": total, "currency": "CNY", "payer_currency": "CNY" },
    });
    let nonce = random_text(12);
    let key =
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, merchant.apiv3_key.as_bytes()).expect("32-byte APIv3 key"));
    let mut sealed = transaction.to_string().into_bytes();
    key.seal_in_place_append_tag(
        Nonce::try_assume_unique_for_key(nonce.as_bytes()).expect("12 bytes"),
        Aad::from(b"transaction"),
        &mut sealed,
    )
    .expect("sealing works");
    let body = json!({
        "id": format!("EV-{}", random_text(16)), "create_time": "2026-11-25T12:00:00+08:00",
        "resource_type": "encrypt-resource", "event_type": "TRANSACTION.SUCCESS", "summary": "支付成功",
        "resource": { "original_type": "transaction", "algorithm": "AEAD_AES_256_GCM",
                      "ciphertext": STANDARD.encode(sealed), "associated_data": "transaction", "nonce": nonce },
    })
    .to_string();
    let timestamp = if mode == "stale" { now - 400 } else { now };
    let header_nonce = random_text(32);
    let message = format!("{timestamp}\n{header_nonce}\n{body}\n");
    let signature = match mode {
        "signtest" => format!("WECHATPAY/SIGNTEST/{}", random_text(16)),
        "wrong_key" => {
            let other = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("keygen");
            rsa_sign(&other, message.as_bytes())
        }
        _ => rsa_sign(&platform_key(), message.as_bytes()),
    };
    let serial = if mode == "certificate" {
        PLATFORM_CERT_SERIAL
    } else {
        PLATFORM_PUBLIC_KEY_ID
    };
    let sent = if mode == "tampered" {
        body.replace("TRANSACTION.SUCCESS", "TRANSACTION.SUCCESS ")
    } else {
        body
    };
    let headers = [
        ("content-type", "application/json".to_owned()),
        ("wechatpay-timestamp", timestamp.to_string()),
        ("wechatpay-nonce", header_nonce),
        ("wechatpay-signature", signature),
        ("wechatpay-serial", serial.to_owned()),
        ("wechatpay-signature-type", "WECHATPAY2-SHA256-RSA2048".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    (headers, sent)
}

fn v2_notification(
    order: &SimOrder,
    merchant: &MerchantConfig,
    total: u64,
    hmac: bool,
    mode: &str,
) -> (Vec<(String, String)>, String) {
    let mut fields: BTreeMap<String, String> = [
        ("return_code", "SUCCESS".to_owned()),
        ("appid", order.appid.clone()),
        ("mch_id", order.mchid.clone()),
        ("nonce_str", random_text(16)),
        ("result_code", "SUCCESS".to_owned()),
        ("openid", order.openid.clone()),
        ("is_subscribe", "N".to_owned()),
        ("trade_type", "JSAPI".to_owned()),
        ("bank_type", "OTHERS".to_owned()),
        ("total_fee", total.to_string()),
        ("cash_fee", total.to_string()),
        ("transaction_id", order.transaction_id.clone().unwrap_or_default()),
        ("out_trade_no", order.out_trade_no.clone()),
        ("time_end", "20261125120000".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    if hmac {
        fields.insert("sign_type".into(), "HMAC-SHA256".into());
    }
    let key = if mode == "wrong_key" {
        "0".repeat(32)
    } else {
        merchant.apiv2_key.clone()
    };
    let sign = v2_sign(&fields, &key, hmac);
    fields.insert("sign".into(), sign);
    if mode == "tampered" {
        // Changed after signing: the sign no longer covers what is claimed.
        fields.insert("total_fee".into(), (total + 1).to_string());
    }
    (
        vec![("content-type".to_owned(), "text/xml".to_owned())],
        to_xml(&fields),
    )
}

#[cfg(test)]
mod tests {
    use rustls_pki_types::CertificateDer;

    use super::*;

    #[test]
    fn pem_is_written_as_openssl_writes_it() {
        let der = CertificateDer::from_pem_slice(PLATFORM_CERT_PEM.as_bytes()).unwrap();
        assert_eq!(to_pem("CERTIFICATE", &der), PLATFORM_CERT_PEM);
        let key = PrivatePkcs8KeyDer::from_pem_slice(PLATFORM_KEY_PEM.as_bytes()).unwrap();
        assert_eq!(to_pem("PRIVATE KEY", key.secret_pkcs8_der()), PLATFORM_KEY_PEM);
    }

    #[test]
    fn the_platform_public_key_checks_platform_signatures() {
        let spki: PublicKeyX509Der = platform_key().public_key().as_der().unwrap();
        let pem = to_pem("PUBLIC KEY", spki.as_ref());
        let spki = SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes()).unwrap();
        let signature = STANDARD.decode(rsa_sign(&platform_key(), b"hello")).unwrap();
        UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, spki.as_ref())
            .verify(b"hello", &signature)
            .expect("the SPKI holds the platform key");
    }
}
