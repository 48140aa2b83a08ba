//! WeChat's message push (消息推送) to the developer's server: the signatures, safe mode's
//! `Encrypt`, and the bodies (XML or JSON, as chosen in the console). No I/O.
//!
//! - Plain mode and URL verification: `signature` = hex sha1 of the sorted concatenation of
//!   (token, timestamp, nonce).
//! - Safe mode: `msg_signature` = the same over (token, timestamp, nonce, Encrypt), and `Encrypt` =
//!   base64 of AES-256-CBC (key = the EncodingAESKey decoded, IV = its first 16 bytes, PKCS#7
//!   to **32**-byte blocks) of 16 random bytes ‖ 4-byte big-endian length ‖ message ‖ appid.
//!
//! msg_signature is checked before anything is decrypted: CBC has no integrity of its own, and a
//! forger must not learn how decryption of his ciphertext failed (a padding oracle). Past that,
//! each failure has its own error, for the operator's CLI and the logs; the receiver answers all
//! of them alike.

use std::collections::BTreeMap;
use std::fmt;

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit, block_padding::NoPadding};
use base64::Engine;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use serde_json::Value;
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

use crate::redacted::Secret;

/// The largest body read (a push is a few KiB).
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// The largest message the length field may declare.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// How far a push's timestamp may be from now, either way (see [`is_fresh`]).
pub const REPLAY_WINDOW_SECS: u64 = 300;
/// How deep a push's XML may nest below its root (a popup event: 3).
pub const MAX_NESTING: usize = 4;

/// WeChat pads to 32 bytes, not to AES's 16.
const PAD_BLOCK: usize = 32;
/// 16 random bytes and the 4-byte length.
const HEADER_LEN: usize = 20;
/// The console's EncodingAESKey: 43 characters of base64.
const ENCODING_AES_KEY_LEN: usize = 43;

/// The EncodingAESKey's 43rd character carries 2 bits beyond the 32 bytes; WeChat's SDKs ignore
/// them, so keys in the wild set them (WeChat's own samples do).
const KEY_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone),
);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    #[error("signature is not sha1 of the sorted token, timestamp and nonce")]
    BadSignature,
    #[error("msg_signature is not sha1 of the sorted token, timestamp, nonce and Encrypt")]
    BadMsgSignature,
    #[error("the EncodingAESKey must be 43 characters, it is {0}")]
    BadKeyLength(usize),
    #[error("the EncodingAESKey is not base64")]
    BadKey,
    #[error("Encrypt is not valid base64")]
    InvalidBase64,
    #[error("Encrypt must be a whole number of 32-byte blocks, it is {0} bytes")]
    NotBlockAligned(usize),
    #[error("bad padding: the last byte is {0}, not a pad length from 1 to 32 (is the EncodingAESKey right?)")]
    BadPadLength(u8),
    #[error("bad padding: the last {0} bytes are not all {0} (is the EncodingAESKey right?)")]
    InconsistentPadding(u8),
    #[error("the plaintext is {0} bytes, too short for 16 random bytes and a 4-byte length")]
    TruncatedLength(usize),
    #[error("the length field says {declared} bytes, but only {available} follow")]
    LengthBeyondData { declared: u32, available: usize },
    #[error("the length field says {0} bytes; a message is at most 1 MiB")]
    MessageTooLong(u32),
    #[error("the message was encrypted for another app ({0})")]
    ForeignAppId(String),
    #[error("the message is not UTF-8")]
    NotUtf8,
    #[error("the body is {0} bytes; at most 1 MiB is read")]
    BodyTooLarge(usize),
    #[error("the body is neither XML nor a JSON object")]
    UnknownFormat,
    #[error("the body is not a flat XML document: {0}")]
    BadXml(String),
    #[error("the body is not a JSON object: {0}")]
    BadJson(String),
    #[error("the body has no Encrypt field")]
    MissingEncrypt,
}

/// The AES-256 key an EncodingAESKey stands for. `Debug` does not print it.
#[derive(Clone)]
pub struct AesKey([u8; 32]);

impl AesKey {
    /// Decodes the console's EncodingAESKey (43 characters; base64 of 32 bytes once "=" is added).
    pub fn new(encoding_aes_key: &Secret) -> Result<Self, PushError> {
        let text = encoding_aes_key.expose();
        let length = text.chars().count();
        if length != ENCODING_AES_KEY_LEN {
            return Err(PushError::BadKeyLength(length));
        }
        let bytes = KEY_BASE64.decode(text).map_err(|_| PushError::BadKey)?;
        Ok(Self(bytes.try_into().map_err(|_| PushError::BadKey)?))
    }

