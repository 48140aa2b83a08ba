//! WeChat Pay as the simulator plays it: APIv3 JSAPI prepay, order query and close (our
//! Authorization checked with the merchant's public key, answers signed with the simulator's
//! platform key), APIv2 unified order (XML, sign checked both ways), and payment completion that
//! delivers the notification to the order's notify_url the way WeChat Pay does (`notify.rs`).
//!
//! Answers and notifications name the platform key in `Wechatpay-Serial`: the WeChat Pay public
//! key id by default; `POST /__sim/pay/signer {"serial": "public_key" | "certificate" | "alternate"}`
//! switches to the platform certificate's serial or to a second certificate serial, as during
//! WeChat Pay's key switch. The key itself is the same for all three (see [`Signer`]).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, KeyPair, RsaKeyPair, UnparsedPublicKey};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
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
use crate::notify::{Event, Label, Outgoing, PayNotification, v3_envelope};
use crate::pay_faults::{Aftermath, Cut, severed};
use crate::state::{SimState, random_text, rfc3339_cst};

/// The simulator's platform key (test only), also presented as a certificate with this serial.
const PLATFORM_KEY_PEM: &str = include_str!("platform_key.pem");
pub const PLATFORM_CERT_PEM: &str = include_str!("platform_cert.pem");
pub const PLATFORM_CERT_SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A72";
pub const PLATFORM_PUBLIC_KEY_ID: &str = "PUB_KEY_ID_0114232134912410000000000000";
/// A second platform certificate serial, as during a certificate switch (the same key here).
pub const PLATFORM_ALTERNATE_SERIAL: &str = "6B2E9A6C0F3D4B5A8E7F1C2D3E4F5A6B";

/// Which serial WeChat Pay's answers and notifications name in `Wechatpay-Serial`
/// (`POST /__sim/pay/signer`). All three name the one platform key of the simulator: what a
/// client must get right is picking its key by the serial, and refusing a serial it does not know.
#[derive(Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signer {
    /// The WeChat Pay public key id, `PUB_KEY_ID_…` (new merchants; the default).
    #[default]
    PublicKey,
    /// The platform certificate's serial.
    Certificate,
    /// Another certificate serial, as when WeChat Pay switches certificates.
    Alternate,
}

impl Signer {
    pub fn serial(self) -> &'static str {
        match self {
            Signer::PublicKey => PLATFORM_PUBLIC_KEY_ID,
            Signer::Certificate => PLATFORM_CERT_SERIAL,
            Signer::Alternate => PLATFORM_ALTERNATE_SERIAL,
        }
    }
}

/// DER as a PEM block (64-character lines, LF).
pub fn to_pem(label: &str, der: &[u8]) -> String {
    pem_rfc7468::encode_string(label, pem_rfc7468::LineEnding::LF, der).expect("a PEM label and any DER encode")
}

/// The platform private key as PKCS#8 DER (to decrypt what merchants encrypt for WeChat Pay).
pub(crate) fn platform_pkcs8() -> Vec<u8> {
    let der = PrivatePkcs8KeyDer::from_pem_slice(PLATFORM_KEY_PEM.as_bytes()).expect("PEM");
    der.secret_pkcs8_der().to_vec()
}

pub fn platform_key() -> RsaKeyPair {
    let der = PrivatePkcs8KeyDer::from_pem_slice(PLATFORM_KEY_PEM.as_bytes()).expect("PEM");
    RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).expect("the platform key parses")
}

pub(crate) fn rsa_sign(key: &RsaKeyPair, message: &[u8]) -> String {
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
    pub(crate) apiv3_key: String,
    apiv2_key: String,
}

#[derive(Clone, Copy, PartialEq)]
enum Api {
    V3,
    V2 { hmac: bool },
}

/// One merchant order (`out_trade_no`) as WeChat Pay keeps it; each prepay call for it adds a
/// prepay_id that pays this same order.
#[derive(Clone)]
pub(crate) struct SimOrder {
    pub out_trade_no: String,
    pub appid: String,
    pub mchid: String,
    pub openid: String,
    pub description: String,
    pub attach: String,
    pub total: u64,
    notify_url: String,
    api: Api,
    pub created_at: i64,
    /// Set when paid, with the time on the simulator's clock.
    pub transaction_id: Option<String>,
    pub paid_at: Option<i64>,
    pub closed: bool,
}

