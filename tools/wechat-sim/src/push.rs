//! Message push (消息推送): WeChat POSTs messages and events to the URL the developer set in the
//! console, signed with the console's token (`signature` = sha1 of the sorted token, timestamp and
//! nonce) and, in safe or compat mode, encrypted with its EncodingAESKey (AES-256-CBC, IV the key's
//! first 16 bytes, PKCS#7 over 32-byte blocks, `msg_signature` over the `Encrypt` too). Written here
//! apart from the server's own code so that each checks the other. A push is retried until answered
//! `success` or an empty body; tests also ask for forged, stale, replayed and duplicated ones. A
//! user's customer-service message may also be answered with a passive reply that hands the
//! conversation to the console's agents ([`ConversationPush`]).

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit, block_padding::NoPadding};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::Shared;
use crate::crypto::{random_bytes, sorted_sha1};
use crate::notify::{Outgoing, deliver_all};
use crate::pay::admin_error;
use crate::state::random_text;

/// WeChat tries a push this many times in all while it is not acknowledged (it waits 5 s for each
/// answer; the simulator waits as long but retries after 100 ms rather than at once).
pub const ATTEMPTS: u32 = 3;

/// How the console's 消息加密方式 is set.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// 明文模式: the message as is, `signature` only.
    Plain,
    /// 兼容模式: the message's fields and its `Encrypt`.
    Compat,
    /// 安全模式: `ToUserName` and `Encrypt` only.
    Safe,
}

/// The console's 数据格式.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Xml,
    Json,
}

/// What the developer set in the console (开发管理 → 消息推送).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    url: String,
    token: String,
    #[serde(default)]
    encoding_aes_key: String,
    mode: Mode,
    format: Format,
}

/// A forged push: what is wrong with it.
#[derive(Clone, Copy, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Tamper {
    /// `signature` (and `msg_signature`) do not match.
    Signature,
    /// Another sender in the body after signing: in plain mode nothing can tell (the signature
    /// does not cover the body); encrypted, `msg_signature` no longer matches the `Encrypt`.
    Body,
    /// Correctly signed and encrypted, but for another app id.
    Appid,
    /// Correctly signed, but the decrypted padding is not PKCS#7.
    Padding,
}

/// A push as sent: replayed verbatim on request.
struct Sent {
    push_id: String,
    message: Value,
    requests: Vec<Outgoing>,
    deliveries: Vec<Value>,
}

#[derive(Default)]
pub struct PushState {
    config: Option<PushConfig>,
    sent: Vec<Sent>,
}

impl PushState {
    /// Whether the developer has set a push URL.
    pub fn configured(&self) -> bool {
        self.config.is_some()
    }
}

/// The mini program's original id (`gh_…`), the `ToUserName` of every push.
pub fn original_id(app_id: &str) -> String {
    format!("gh_{}", &sorted_sha1(&[app_id])[..12])
}

/// The 32-byte key of an EncodingAESKey: base64 of its 43 characters and "=". WeChat's keys are
/// random characters, so the last one may carry bits a strict decoder refuses.
fn aes_key(encoding_aes_key: &str) -> Option<[u8; 32]> {
    let lenient = GeneralPurpose::new(
        &alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
    );
    if encoding_aes_key.len() != 43 || !encoding_aes_key.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    lenient.decode(format!("{encoding_aes_key}=")).ok()?.try_into().ok()
}

/// base64 of AES-256-CBC (IV = the key's first 16 bytes) over 16 random bytes ‖ the message's
/// length (4 bytes, big-endian) ‖ the message ‖ the app id, PKCS#7-padded to 32 bytes; with
/// `bad_padding` the pad bytes are 0, which no PKCS#7 reading accepts.
pub fn encrypt(key: &[u8; 32], message: &str, app_id: &str, bad_padding: bool) -> String {
    let mut plain = random_bytes::<16>().to_vec();
    plain.extend_from_slice(&(message.len() as u32).to_be_bytes());
    plain.extend_from_slice(message.as_bytes());
    plain.extend_from_slice(app_id.as_bytes());
    let pad = 32 - plain.len() % 32;
    plain.resize(plain.len() + pad, if bad_padding { 0 } else { pad as u8 });
    let cipher = cbc::Encryptor::<aes::Aes256>::new_from_slices(key, &key[..16]).expect("32-byte key, 16-byte IV");
    STANDARD.encode(cipher.encrypt_padded_vec_mut::<NoPadding>(&plain))
}