    fn iv(&self) -> [u8; 16] {
        let mut iv = [0; 16];
        iv.copy_from_slice(&self.0[..16]);
        iv
    }
}

impl fmt::Debug for AesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AesKey(***)")
    }
}

/// Hex sha1 of the parts sorted and joined, as WeChat signs a push.
fn sorted_sha1(mut parts: Vec<&str>) -> String {
    // Byte order of UTF-8 is code point order, as WeChat's SDKs sort.
    parts.sort_unstable();
    let mut hasher = Sha1::new();
    for part in parts {
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

fn same_hex(expected: &str, given: &str) -> bool {
    expected
        .as_bytes()
        .ct_eq(given.trim().to_ascii_lowercase().as_bytes())
        .into()
}

/// `signature` of URL verification and of a plain-mode push.
pub fn signature(token: &Secret, timestamp: &str, nonce: &str) -> String {
    sorted_sha1(vec![token.expose(), timestamp, nonce])
}

/// Checks `signature` in constant time.
pub fn verify_signature(token: &Secret, timestamp: &str, nonce: &str, signature: &str) -> Result<(), PushError> {
    if same_hex(&self::signature(token, timestamp, nonce), signature) {
        Ok(())
    } else {
        Err(PushError::BadSignature)
    }
}

/// `msg_signature` of a safe-mode push (and of an encrypted answer) over its `Encrypt`.
pub fn msg_signature(token: &Secret, timestamp: &str, nonce: &str, encrypt: &str) -> String {
    sorted_sha1(vec![token.expose(), timestamp, nonce, encrypt])
}

/// Checks `msg_signature` in constant time.
pub fn verify_msg_signature(
    token: &Secret,
    timestamp: &str,
    nonce: &str,
    encrypt: &str,
    msg_signature: &str,
) -> Result<(), PushError> {
    if same_hex(&self::msg_signature(token, timestamp, nonce, encrypt), msg_signature) {
        Ok(())
    } else {
        Err(PushError::BadMsgSignature)
    }
}

/// `Encrypt` for `message` from `appid`, with the 16 random bytes given (fresh ones from the OS
/// for a real answer; fixed ones for vectors).
pub fn seal(message: &str, appid: &str, aes_key: &AesKey, random16: &[u8; 16]) -> String {
    let length = u32::try_from(message.len()).expect("a message is far below 4 GiB");
    let mut plain = Vec::with_capacity(HEADER_LEN + message.len() + appid.len() + PAD_BLOCK);
    plain.extend_from_slice(random16);
    plain.extend_from_slice(&length.to_be_bytes());
    plain.extend_from_slice(message.as_bytes());
    plain.extend_from_slice(appid.as_bytes());
    let pad = PAD_BLOCK - plain.len() % PAD_BLOCK;
    plain.resize(plain.len() + pad, pad as u8);
    let sealed = cbc::Encryptor::<aes::Aes256>::new(&aes_key.0.into(), &aes_key.iv().into())
        .encrypt_padded_vec_mut::<NoPadding>(&plain);
    STANDARD.encode(sealed)
}

/// Decrypts `encrypt` and checks every pad byte, the length field and the appid. Only ever
/// called once msg_signature has checked out.
fn decrypt(encrypt: &str, appid: &str, aes_key: &AesKey) -> Result<String, PushError> {
    let mut data = STANDARD.decode(encrypt).map_err(|_| PushError::InvalidBase64)?;
    if data.is_empty() || data.len() % PAD_BLOCK != 0 {
        return Err(PushError::NotBlockAligned(data.len()));
    }
    cbc::Decryptor::<aes::Aes256>::new(&aes_key.0.into(), &aes_key.iv().into())
        .decrypt_padded_mut::<NoPadding>(&mut data)
        .expect("whole blocks");
    let pad = *data.last().expect("non-empty");
    if !(1..=PAD_BLOCK).contains(&usize::from(pad)) {
        return Err(PushError::BadPadLength(pad));
    }
    let unpadded = data.len() - usize::from(pad);
    if data[unpadded..].iter().any(|&b| b != pad) {
        return Err(PushError::InconsistentPadding(pad));
    }
    let plain = &data[..unpadded];
    let Some(header) = plain.get(..HEADER_LEN) else {
        return Err(PushError::TruncatedLength(plain.len()));
    };
    let declared = u32::from_be_bytes(header[16..].try_into().expect("4 bytes"));
    let rest = &plain[HEADER_LEN..];
    let length = usize::try_from(declared).unwrap_or(usize::MAX);
    if length > rest.len() {
        return Err(PushError::LengthBeyondData {
            declared,
            available: rest.len(),
        });
    }
    if length > MAX_MESSAGE_BYTES {
        return Err(PushError::MessageTooLong(declared));
    }
    let (message, theirs) = rest.split_at(length);
    if theirs != appid.as_bytes() {
        return Err(PushError::ForeignAppId(String::from_utf8_lossy(theirs).into_owned()));
    }
    String::from_utf8(message.to_vec()).map_err(|_| PushError::NotUtf8)
}

/// What the console holds for safe mode: Token, EncodingAESKey, and our appid. Built once; the
/// key is checked here.
#[derive(Debug, Clone)]
pub struct PushKeys {
    token: Secret,
    aes_key: AesKey,
    appid: String,
}

impl PushKeys {
    pub fn new(token: Secret, encoding_aes_key: &Secret, appid: impl Into<String>) -> Result<Self, PushError> {
        Ok(Self {
            token,
            aes_key: AesKey::new(encoding_aes_key)?,
            appid: appid.into(),
        })
    }

    /// The message of a safe-mode (or compatibility-mode) body, XML or JSON, as sent: its
    /// `Encrypt` signed by `msg_signature` over the query's `timestamp` and `nonce`, decrypted.
    pub fn open(&self, timestamp: &str, nonce: &str, msg_signature: &str, body: &str) -> Result<String, PushError> {
        let envelope = PushMessage::parse(body)?;
        let encrypt = envelope.get("Encrypt").ok_or(PushError::MissingEncrypt)?;
        self.open_encrypt(timestamp, nonce, msg_signature, encrypt)
    }

    /// The same for an `Encrypt` already out of its body.
    pub fn open_encrypt(
        &self,
        timestamp: &str,
        nonce: &str,
        msg_signature: &str,
        encrypt: &str,
    ) -> Result<String, PushError> {
        verify_msg_signature(&self.token, timestamp, nonce, encrypt, msg_signature)?;
        decrypt(encrypt, &self.appid, &self.aes_key)
    }

    /// A passive reply to an encrypted push, as WeChat takes one: the reply sealed (fresh random
    /// bytes) in `Encrypt`, with its `MsgSignature` over `TimeStamp` and `Nonce`, in `format`.
    pub fn seal_reply(&self, reply: &str, format: BodyFormat, timestamp: u64, nonce: &str) -> String {
        let mut random16 = [0u8; 16];
        getrandom::fill(&mut random16).expect("the OS random source is available");
        let encrypt = seal(reply, &self.appid, &self.aes_key, &random16);
        let timestamp = timestamp.to_string();
        let signature = msg_signature(&self.token, &timestamp, nonce, &encrypt);
        match format {
            BodyFormat::Json => serde_json::json!({
                "Encrypt": encrypt, "MsgSignature": signature, "TimeStamp": timestamp, "Nonce": nonce,
            })
            .to_string(),
            // Base64, hex and digits: nothing to escape.
            BodyFormat::Xml => format!(
                "<xml><Encrypt><![CDATA[{encrypt}]]></Encrypt><MsgSignature><![CDATA[{signature}]]></MsgSignature>\
                 <TimeStamp>{timestamp}</TimeStamp><Nonce><![CDATA[{nonce}]]></Nonce></xml>"
            ),
        }
    }
}

/// Whether a push's `timestamp` (unix seconds, as in the query) is within `window_secs` of `now`
/// either way. A signature never expires, so an old push is replayable; the receiver refuses one
/// outside [`REPLAY_WINDOW_SECS`].
pub fn is_fresh(timestamp: &str, now: u64, window_secs: u64) -> bool {
    timestamp.parse::<u64>().is_ok_and(|t| t.abs_diff(now) <= window_secs)
}

/// The format of a body, as chosen in the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Xml,
    Json,
}

impl BodyFormat {
    /// By its first character: `<` or `{`.
    pub fn of(body: &str) -> Result<Self, PushError> {
        match body.trim_start().as_bytes().first() {
            Some(b'<') => Ok(Self::Xml),
            Some(b'{') => Ok(Self::Json),
            _ => Err(PushError::UnknownFormat),
        }
    }
}

/// A pushed message (or an envelope) as a flat map of its fields, from either format. A JSON value
/// that is not a string (a number, an object, an array) is kept as its JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushMessage {
    format: BodyFormat,
    fields: BTreeMap<String, String>,
}