#[derive(Default)]
pub struct PayState {
    merchant: Option<MerchantConfig>,
    /// By out_trade_no.
    orders: HashMap<String, SimOrder>,
    /// prepay_id → out_trade_no.
    prepays: HashMap<String, String>,
    pub(crate) signer: Signer,
}

impl PayState {
    pub(crate) fn merchant(&self) -> Option<&MerchantConfig> {
        self.merchant.as_ref()
    }

    pub(crate) fn order(&self, out_trade_no: &str) -> Option<&SimOrder> {
        self.orders.get(out_trade_no)
    }

    /// Every order, by out_trade_no.
    pub(crate) fn orders(&self) -> Vec<&SimOrder> {
        let mut orders: Vec<&SimOrder> = self.orders.values().collect();
        orders.sort_by(|a, b| a.out_trade_no.cmp(&b.out_trade_no));
        orders
    }

    pub(crate) fn order_by_transaction_id(&self, transaction_id: &str) -> Option<&SimOrder> {
        self.orders
            .values()
            .find(|o| o.transaction_id.as_deref() == Some(transaction_id))
    }

    /// A new prepay_id for `order`, which is stored unless an order of that number exists.
    fn prepay(&mut self, now: i64, order: SimOrder) -> String {
        let prepay_id = format!("wx{}{}", now, random_text(18));
        self.prepays.insert(prepay_id.clone(), order.out_trade_no.clone());
        self.orders.entry(order.out_trade_no.clone()).or_insert(order);
        prepay_id
    }
}

/// `trade_state` and `trade_state_desc` of an order; any refund that is not closed turns a paid
/// order into REFUND ("订单发生过退款，退款详情请查询退款单", which WeChat Pay answers after partial
/// refunds too).
pub(crate) fn trade_state(sim: &SimState, order: &SimOrder) -> (&'static str, &'static str) {
    if order.closed {
        ("CLOSED", "订单已关闭")
    } else if order.transaction_id.is_none() {
        ("NOTPAY", "订单未支付")
    } else if sim.refunds.any_open(&order.out_trade_no) {
        ("REFUND", "订单发生过退款，退款详情请查询退款单")
    } else {
        ("SUCCESS", "支付成功")
    }
}