/// The message of an `Encrypt` made as [`encrypt`] makes it, read as WeChat reads a passive reply:
/// whole AES blocks, PKCS#7 pad bytes (1 to 32) all equal to their count, the length within the
/// plaintext and the app id after the message exactly `app_id`'s.
pub fn decrypt(key: &[u8; 32], encrypted: &str, app_id: &str) -> Option<String> {
    let sealed = STANDARD.decode(encrypted.trim()).ok()?;
    if sealed.is_empty() || sealed.len() % 16 != 0 {
        return None;
    }
    let cipher = cbc::Decryptor::<aes::Aes256>::new_from_slices(key, &key[..16]).ok()?;
    let plain = cipher.decrypt_padded_vec_mut::<NoPadding>(&sealed).ok()?;
    let pad = usize::from(*plain.last()?);
    if !(1..=32).contains(&pad)
        || pad > plain.len()
        || plain[plain.len() - pad..].iter().any(|b| usize::from(*b) != pad)
    {
        return None;
    }
    let plain = &plain[..plain.len() - pad];
    let len = u32::from_be_bytes(plain.get(16..20)?.try_into().ok()?) as usize;
    let end = 20usize.checked_add(len)?;
    let message = plain.get(20..end)?;
    if &plain[end..] != app_id.as_bytes() {
        return None;
    }
    String::from_utf8(message.to_vec()).ok()
}

/// The message as WeChat writes it: `<xml>` with text in CDATA, numbers bare, objects nested and
/// arrays as repeated elements; or JSON.
pub fn render(format: Format, message: &Map<String, Value>) -> String {
    match format {
        Format::Json => Value::Object(message.clone()).to_string(),
        Format::Xml => {
            let mut out = String::from("<xml>");
            for (name, value) in message {
                xml_element(&mut out, name, value);
            }
            out.push_str("</xml>");
            out
        }
    }
}

fn xml_element(out: &mut String, name: &str, value: &Value) {
    if let Value::Array(items) = value {
        for item in items {
            xml_element(out, name, item);
        }
        return;
    }
    out.push_str(&format!("<{name}>"));
    match value {
        Value::String(text) => {
            // "]]>" cannot stand inside CDATA: close the section around it.
            out.push_str(&format!("<![CDATA[{}]]>", text.replace("]]>", "]]]]><![CDATA[>")));
        }
        Value::Object(fields) => {
            for (k, v) in fields {
                xml_element(out, k, v);
            }
        }
        Value::Null => {}
        other => out.push_str(&other.to_string()),
    }
    out.push_str(&format!("</{name}>"));
}

/// The fields of a flat `<xml>` message (a passive reply), as text: each element's text and CDATA
/// sections joined, the five predefined entities read. `None` for anything else (nested elements,
/// unclosed tags, text outside elements).
pub fn parse_xml(body: &str) -> Option<Map<String, Value>> {
    let mut rest = body.trim();
    if let Some(prolog) = rest.strip_prefix("<?xml") {
        rest = prolog.split_once("?>")?.1.trim_start();
    }
    let mut rest = rest.strip_prefix("<xml>")?.strip_suffix("</xml>")?;
    let mut fields = Map::new();
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return Some(fields);
        }
        let (name, mut inner) = rest.strip_prefix('<')?.split_once('>')?;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return None;
        }
        let close = format!("</{name}>");
        let mut text = String::new();
        loop {
            if let Some(cdata) = inner.strip_prefix("<![CDATA[") {
                let (part, after) = cdata.split_once("]]>")?;
                text.push_str(part);
                inner = after;
            } else if let Some(after) = inner.strip_prefix(close.as_str()) {
                inner = after;
                break;
            } else {
                let end = inner.find('<')?;
                if end == 0 {
                    return None;
                }
                text.push_str(&unescape(&inner[..end]));
                inner = &inner[end..];
            }
        }
        fields.insert(name.to_owned(), Value::String(text));
        rest = inner;
    }
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// An event's common fields (`ToUserName` and `CreateTime` are added when it is sent).
pub fn event(openid: &str, name: &str) -> Map<String, Value> {
    let mut message = Map::new();
    message.insert("FromUserName".into(), json!(openid));
    message.insert("MsgType".into(), json!("event"));
    message.insert("Event".into(), json!(name));
    message
}