impl PushMessage {
    /// Reads a body of at most [`MAX_BODY_BYTES`]: an XML document (no DOCTYPE; nested at most
    /// [`MAX_NESTING`] levels, a nested field as JSON text) or a JSON object.
    pub fn parse(body: &str) -> Result<Self, PushError> {
        if body.len() > MAX_BODY_BYTES {
            return Err(PushError::BodyTooLarge(body.len()));
        }
        let format = BodyFormat::of(body)?;
        let fields = match format {
            // Pushes nest a little (a popup event's List): nested fields come as JSON text.
            BodyFormat::Xml => crate::flat_xml::parse_nested(body, MAX_NESTING).map_err(PushError::BadXml)?,
            BodyFormat::Json => serde_json::from_str::<serde_json::Map<String, Value>>(body)
                .map_err(|e| PushError::BadJson(e.to_string()))?
                .into_iter()
                .map(|(name, value)| match value {
                    Value::String(text) => (name, text),
                    other => (name, other.to_string()),
                })
                .collect(),
        };
        Ok(Self { format, fields })
    }

    pub fn format(&self) -> BodyFormat {
        self.format
    }

    pub fn fields(&self) -> &BTreeMap<String, String> {
        &self.fields
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    /// `text`, `image`, `event`, ...
    pub fn msg_type(&self) -> Option<&str> {
        self.get("MsgType")
    }

    /// The event of an `event` message (`subscribe_msg_popup_event`, `wxa_media_check`, ...).
    pub fn event(&self) -> Option<&str> {
        self.get("Event")
    }

    /// A message's id (events have none: they are told apart by FromUserName and CreateTime).
    pub fn msg_id(&self) -> Option<&str> {
        self.get("MsgId")
    }

    /// The user's openid.
    pub fn from_user_name(&self) -> Option<&str> {
        self.get("FromUserName")
    }

    /// Unix seconds.
    pub fn create_time(&self) -> Option<u64> {
        self.get("CreateTime")?.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made by `tests/push-vectors/generate.py` with Python's `cryptography`.
    const VECTORS: &str = include_str!("../tests/push-vectors/vectors.json");

    fn vectors(kind: &str) -> Vec<Value> {
        let all: Value = serde_json::from_str(VECTORS).unwrap();
        all[kind].as_array().unwrap().clone()
    }

    fn text<'a>(v: &'a Value, field: &str) -> &'a str {
        v[field].as_str().unwrap_or_else(|| panic!("{field} in {}", v["name"]))
    }