/// The transaction object of queries and (with SUCCESS) of payment notifications.
fn transaction_json(order: &SimOrder, state: (&str, &str), total: u64) -> Value {
    let mut transaction = json!({
        "appid": order.appid, "mchid": order.mchid, "out_trade_no": order.out_trade_no,
        "trade_state": state.0, "trade_state_desc": state.1, "attach": order.attach,
        "amount": { "total": total, "currency": "CNY", "payer_currency": "CNY" },
        "payer": {},
    });
    if let (Some(transaction_id), Some(paid_at)) = (&order.transaction_id, order.paid_at) {
        transaction["transaction_id"] = json!(transaction_id);
        transaction["trade_type"] = json!("JSAPI");
        transaction["bank_type"] = json!("OTHERS");
        transaction["success_time"] = json!(rfc3339_cst(paid_at));
        transaction["payer"] = json!({ "openid": order.openid });
        transaction["amount"]["payer_total"] = json!(total);
    }
    transaction
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
        return admin_error(StatusCode::BAD_REQUEST, "public_key must be a BEGIN PUBLIC KEY PEM");
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

/// `GET /__sim/pay/platform`: WeChat Pay's public key and certificate, for the merchant's secret,
/// and the alternate certificate serial [`Signer::Alternate`] names (the same key).
pub async fn platform() -> Response {
    let spki: PublicKeyX509Der = platform_key().public_key().as_der().expect("an RSA public key encodes");
    Json(json!({
        "public_key_id": PLATFORM_PUBLIC_KEY_ID,
        "public_key": to_pem("PUBLIC KEY", spki.as_ref()),
        "certificate_serial": PLATFORM_CERT_SERIAL,
        "certificate": PLATFORM_CERT_PEM,
        "alternate_serial": PLATFORM_ALTERNATE_SERIAL,
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignerBody {
    serial: Signer,
}

/// `POST /__sim/pay/signer`: the serial answers and notifications name from now on.
pub async fn set_signer(State(state): State<Shared>, Json(body): Json<SignerBody>) -> Response {
    state.lock().unwrap().pay.signer = body.serial;
    Json(json!({ "serial": body.serial.serial() })).into_response()
}

/// An error of the `/__sim/` admin endpoints (not a WeChat answer).
pub(crate) fn admin_error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
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

/// An answer signed the way WeChat Pay signs: `Wechatpay-*` headers over `ts\nnonce\nbody\n`
/// (an empty body for 204). `tamper` alters the body after signing (an ID in it, or else what
/// was signed), so that the signature does not match what is sent.
fn signed(status: StatusCode, text: String, now: i64, tamper: bool, serial: &str) -> Response {
    let nonce = random_text(32);
    let altered = text.replace("wx", "wy");
    let (covered, sent) = match (tamper, altered == text) {
        (false, _) => (text.clone(), text),
        (true, false) => (text, altered),
        (true, true) => (format!("{text} "), text),
    };
    let signature = rsa_sign(&platform_key(), format!("{now}\n{nonce}\n{covered}\n").as_bytes());
    let mut headers = vec![
        ("wechatpay-timestamp", now.to_string()),
        ("wechatpay-nonce", nonce),
        ("wechatpay-signature", signature),
        ("wechatpay-serial", serial.to_owned()),
    ];
    if !sent.is_empty() {
        headers.push(("content-type", "application/json".to_owned()));
    }
    let mut response = (status, sent).into_response();
    for (k, v) in headers {
        response
            .headers_mut()
            .insert(k, v.parse().expect("header values are ASCII"));
    }
    response
}

/// WeChat Pay's error shape, `{"code", "message"}`, signed like any answer.
fn signed_error(now: i64, tamper: bool, serial: &str, status: StatusCode, code: &str, message: &str) -> Response {
    signed(
        status,
        json!({ "code": code, "message": message }).to_string(),
        now,
        tamper,
        serial,
    )
}

/// A checked APIv3 call: the merchant whose signature verified, the simulator's clock, the
/// serial its answer is signed under, and what an injected fault does to the answer (a broken
/// signature, a wait or a cut once processed).
pub(crate) struct V3Call {
    pub merchant: MerchantConfig,
    pub now: i64,
    tamper: bool,
    serial: &'static str,
    after: Aftermath,
}

/// A request body that is a JSON object.
pub(crate) fn json_object(body: &[u8]) -> Option<Value> {
    serde_json::from_slice::<Value>(body).ok().filter(Value::is_object)
}

impl V3Call {
    pub fn merchant_id(&self) -> &str {
        &self.merchant.mchid
    }

    pub fn reply(&self, status: StatusCode, body: &Value) -> Response {
        self.after
            .mark(signed(status, body.to_string(), self.now, self.tamper, self.serial))
    }

    pub fn error(&self, status: StatusCode, code: &str, message: &str) -> Response {
        self.after
            .mark(signed_error(self.now, self.tamper, self.serial, status, code, message))
    }

    pub fn no_content(&self) -> Response {
        self.after.mark(signed(
            StatusCode::NO_CONTENT,
            String::new(),
            self.now,
            self.tamper,
            self.serial,
        ))
    }

    /// The PARAM_ERROR answer to a body that is not a JSON object.
    pub fn not_json(&self) -> Response {
        self.error(StatusCode::BAD_REQUEST, "PARAM_ERROR", "请求体不是合法的JSON对象")
    }
}

/// What every APIv3 endpoint does first: logs the call as `api` and plays a queued fault (see
/// `pay_faults.rs`), then checks the Authorization over `METHOD\nURL\nTIMESTAMP\nNONCE\nBODY\n`
/// with the merchant's public key (URL as the request line has it: path and query).
pub(crate) async fn v3_begin(state: &Shared, api: &str, request: &Parts, body: &[u8]) -> Result<V3Call, Response> {
    let fault = state.lock().unwrap().begin(api);
    let mut after = Aftermath::default();
    if let Some(f) = &fault {
        if f.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(f.delay_ms)).await;
        }
        if let Some(status) = f.http_status {
            // A gateway failure: not a signed WeChat Pay answer.
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Err((
                status,
                Json(json!({"code": "SYSTEM_ERROR", "message": "injected fault"})),
            )
                .into_response());
        }
        if f.cut == Some(Cut::Before) {
            return Err(severed());
        }
        after = Aftermath {
            delay_ms: f.delay_after_ms,
            cut: f.cut == Some(Cut::After),
        };
    }
    let tamper = fault.as_ref().is_some_and(|f| f.bad_signature);
    let sim = state.lock().unwrap();
    let now = sim.now();
    let serial = sim.pay.signer.serial();
    if let Some(e) = fault.as_ref().and_then(|f| f.pay_error.as_ref()) {
        // WeChat Pay refused the call: nothing was processed.
        let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Err(after.mark(signed_error(now, tamper, serial, status, &e.code, &e.message)));
    }
    let Some(merchant) = sim.pay.merchant.clone() else {
        return Err(after.mark(signed_error(
            now,
            tamper,
            serial,
            StatusCode::UNAUTHORIZED,
            "SIGN_ERROR",
            "no merchant is configured in the simulator",
        )));
    };
    let call = V3Call {
        merchant,
        now,
        tamper,
        serial,
        after,
    };
    let auth = request
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_authorization);
    let Some(auth) = auth else {
        return Err(call.error(
            StatusCode::UNAUTHORIZED,
            "SIGN_ERROR",
            "missing or malformed Authorization",
        ));
    };
    let field = |k: &str| auth.get(k).cloned().unwrap_or_default();
    let url = request.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let message = [
        format!(
            "{}\n{url}\n{}\n{}\n",
            request.method,
            field("timestamp"),
            field("nonce_str")
        )
        .as_bytes(),
        body,
        b"\n",
    ]
    .concat();
    let signature = STANDARD.decode(field("signature")).unwrap_or_default();
    let verified = UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, &call.merchant.public_key)
        .verify(&message, &signature)
        .is_ok();
    if !verified || field("mchid") != call.merchant.mchid || field("serial_no") != call.merchant.serial_no {
        return Err(call.error(
            StatusCode::UNAUTHORIZED,
            "SIGN_ERROR",
            "签名错误: the Authorization signature does not verify",
        ));
    }
    Ok(call)
}

/// [`v3_begin`] for a request whose body must be a JSON object: the call and the body.
pub(crate) async fn v3_begin_json(
    state: &Shared,
    api: &str,
    request: &Parts,
    body: &[u8],
) -> Result<(V3Call, Value), Response> {
    let call = v3_begin(state, api, request, body).await?;
    match json_object(body) {
        Some(json) => Ok((call, json)),
        None => Err(call.not_json()),
    }
}

/// `POST /v3/pay/transactions/jsapi`.
pub async fn jsapi(State(state): State<Shared>, request: Parts, body: Bytes) -> Response {
    let (call, req) = match v3_begin_json(&state, "pay_jsapi", &request, &body).await {
        Ok(begun) => begun,
        Err(response) => return response,
    };
    let s = |k: &str| req[k].as_str().unwrap_or_default().to_owned();
    let total = req["amount"]["total"].as_u64().unwrap_or(0);
    let out_trade_no = s("out_trade_no");
    let valid_no = (6..=32).contains(&out_trade_no.len())
        && out_trade_no
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-|*".contains(&b));
    if s("appid").is_empty()
        || s("mchid") != call.merchant.mchid
        || !valid_no
        || total == 0
        || s("notify_url").is_empty()
    {
        return call.error(
            StatusCode::BAD_REQUEST,
            "PARAM_ERROR",
            "appid, mchid, out_trade_no, amount.total, notify_url",
        );
    }
    if s("description").chars().count() > 127 || req["payer"]["openid"].as_str().unwrap_or_default().is_empty() {
        return call.error(StatusCode::BAD_REQUEST, "PARAM_ERROR", "description or payer.openid");
    }
    let mut sim = state.lock().unwrap();
    if let Some(existing) = sim.pay.order(&out_trade_no) {
        if existing.transaction_id.is_some() {
            return call.error(StatusCode::BAD_REQUEST, "ORDERPAID", "该订单已支付");
        }
        if existing.closed {
            return call.error(StatusCode::BAD_REQUEST, "ORDER_CLOSED", "订单已关闭");
        }
        if existing.total != total {
            return call.error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", "参数与首次请求时不一致");
        }
    }
    let order = SimOrder {
        out_trade_no,
        appid: s("appid"),
        mchid: s("mchid"),
        openid: req["payer"]["openid"].as_str().unwrap_or_default().to_owned(),
        description: s("description"),
        attach: s("attach"),
        total,
        notify_url: s("notify_url"),
        api: Api::V3,
        created_at: call.now,
        transaction_id: None,
        paid_at: None,
        closed: false,
    };
    let prepay_id = sim.pay.prepay(call.now, order);
    call.reply(StatusCode::OK, &json!({ "prepay_id": prepay_id }))
}

/// `GET /v3/pay/transactions/out-trade-no/{out_trade_no}?mchid=` and
/// `GET /v3/pay/transactions/id/{transaction_id}?mchid=` (only a paid order has one): the
/// transaction object, or 404 ORDER_NOT_EXIST.
pub async fn query(
    State(state): State<Shared>,
    Path(number): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    request: Parts,
) -> Response {
    let call = match v3_begin(&state, "pay_query", &request, b"").await {
        Ok(call) => call,
        Err(response) => return response,
    };
    let Some(mchid) = params.get("mchid").filter(|m| !m.is_empty()) else {
        return call.error(StatusCode::BAD_REQUEST, "PARAM_ERROR", "mchid 为必填参数");
    };
    let mut sim = state.lock().unwrap();
    crate::refund::settle_due_in_background(&mut sim);
    let order = if request.uri.path().starts_with("/v3/pay/transactions/id/") {
        sim.pay.order_by_transaction_id(&number)
    } else {
        sim.pay.order(&number)
    };
    match order.filter(|o| &o.mchid == mchid) {
        Some(order) => call.reply(
            StatusCode::OK,
            &transaction_json(order, trade_state(&sim, order), order.total),
        ),
        None => call.error(StatusCode::NOT_FOUND, "ORDER_NOT_EXIST", "订单不存在"),
    }
}

/// `POST /v3/pay/transactions/out-trade-no/{out_trade_no}/close` `{"mchid"}`: 204, also for an
/// order already closed or unknown (WeChat Pay does not check that it exists); 400 ORDERPAID for a
/// paid one. A closed order cannot be paid any more.
pub async fn close(
    State(state): State<Shared>,
    Path(out_trade_no): Path<String>,
    request: Parts,
    body: Bytes,
) -> Response {
    let (call, req) = match v3_begin_json(&state, "pay_close", &request, &body).await {
        Ok(begun) => begun,
        Err(response) => return response,
    };
    let mchid = req["mchid"].as_str().unwrap_or_default();
    if mchid.is_empty() {
        return call.error(StatusCode::BAD_REQUEST, "PARAM_ERROR", "mchid 为必填参数");
    }
    let mut sim = state.lock().unwrap();
    match sim.pay.orders.get_mut(&out_trade_no).filter(|o| o.mchid == mchid) {
        Some(order) if order.transaction_id.is_some() => call.error(StatusCode::BAD_REQUEST, "ORDERPAID", "订单已支付"),
        Some(order) => {
            order.closed = true;
            call.no_content()
        }
        None => call.no_content(),
    }
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
    let now = sim.now();
    let existing = sim.pay.order(&get("out_trade_no"));
    let refusal = if get("mch_id") != merchant.mchid
        || total == 0
        || get("trade_type") != "JSAPI"
        || get("openid").is_empty()
        || get("out_trade_no").is_empty()
    {
        Some(("PARAM_ERROR", "参数错误"))
    } else if existing.is_some_and(|o| o.transaction_id.is_some()) {
        Some(("ORDERPAID", "该订单已支付"))
    } else if existing.is_some_and(|o| o.closed) {
        Some(("ORDERCLOSED", "订单已关闭"))
    } else if existing.is_some_and(|o| o.total != total) {
        Some(("OUT_TRADE_NO_USED", "商户订单号重复"))
    } else {
        None
    };
    if let Some((code, description)) = refusal {
        answer.insert("result_code".into(), "FAIL".into());
        answer.insert("err_code".into(), code.into());
        answer.insert("err_code_des".into(), description.into());
    } else {
        let order = SimOrder {
            out_trade_no: get("out_trade_no"),
            appid: get("appid"),
            mchid: get("mch_id"),
            openid: get("openid"),
            description: get("body"),
            attach: get("attach"),
            total,
            notify_url: get("notify_url"),
            api: Api::V2 { hmac },
            created_at: now,
            transaction_id: None,
            paid_at: None,
            closed: false,
        };
        let prepay_id = sim.pay.prepay(now, order);
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
    /// normal | tampered | stale | signtest | wrong_key | certificate | drop
    #[serde(default)]
    mode: Option<String>,
    /// Deliver this many copies at once (duplicate notifications).
    #[serde(default)]
    copies: Option<u32>,
    /// Claim this amount in the notification instead of the order's.
    #[serde(default)]
    amount: Option<u64>,
}

/// `POST /__sim/pay/complete`: the user pays; WeChat Pay notifies the merchant (`drop`: the
/// payment succeeds but no notification is ever sent). A closed order cannot be paid: 409.
pub async fn complete(State(state): State<Shared>, Json(body): Json<CompleteBody>) -> Response {
    let mode = body.mode.unwrap_or_else(|| "normal".into());
    if !crate::notify::MODES.contains(&mode.as_str()) {
        return admin_error(StatusCode::BAD_REQUEST, "unknown mode");
    }
    let (order, merchant, now, serial) = {
        let mut sim = state.lock().unwrap();
        let now = sim.now();
        let serial = sim.pay.signer.serial();
        let Some(merchant) = sim.pay.merchant.clone() else {
            return admin_error(StatusCode::BAD_REQUEST, "no merchant configured");
        };
        let out_trade_no = sim.pay.prepays.get(&body.prepay_id).cloned().unwrap_or_default();
        let Some(order) = sim.pay.orders.get_mut(&out_trade_no) else {
            return admin_error(StatusCode::NOT_FOUND, "unknown prepay_id");
        };
        if order.closed {
            return admin_error(StatusCode::CONFLICT, "the order is closed: it can no longer be paid");
        }
        if order.transaction_id.is_none() {
            order.transaction_id = Some(format!("4200{}{}", now, random_text(8)));
            order.paid_at = Some(now);
        }
        (order.clone(), merchant, now, serial)
    };
    let total = body.amount.unwrap_or(order.total);
    let (headers, payload) = match order.api {
        Api::V3 => {
            let resource = transaction_json(&order, ("SUCCESS", "支付成功"), total);
            let event = Event {
                event_type: "TRANSACTION.SUCCESS",
                summary: "支付成功",
                original_type: "transaction",
                resource: &resource,
            };
            v3_envelope(&merchant.apiv3_key, &event, now, &mode, serial)
        }
        Api::V2 { hmac } => v2_notification(&order, &merchant, total, hmac, &mode),
    };
    let notification = PayNotification {
        label: Label {
            kind: "transaction",
            key: order.out_trade_no.clone(),
            state: "SUCCESS".into(),
        },
        outgoing: Outgoing {
            url: order.notify_url.clone(),
            headers,
            body: payload,
        },
        copies: body.copies.unwrap_or(1),
        mode,
    };
    let deliveries = crate::notify::send(&state, notification).await;
    Json(
        json!({ "transaction_id": order.transaction_id, "out_trade_no": order.out_trade_no, "deliveries": deliveries }),
    )
    .into_response()
}

/// `yyyyMMddHHmmss` in China Standard Time, v2's `time_end`.
fn v2_time(secs: i64) -> String {
    rfc3339_cst(secs)[..19].replace(['-', 'T', ':'], "")
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
        ("time_end", v2_time(order.paid_at.unwrap_or_default())),
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
