//! Message push (消息推送): WeChat POSTs messages and events to the URL the developer set in the
//! console, signed with the console's token (`signature` = sha1 of the sorted token, timestamp and
//! nonce) and, in safe or compat mode, encrypted with its EncodingAESKey (AES-256-CBC, IV the key's
//! first 16 bytes, PKCS#7 over 32-byte blocks, `msg_signature` over the `Encrypt` too). Written here
//! apart from the server's own code so that each checks the other. A push is retried until answered
//! `success` or an empty body; tests also ask for forged, stale, replayed and duplicated ones.

use aes::cipher::{BlockEncryptMut, KeyIvInit, block_padding::NoPadding};
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

/// Records a push, sends its requests (retried while unacknowledged if `retry`), records and
/// answers `{push_id, deliveries}`.
async fn dispatch(state: &Shared, message: &Map<String, Value>, requests: Vec<Outgoing>, retry: bool) -> Value {
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
    Some(dispatch(state, &message, vec![request], true).await)
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
        return Json(dispatch(&state, &message, requests, false).await).into_response();
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
    Json(dispatch(&state, &message, requests, genuine).await).into_response()
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