    fn keys(v: &Value) -> Result<PushKeys, PushError> {
        PushKeys::new(
            Secret::new(text(v, "token")),
            &Secret::new(text(v, "encoding_aes_key")),
            text(v, "appid"),
        )
    }

    /// The vector's outcome as `Ok(message)` or `Err(Debug text of the error)`.
    fn expected(v: &Value) -> Result<String, String> {
        match (v["message"].as_str(), v["error"].as_str()) {
            (Some(message), None) => Ok(message.to_owned()),
            (None, Some(error)) => Err(error.to_owned()),
            _ => panic!("{} has one outcome", v["name"]),
        }
    }

    fn debug<T>(result: Result<T, PushError>) -> Result<T, String> {
        result.map_err(|e| format!("{e:?}"))
    }

    #[test]
    fn a_sealed_reply_opens_with_its_own_signature_in_both_formats() {
        let v = &vectors("open")[0];
        let keys = keys(v).unwrap();
        for format in [BodyFormat::Xml, BodyFormat::Json] {
            let sealed = keys.seal_reply(
                "<xml><MsgType>transfer_customer_service</MsgType></xml>",
                format,
                1_700_000_000,
                "123456",
            );
            let envelope = PushMessage::parse(&sealed).unwrap();
            assert_eq!(envelope.format(), format);
            let (ts, nonce) = (envelope.get("TimeStamp").unwrap(), envelope.get("Nonce").unwrap());
            let signature = envelope.get("MsgSignature").unwrap();
            let opened = keys.open(ts, nonce, signature, &sealed).unwrap();
            assert_eq!(opened, "<xml><MsgType>transfer_customer_service</MsgType></xml>");
            assert!(
                keys.open(ts, "654321", signature, &sealed).is_err(),
                "the nonce is signed"
            );
        }
    }