/// Adds an event's list of items as WeChat writes it: in XML under `<wrapper><List>…`, in JSON as
/// a top-level `List` that is the item itself when there is one, else an array.
pub fn add_list(format: Format, message: &mut Map<String, Value>, wrapper: &str, mut items: Vec<Value>) {
    match format {
        Format::Xml => {
            message.insert(wrapper.into(), json!({ "List": items }));
        }
        Format::Json if items.len() == 1 => {
            message.insert("List".into(), items.remove(0));
        }
        Format::Json => {
            message.insert("List".into(), Value::Array(items));
        }
    }
}

/// A random number of `digits` digits (WeChat's nonces, echostr and message ids are numeric).
fn random_digits(digits: usize) -> String {
    let bytes = random_bytes::<32>();
    let mut text: String = bytes.iter().take(digits).map(|b| char::from(b'0' + b % 10)).collect();
    if text.starts_with('0') {
        text.replace_range(0..1, "1");
    }
    text
}

/// A new message id, as WeChat numbers messages (19 digits).
pub fn new_msg_id() -> u64 {
    random_digits(19).parse().expect("19 digits fit a u64")
}

/// What a push is made of, taken from the simulator under its lock.
struct Prepared {
    config: PushConfig,
    app_id: String,
    now: i64,
}

impl Prepared {
    fn of(state: &Shared) -> Option<Prepared> {
        let sim = state.lock().unwrap();
        Some(Prepared {
            config: sim.push.config.clone()?,
            app_id: sim.config.app_id.clone(),
            now: sim.now(),
        })
    }

    /// Fills in what WeChat adds to every message: its addressee, time and (for a message rather
    /// than an event) id.
    fn complete(&self, mut message: Map<String, Value>) -> Map<String, Value> {
        message
            .entry("ToUserName")
            .or_insert_with(|| json!(original_id(&self.app_id)));
        message.entry("CreateTime").or_insert_with(|| json!(self.now));
        if message.get("MsgType").and_then(Value::as_str) != Some("event") {
            message.entry("MsgId").or_insert_with(|| json!(new_msg_id()));
        }
        message
    }

    /// The signed (and, in safe or compat mode, encrypted) POST of `message`, forged as `tamper` says.
    fn request(&self, message: &Map<String, Value>, timestamp: i64, tamper: Option<Tamper>) -> Outgoing {
        let config = &self.config;
        let (timestamp, nonce) = (timestamp.to_string(), random_digits(10));
        // What is sent: with a forged body, another sender than the one signed for.
        let mut sent = message.clone();
        if tamper == Some(Tamper::Body) {
            sent.insert("FromUserName".into(), json!(format!("o_forged_{}", random_text(8))));
        }
        let mut signature = sorted_sha1(&[&config.token, &timestamp, &nonce]);
        let mut query = vec![("timestamp", timestamp.clone()), ("nonce", nonce.clone())];
        let body = match (config.mode, aes_key(&config.encoding_aes_key)) {
            (Mode::Plain, _) | (_, None) => render(config.format, &sent),
            (mode, Some(key)) => {
                let app_id = if tamper == Some(Tamper::Appid) {
                    format!("wx{}", hex::encode(random_bytes::<8>()))
                } else {
                    self.app_id.clone()
                };
                let bad_padding = tamper == Some(Tamper::Padding);
                let signed = encrypt(&key, &render(config.format, message), &app_id, bad_padding);
                let mut msg_signature = sorted_sha1(&[&config.token, &timestamp, &nonce, &signed]);
                let sealed = if tamper == Some(Tamper::Body) {
                    // Another message encrypted after msg_signature was computed over the first.
                    encrypt(&key, &render(config.format, &sent), &app_id, false)
                } else {
                    signed
                };
                if tamper == Some(Tamper::Signature) {
                    msg_signature = sorted_sha1(&[&msg_signature, "forged"]);
                }
                query.push(("encrypt_type", "aes".into()));
                query.push(("msg_signature", msg_signature));
                let mut envelope = if mode == Mode::Compat {
                    sent.clone()
                } else {
                    Map::from_iter([("ToUserName".to_owned(), sent["ToUserName"].clone())])
                };
                envelope.insert("Encrypt".into(), json!(sealed));
                render(config.format, &envelope)
            }
        };
        if tamper == Some(Tamper::Signature) {
            signature = sorted_sha1(&[&signature, "forged"]);
        }
        query.insert(0, ("signature", signature));
        let mut url = reqwest::Url::parse(&config.url).expect("checked when configured");
        url.query_pairs_mut().extend_pairs(query);
        let content_type = match config.format {
            Format::Xml => "text/xml",
            Format::Json => "application/json",
        };
        Outgoing {
            url: url.to_string(),
            headers: vec![("content-type".to_owned(), content_type.to_owned())],
            body,
        }
    }
}