    #[test]
    fn opens_every_vector_as_the_independent_implementation_does() {
        let all = vectors("open");
        assert!(all.len() >= 20);
        for v in &all {
            let (ts, nonce, sig) = (text(v, "timestamp"), text(v, "nonce"), text(v, "msg_signature"));
            let got = debug(keys(v).and_then(|k| k.open_encrypt(ts, nonce, sig, text(v, "encrypt"))));
            assert_eq!(got, expected(v), "{}", v["name"]);
            if let Some(body) = v["body"].as_str() {
                let got = debug(keys(v).and_then(|k| k.open(ts, nonce, sig, body)));
                assert_eq!(got, expected(v), "{} (body)", v["name"]);
            }
        }
        // Each failure the brief names is among them.
        let errors: Vec<String> = all.iter().filter_map(|v| expected(v).err()).collect();
        for kind in [
            "BadMsgSignature",
            "BadKeyLength",
            "BadPadLength(0)",
            "BadPadLength(33)",
            "InconsistentPadding",
            "TruncatedLength",
            "LengthBeyondData",
            "ForeignAppId",
            "InvalidBase64",
            "NotBlockAligned",
        ] {
            assert!(errors.iter().any(|e| e.starts_with(kind)), "{kind}");
        }
    }

    #[test]
    fn seals_as_the_independent_implementation_does() {
        for v in vectors("seal") {
            let key = AesKey::new(&Secret::new(text(&v, "encoding_aes_key"))).unwrap();
            let random: [u8; 16] = hex::decode(text(&v, "random_hex")).unwrap().try_into().unwrap();
            let sealed = seal(text(&v, "message"), text(&v, "appid"), &key, &random);
            assert_eq!(sealed, text(&v, "encrypt"), "{}", v["name"]);
            assert_eq!(decrypt(&sealed, text(&v, "appid"), &key).unwrap(), text(&v, "message"));
        }
    }

    #[test]
    fn signatures_match_the_independent_implementation() {
        for v in vectors("signature") {
            let token = Secret::new(text(&v, "token"));
            let (ts, nonce, sig) = (text(&v, "timestamp"), text(&v, "nonce"), text(&v, "signature"));
            assert_eq!(signature(&token, ts, nonce), sig, "{}", v["name"]);
            assert_eq!(verify_signature(&token, ts, nonce, sig), Ok(()));
            assert_eq!(verify_signature(&token, ts, nonce, &sig.to_uppercase()), Ok(()));
            assert_eq!(verify_signature(&token, ts, "other", sig), Err(PushError::BadSignature));
            assert_eq!(verify_signature(&token, ts, nonce, ""), Err(PushError::BadSignature));
        }
    }

    #[test]
    fn the_encoding_aes_key_is_43_characters_of_base64() {
        let key = |k: &str| AesKey::new(&Secret::new(k)).map(|_| ());
        assert_eq!(key("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"), Ok(()));
        assert_eq!(key(""), Err(PushError::BadKeyLength(0)));
        assert_eq!(
            key("abcdefghijklmnopqrstuvwxyz0123456789ABCDEF="),
            Err(PushError::BadKey)
        );
        assert_eq!(
            key("abcdefghijklmnopqrstuvwxyz0123456789ABCDE!G"),
            Err(PushError::BadKey)
        );
        // Multi-byte characters are counted as characters in the message.
        assert_eq!(key(&"é".repeat(22)), Err(PushError::BadKeyLength(22)));
        assert_eq!(key(&"é".repeat(43)), Err(PushError::BadKey));
        let k = AesKey::new(&Secret::new("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG")).unwrap();
        assert_eq!(format!("{k:?}"), "AesKey(***)");
    }

    fn test_key() -> AesKey {
        AesKey::new(&Secret::new("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG")).unwrap()
    }

    #[test]
    fn a_length_field_over_the_limit_is_refused_even_with_the_data() {
        let key = test_key();
        let big = "x".repeat(MAX_MESSAGE_BYTES + 1);
        let sealed = seal(&big, "wx1", &key, &[0; 16]);
        assert_eq!(
            decrypt(&sealed, "wx1", &key),
            Err(PushError::MessageTooLong(MAX_MESSAGE_BYTES as u32 + 1))
        );
        let at_limit = seal(&big[1..], "wx1", &key, &[0; 16]);
        assert_eq!(decrypt(&at_limit, "wx1", &key).unwrap().len(), MAX_MESSAGE_BYTES);
    }

    #[test]
    fn a_message_that_is_not_utf8_is_refused() {
        let key = test_key();
        let mut plain = vec![0u8; 16];
        plain.extend_from_slice(&2u32.to_be_bytes());
        plain.extend_from_slice(&[0xff, 0xfe]);
        plain.extend_from_slice(b"wx1");
        plain.resize(32, 32 - 25);
        let sealed = cbc::Encryptor::<aes::Aes256>::new(&key.0.into(), &key.iv().into())
            .encrypt_padded_vec_mut::<NoPadding>(&plain);
        assert_eq!(decrypt(&STANDARD.encode(sealed), "wx1", &key), Err(PushError::NotUtf8));
    }