/// Whether the developer's server took the push: HTTP 2xx with `success` or nothing.
fn acknowledged(status: u16, body: &str) -> bool {
    (200..300).contains(&status) && matches!(body.trim(), "" | "success")
}

/// Records a push, sends its requests (retried while not `acknowledged` if `retry`), records and
/// answers `{push_id, deliveries}`.
async fn dispatch(
    state: &Shared,
    message: &Map<String, Value>,
    requests: Vec<Outgoing>,
    retry: bool,
    acknowledged: impl Fn(u16, &str) -> bool + Clone + Send + Sync + 'static,
) -> Value {
    let push_id = random_text(16);
    state.lock().unwrap().push.sent.push(Sent {
        push_id: push_id.clone(),
        message: Value::Object(message.clone()),
        requests: requests.clone(),
        deliveries: Vec::new(),
    });
    let attempts = if retry { ATTEMPTS } else { 1 };
    let deliveries = deliver_all(requests, attempts, acknowledged).await;
    if let Some(sent) = state
        .lock()
        .unwrap()
        .push
        .sent
        .iter_mut()
        .find(|s| s.push_id == push_id)
    {
        sent.deliveries = deliveries.clone();
    }
    json!({ "push_id": push_id, "message": message, "deliveries": deliveries })
}

/// Pushes a message WeChat makes itself (an event, shaped for the configured format by `make`) to
/// the developer's server, retried until acknowledged. `None` when no push URL is configured.
pub async fn push(state: &Shared, make: impl FnOnce(Format) -> Map<String, Value>) -> Option<Value> {
    let prepared = Prepared::of(state)?;
    let message = prepared.complete(make(prepared.config.format));
    let request = prepared.request(&message, prepared.now, None);
    Some(dispatch(state, &message, vec![request], true, acknowledged).await)
}