    #[test]
    fn seal_then_open_round_trips_for_random_lengths() {
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).unwrap();
        let seed = u64::from_le_bytes(seed);
        let mut state = seed | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for len in 0..300 {
            // Characters of 1 to 4 bytes; `len` of them.
            let message: String = (0..len)
                .map(|_| char::from_u32((next() % 0x2_0000) as u32).unwrap_or('\u{fffd}'))
                .collect();
            let mut raw_key = [0u8; 32];
            raw_key.iter_mut().for_each(|b| *b = next() as u8);
            let encoding = STANDARD.encode(raw_key);
            let encoding = Secret::new(encoding.trim_end_matches('='));
            let keys = PushKeys::new(Secret::new(format!("t{}", next())), &encoding, "wx0123456789abcdef").unwrap();
            let random: [u8; 16] = std::array::from_fn(|_| next() as u8);
            let sealed = seal(&message, "wx0123456789abcdef", &keys.aes_key, &random);
            assert_eq!(STANDARD.decode(&sealed).unwrap().len() % PAD_BLOCK, 0);
            let (ts, nonce) = (next().to_string(), next().to_string());
            let sig = msg_signature(&keys.token, &ts, &nonce, &sealed);
            assert_eq!(
                keys.open_encrypt(&ts, &nonce, &sig, &sealed).as_deref(),
                Ok(message.as_str()),
                "seed {seed} length {len}"
            );
            let json = serde_json::json!({ "ToUserName": "gh_1", "Encrypt": sealed }).to_string();
            assert_eq!(keys.open(&ts, &nonce, &sig, &json).as_deref(), Ok(message.as_str()));
            let xml = format!("<xml><Encrypt><![CDATA[{sealed}]]></Encrypt></xml>");
            assert_eq!(keys.open(&ts, &nonce, &sig, &xml).as_deref(), Ok(message.as_str()));
            assert_eq!(
                keys.open_encrypt(&ts, &nonce, &sig[1..], &sealed),
                Err(PushError::BadMsgSignature)
            );
        }
    }

    #[test]
    fn the_envelope_must_hold_an_encrypt() {
        let v = &vectors("open")[0];
        let keys = keys(v).unwrap();
        let open = |body: &str| keys.open("1", "2", "3", body);
        assert_eq!(
            open("<xml><ToUserName>a</ToUserName></xml>"),
            Err(PushError::MissingEncrypt)
        );
        assert_eq!(open(r#"{"ToUserName":"a"}"#), Err(PushError::MissingEncrypt));
        assert_eq!(open("Encrypt=abc"), Err(PushError::UnknownFormat));
        assert_eq!(open(""), Err(PushError::UnknownFormat));
        assert_eq!(open("[1]"), Err(PushError::UnknownFormat));
        assert!(matches!(open("{\"Encrypt\":"), Err(PushError::BadJson(_))));
        assert!(matches!(open("<xml><Encrypt>a</xml>"), Err(PushError::BadXml(_))));
    }

    #[test]
    fn plain_messages_in_either_format() {
        let xml = PushMessage::parse(
            "<xml>\n <ToUserName><![CDATA[gh_1]]></ToUserName>\n <FromUserName><![CDATA[oUser]]></FromUserName>\n \
             <CreateTime>1795535999</CreateTime>\n <MsgType><![CDATA[text]]></MsgType>\n \
             <Content><![CDATA[ a < b & c ]]></Content>\n <MsgId>24012345678901234</MsgId>\n</xml>",
        )
        .unwrap();
        assert_eq!(xml.format(), BodyFormat::Xml);
        assert_eq!(xml.msg_type(), Some("text"));
        assert_eq!(xml.from_user_name(), Some("oUser"));
        assert_eq!(xml.create_time(), Some(1_795_535_999));
        assert_eq!(xml.msg_id(), Some("24012345678901234"));
        assert_eq!(xml.event(), None);
        assert_eq!(xml.get("Content"), Some(" a < b & c "), "CDATA as written");
        assert_eq!(xml.fields().len(), 6);

        // The JSON vector's message: a content-check verdict with nested values.
        let v = vectors("open")
            .into_iter()
            .find(|v| text(v, "name") == "a JSON message in a JSON envelope")
            .unwrap();
        let json = PushMessage::parse(text(&v, "message")).unwrap();
        assert_eq!(json.format(), BodyFormat::Json);
        assert_eq!(json.msg_type(), Some("event"));
        assert_eq!(json.event(), Some("wxa_media_check"));
        assert_eq!(json.create_time(), Some(1_795_535_999));
        assert_eq!(json.get("version"), Some("2"));
        let result: Value = serde_json::from_str(json.get("result").unwrap()).unwrap();
        assert_eq!(result, serde_json::json!({"suggest": "pass", "label": 100}));
        let detail: Value = serde_json::from_str(json.get("detail").unwrap()).unwrap();
        assert_eq!(detail[0]["suggest"], "pass");
        assert_eq!(json.msg_id(), None);
        let null = PushMessage::parse(r#"{"MsgId":null,"CreateTime":"x"}"#).unwrap();
        assert_eq!(null.msg_id(), Some("null"));
        assert_eq!(null.create_time(), None);
    }

    #[test]
    fn hostile_bodies_are_refused_with_their_reason() {
        let bomb = "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY a \"aaaa\"><!ENTITY b \"&a;&a;&a;\">]>\
                    <xml><Content>&b;</Content></xml>";
        assert_eq!(
            PushMessage::parse(bomb),
            Err(PushError::BadXml("a DOCTYPE declaration".into()))
        );
        // A little nesting is a popup event's List; deeper is refused.
        assert_eq!(
            PushMessage::parse("<xml><A><B>1</B></A></xml>").unwrap().get("A"),
            Some(r#"{"B":"1"}"#)
        );
        let deep = format!("<xml>{}1{}</xml>", "<A>".repeat(5), "</A>".repeat(5));
        assert_eq!(
            PushMessage::parse(&deep),
            Err(PushError::BadXml("<A> is nested more than 4 levels deep".into()))
        );
        let huge = format!("<xml><A>{}</A></xml>", "x".repeat(MAX_BODY_BYTES));
        assert_eq!(PushMessage::parse(&huge), Err(PushError::BodyTooLarge(huge.len())));
        assert!(matches!(PushMessage::parse("{\"a\":1} x"), Err(PushError::BadJson(_))));
        assert_eq!(
            PushMessage::parse("<xml><A>1</A><A>2</A></xml>"),
            Err(PushError::BadXml("<A> is given twice".into()))
        );
    }

    #[test]
    fn freshness_is_a_window_either_side_of_now() {
        let now = 1_795_536_000;
        assert!(is_fresh("1795536000", now, REPLAY_WINDOW_SECS));
        assert!(is_fresh("1795535700", now, REPLAY_WINDOW_SECS));
        assert!(is_fresh("1795536300", now, REPLAY_WINDOW_SECS));
        assert!(!is_fresh("1795535699", now, REPLAY_WINDOW_SECS));
        assert!(!is_fresh("1795536301", now, REPLAY_WINDOW_SECS));
        assert!(!is_fresh("", now, REPLAY_WINDOW_SECS));
        assert!(!is_fresh("-1", now, REPLAY_WINDOW_SECS));
        assert!(!is_fresh("17955360000000000000000", now, REPLAY_WINDOW_SECS));
    }
}