/// A field of a message read from XML (text) or JSON (text or a number), as text.
fn text_field(message: &Map<String, Value>, name: &str) -> Option<String> {
    match message.get(name)? {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// What tells a passive reply to a push to one user from anything else.
#[derive(Clone)]
struct ReplyCheck {
    config: PushConfig,
    app_id: String,
    openid: String,
}

impl ReplyCheck {
    /// Whether `body` is a `transfer_customer_service` passive reply as WeChat takes one: in the
    /// console's format, from the app's original id to the user with a numeric `CreateTime`; in
    /// plain mode as is, in safe mode encrypted (`{Encrypt, MsgSignature, TimeStamp, Nonce}`,
    /// `MsgSignature` the sorted sha1 of the token, `TimeStamp`, `Nonce` and `Encrypt`), in compat
    /// mode either.
    fn is_transfer(&self, body: &str) -> bool {
        let config = &self.config;
        let parse = |text: &str| match config.format {
            Format::Xml => parse_xml(text),
            Format::Json => serde_json::from_str::<Value>(text.trim())
                .ok()
                .and_then(|v| v.as_object().cloned()),
        };
        let Some(outer) = parse(body) else {
            return false;
        };
        let reply = if outer.contains_key("Encrypt") {
            let Some(key) = aes_key(&config.encoding_aes_key).filter(|_| config.mode != Mode::Plain) else {
                return false;
            };
            let field = |name: &str| text_field(&outer, name).unwrap_or_default();
            let (encrypted, timestamp, nonce) = (field("Encrypt"), field("TimeStamp"), field("Nonce"));
            if field("MsgSignature") != sorted_sha1(&[&config.token, &timestamp, &nonce, &encrypted]) {
                return false;
            }
            match decrypt(&key, &encrypted, &self.app_id).and_then(|inner| parse(&inner)) {
                Some(inner) => inner,
                None => return false,
            }
        } else if config.mode == Mode::Safe {
            return false;
        } else {
            outer
        };
        let field = |name: &str| text_field(&reply, name);
        field("MsgType").as_deref() == Some("transfer_customer_service")
            && field("ToUserName").as_deref() == Some(self.openid.as_str())
            && field("FromUserName") == Some(original_id(&self.app_id))
            && field("CreateTime").is_some_and(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
    }
}

/// A push of a user's customer-service message (or their `user_enter_tempsession` event), made
/// before it is sent so that its caller can record it (with its `MsgId`) first. Besides `success`
/// the developer's server may answer it with a `transfer_customer_service` passive reply, which
/// WeChat takes as an acknowledgement too; any other answer is retried.
pub struct ConversationPush {
    prepared: Prepared,
    message: Map<String, Value>,
    check: ReplyCheck,
}

impl ConversationPush {
    /// The push of `message` from `openid`, completed; `None` when no push URL is configured.
    pub fn new(state: &Shared, openid: &str, message: Map<String, Value>) -> Option<Self> {
        let prepared = Prepared::of(state)?;
        let message = prepared.complete(message);
        let check = ReplyCheck {
            config: prepared.config.clone(),
            app_id: prepared.app_id.clone(),
            openid: openid.to_owned(),
        };
        Some(Self {
            prepared,
            message,
            check,
        })
    }

    pub fn message(&self) -> &Map<String, Value> {
        &self.message
    }

    /// Sends it, retried until acknowledged; answers `{push_id, message, deliveries}` and whether
    /// the developer's server answered with a transfer to the agents.
    pub async fn send(self, state: &Shared) -> (Value, bool) {
        let request = self.prepared.request(&self.message, self.prepared.now, None);
        let check = self.check.clone();
        let taken = move |status: u16, body: &str| {
            acknowledged(status, body) || ((200..300).contains(&status) && check.is_transfer(body))
        };
        let record = dispatch(state, &self.message, vec![request], true, taken).await;
        let transferred = record["deliveries"].as_array().into_iter().flatten().any(|d| {
            let status = d["status"].as_u64().unwrap_or(0);
            (200..300).contains(&status) && self.check.is_transfer(d["body"].as_str().unwrap_or_default())
        });
        (record, transferred)
    }
}

/// `POST /__sim/push/config {"url", "token", "encoding_aes_key", "mode", "format"}`: what the
/// developer sets in the console; the token is 3 to 32 letters or digits, the EncodingAESKey 43.
pub async fn set_config(State(state): State<Shared>, Json(config): Json<PushConfig>) -> Response {
    let url_ok = reqwest::Url::parse(&config.url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
    if !url_ok {
        return admin_error(StatusCode::BAD_REQUEST, "url must be an http(s) URL");
    }
    if !(3..=32).contains(&config.token.len()) || !config.token.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return admin_error(StatusCode::BAD_REQUEST, "token must be 3 to 32 letters or digits");
    }
    let key_ok = aes_key(&config.encoding_aes_key).is_some();
    if !key_ok && (config.mode != Mode::Plain || !config.encoding_aes_key.is_empty()) {
        return admin_error(
            StatusCode::BAD_REQUEST,
            "encoding_aes_key must be 43 letters or digits (required in compat and safe mode)",
        );
    }
    state.lock().unwrap().push.config = Some(config);
    StatusCode::NO_CONTENT.into_response()
}

fn one() -> u32 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendBody {
    #[serde(default)]
    message: Option<Map<String, Value>>,
    /// Concurrent duplicates of the message (same MsgId and CreateTime, each signed anew).
    #[serde(default = "one")]
    copies: u32,
    #[serde(default)]
    tamper: Option<Tamper>,
    /// Signs with a timestamp this far from now (a stale or future push).
    #[serde(default)]
    timestamp_offset_secs: i64,
    /// Sends again, byte for byte, what an earlier push sent (a captured request replayed);
    /// with `message` too, the earlier request's URL (its timestamp, nonce and signature) with
    /// this message as the body: plain mode's signature covers no body.
    #[serde(default)]
    replay_of: Option<String>,
}

/// `POST /__sim/push/send`: pushes a message as WeChat would (or forged, stale, replayed,
/// duplicated); answers `{push_id, message, deliveries: [{status, body, attempts}]}`.
pub async fn send(State(state): State<Shared>, Json(body): Json<SendBody>) -> Response {
    let Some(prepared) = Prepared::of(&state) else {
        return admin_error(StatusCode::CONFLICT, "no push URL: POST /__sim/push/config first");
    };
    if let Some(replayed) = &body.replay_of {
        let earlier = {
            let sim = state.lock().unwrap();
            let sent = sim.push.sent.iter().find(|s| &s.push_id == replayed);
            sent.map(|s| {
                (
                    s.message.as_object().cloned().unwrap_or_default(),
                    s.requests[..1].to_vec(),
                )
            })
        };
        let Some((message, mut requests)) = earlier else {
            return admin_error(StatusCode::NOT_FOUND, "no push with that push_id");
        };
        let message = match body.message {
            Some(swapped) if prepared.config.mode == Mode::Plain => {
                let swapped = prepared.complete(swapped);
                requests[0].body = render(prepared.config.format, &swapped);
                swapped
            }
            Some(_) => return admin_error(StatusCode::BAD_REQUEST, "a swapped body needs plain mode"),
            None => message,
        };
        return Json(dispatch(&state, &message, requests, false, acknowledged).await).into_response();
    }
    let Some(message) = body.message else {
        return admin_error(StatusCode::BAD_REQUEST, "give a message (or replay_of)");
    };
    let encrypted = prepared.config.mode != Mode::Plain;
    if matches!(body.tamper, Some(Tamper::Appid | Tamper::Padding)) && !encrypted {
        return admin_error(
            StatusCode::BAD_REQUEST,
            "tamper appid and padding need compat or safe mode",
        );
    }
    let message = prepared.complete(message);
    let timestamp = prepared.now + body.timestamp_offset_secs;
    let requests = (0..body.copies.clamp(1, 50))
        .map(|_| prepared.request(&message, timestamp, body.tamper))
        .collect();
    let genuine = body.tamper.is_none() && body.timestamp_offset_secs == 0;
    Json(dispatch(&state, &message, requests, genuine, acknowledged).await).into_response()
}

/// `GET /__sim/push/sent`: every push made so far, with what each delivery got.
pub async fn sent(State(state): State<Shared>) -> Response {
    let sim = state.lock().unwrap();
    let pushes: Vec<Value> = sim
        .push
        .sent
        .iter()
        .map(|s| json!({ "push_id": s.push_id, "message": s.message, "deliveries": s.deliveries }))
        .collect();
    Json(json!({ "pushes": pushes })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    #[serde(default)]
    tamper: Option<Tamper>,
}

/// `POST /__sim/push/verify-url {"tamper"?: "signature"}`: the console's URL check, a GET with
/// `signature`, `timestamp`, `nonce` and `echostr`; answers `{status, body, echoed}`, `echoed`
/// when the answer was the echostr unchanged.
pub async fn verify_url(State(state): State<Shared>, Json(body): Json<VerifyBody>) -> Response {
    let Some(prepared) = Prepared::of(&state) else {
        return admin_error(StatusCode::CONFLICT, "no push URL: POST /__sim/push/config first");
    };
    let (timestamp, nonce, echostr) = (prepared.now.to_string(), random_digits(10), random_digits(19));
    let mut signature = sorted_sha1(&[&prepared.config.token, &timestamp, &nonce]);
    if body.tamper.is_some() {
        signature = sorted_sha1(&[&signature, "forged"]);
    }
    let mut url = reqwest::Url::parse(&prepared.config.url).expect("checked when configured");
    url.query_pairs_mut().extend_pairs([
        ("signature", signature.as_str()),
        ("timestamp", &timestamp),
        ("nonce", &nonce),
        ("echostr", &echostr),
    ]);
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .expect("client");
    let (status, text) = match client.get(url).send().await {
        Ok(response) => (response.status().as_u16(), response.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    };
    let echoed = status == 200 && text == echostr;
    Json(json!({ "status": status, "body": text, "echoed": echoed })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_with_trailing_bits_decode() {
        // 43 characters whose last one carries bits past the 32 bytes: still a key.
        let key = aes_key("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG").unwrap();
        assert_eq!(key[0], 0x69);
        assert!(aes_key("short").is_none());
        assert!(aes_key(&"+".repeat(43)).is_none());
    }

    #[test]
    fn xml_puts_text_in_cdata_and_repeats_arrays() {
        let message = json!({"A": "x]]>y", "B": 7, "C": {"List": [{"T": "1"}, {"T": "2"}]}});
        let xml = render(Format::Xml, message.as_object().unwrap());
        assert_eq!(
            xml,
            "<xml><A><![CDATA[x]]]]><![CDATA[>y]]></A><B>7</B><C><List><T><![CDATA[1]]></T></List>\
             <List><T><![CDATA[2]]></T></List></C></xml>"
        );
    }

    #[test]
    fn decrypt_reads_what_encrypt_writes_and_refuses_the_rest() {
        let key = [9u8; 32];
        for message in ["", "x", "<xml><A>中文</A></xml>", &"m".repeat(100)] {
            assert_eq!(
                decrypt(&key, &encrypt(&key, message, "wx1", false), "wx1").as_deref(),
                Some(message)
            );
        }
        let sealed = encrypt(&key, "hello", "wx1", false);
        assert_eq!(decrypt(&key, &sealed, "wx2"), None, "another app id");
        assert_eq!(decrypt(&[8u8; 32], &sealed, "wx1"), None, "another key");
        assert_eq!(
            decrypt(&key, &encrypt(&key, "hello", "wx1", true), "wx1"),
            None,
            "bad padding"
        );
        assert_eq!(decrypt(&key, "not base64!", "wx1"), None);
        assert_eq!(
            decrypt(&key, &STANDARD.encode([1u8; 20]), "wx1"),
            None,
            "not whole blocks"
        );
    }

    #[test]
    fn flat_xml_is_read_with_or_without_cdata() {
        let read = parse_xml(
            "<?xml version=\"1.0\"?>\n<xml>\n <A><![CDATA[x]]]]><![CDATA[>y]]></A>\n <B>7</B><C>a &amp; &lt;b&gt;</C><D></D></xml>",
        );
        assert_eq!(
            read.map(Value::Object),
            Some(json!({"A": "x]]>y", "B": "7", "C": "a & <b>", "D": ""}))
        );
        let rendered = render(Format::Xml, json!({"T": "o1", "N": 5}).as_object().unwrap());
        assert_eq!(
            parse_xml(&rendered).map(Value::Object),
            Some(json!({"T": "o1", "N": "5"}))
        );
        for bad in [
            "",
            "success",
            "<xml><A>1</A>",
            "<xml><A><B>1</B></A></xml>",
            "<xml><A>1</B></xml>",
            "<xml>text</xml>",
            "<xml><A/></xml>",
        ] {
            assert_eq!(parse_xml(bad), None, "{bad}");
        }
    }

    #[test]
    fn encrypted_length_is_a_multiple_of_32() {
        let key = [7u8; 32];
        for len in [0, 1, 11, 12, 13, 44, 100] {
            let sealed = STANDARD
                .decode(encrypt(&key, &"m".repeat(len), "wx1234567890", false))
                .unwrap();
            assert_eq!(sealed.len() % 32, 0, "{len}");
        }
    }
}
