//! Open data: what `getPhoneNumber`, `getWeRunData`, `getShareInfo` and `getUserInfo` hand the
//! mini-program encrypted under the user's session_key, and the `rawData` signature.
//!
//! AES-128-CBC with **strict** PKCS#7: several SDKs accept any last byte and return garbage when
//! the key is wrong; here every pad byte is checked. Each failure has its own error, for the log
//! and the operator's CLI; the API answers all of them after decryption with one answer
//! ([`OpenDataError::is_rejected`]), since telling "bad padding" from "not JSON" to a caller is a
//! padding oracle.

use aes::cipher::{BlockDecryptMut, KeyIvInit, block_padding::NoPadding};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

use crate::redacted::Secret;

/// Watermarks in the future by more than this are refused (clocks differ a little).
pub const FUTURE_SKEW_SECS: u64 = 60;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OpenDataError {
    #[error("{field} is not valid base64")]
    InvalidBase64 { field: &'static str },
    #[error("the session key is not base64 of 16 bytes")]
    BadSessionKey,
    #[error("iv must be base64 of 16 bytes, it decodes to {0}")]
    BadIvLength(usize),
    #[error("encryptedData is empty")]
    EmptyCiphertext,
    #[error("encryptedData must be a whole number of 16-byte blocks, it is {0} bytes")]
    NotBlockAligned(usize),
    #[error("the data does not decrypt with this session's key (bad padding)")]
    BadPadding,
    #[error("the data does not decrypt with this session's key (not JSON)")]
    NotJson,
    #[error("the decrypted data has no watermark")]
    MissingWatermark,
    #[error("the data was encrypted for another app ({0})")]
    ForeignAppId(String),
    #[error("the data is {age_secs} s old; the limit is {max_secs} s: ask the user again")]
    Stale { age_secs: u64, max_secs: u64 },
    #[error("the data's watermark is {0} s in the future")]
    FromTheFuture(u64),
    #[error("the decrypted data is not what this endpoint reads: {0}")]
    UnexpectedData(String),
}

/// How a failure is answered (see [`OpenDataError::class`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// Not base64 of whole blocks with a 16-byte iv: said as such, before anything is decrypted.
    Malformed,
    /// Well-formed input that does not check out under the key: one answer for all.
    Rejected,
    /// Data that opened and is ours, but too old: ask the user again.
    Stale,
    /// The stored session key is not a key.
    StoredKey,
}

impl OpenDataError {
    /// Which answer a failure gets. Every variant is listed (no wildcard), so a new failure
    /// cannot slip into a distinct answer unnoticed.
    pub fn class(&self) -> FailureClass {
        match self {
            Self::InvalidBase64 { .. } | Self::BadIvLength(_) | Self::EmptyCiphertext | Self::NotBlockAligned(_) => {
                FailureClass::Malformed
            }
            // The usual cause is a session_key that WeChat rotated because the user ran
            // `wx.login` again; the other is forged data. Telling these apart to the caller
            // (bad padding vs not JSON vs no watermark...) is a padding oracle.
            Self::BadPadding
            | Self::NotJson
            | Self::MissingWatermark
            | Self::ForeignAppId(_)
            | Self::FromTheFuture(_)
            | Self::UnexpectedData(_) => FailureClass::Rejected,
            Self::Stale { .. } => FailureClass::Stale,
            Self::BadSessionKey => FailureClass::StoredKey,
        }
    }

    /// Well-formed input that does not check out under the key (one answer for all).
    pub fn is_rejected(&self) -> bool {
        self.class() == FailureClass::Rejected
    }
}

/// Base64 as the mini-program sends it. A `+` that form encoding turned into a space is put back
/// (first, so that one at either end is too): a space is never valid base64, so the repair cannot
/// change the meaning of valid input. Other whitespace around it is dropped.
fn decode_base64(field: &'static str, text: &str) -> Result<Vec<u8>, OpenDataError> {
    let repaired;
    let text = if text.contains(' ') {
        repaired = text.replace(' ', "+");
        &repaired
    } else {
        text
    };
    STANDARD
        .decode(text.trim())
        .map_err(|_| OpenDataError::InvalidBase64 { field })
}

/// Decrypts `encrypted_data` with `iv` under `session_key` (all base64) and strips strict
/// PKCS#7 padding.
pub fn decrypt(session_key: &Secret, encrypted_data: &str, iv: &str) -> Result<Vec<u8>, OpenDataError> {
    let key: [u8; 16] = STANDARD
        .decode(session_key.expose())
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or(OpenDataError::BadSessionKey)?;
    let iv = decode_base64("iv", iv)?;
    let iv: [u8; 16] = iv
        .as_slice()
        .try_into()
        .map_err(|_| OpenDataError::BadIvLength(iv.len()))?;
    let mut data = decode_base64("encryptedData", encrypted_data)?;
    if data.is_empty() {
        return Err(OpenDataError::EmptyCiphertext);
    }
    if data.len() % 16 != 0 {
        return Err(OpenDataError::NotBlockAligned(data.len()));
    }
    let len = data.len();
    cbc::Decryptor::<aes::Aes128>::new(&key.into(), &iv.into())
        .decrypt_padded_mut::<NoPadding>(&mut data)
        .map_err(|_| OpenDataError::NotBlockAligned(len))?;
    let pad = usize::from(*data.last().expect("non-empty"));
    if !(1..=16).contains(&pad) || data[data.len() - pad..].iter().any(|&b| usize::from(b) != pad) {
        return Err(OpenDataError::BadPadding);
    }
    data.truncate(data.len() - pad);
    Ok(data)
}

/// The watermark alone: the rest of the object is skipped, not built.
#[derive(Deserialize)]
struct Watermarked {
    watermark: Option<Value>,
}

/// Decrypts open data and checks its watermark: `appid` must be ours, and `timestamp` no older
/// than `max_age_secs` (`None`: no age check) nor in the future. Returns the fields a handler
/// reads (`T`; a `Map` for the whole object) without building a JSON tree it does not need.
/// Checks in this order: padding, JSON object, watermark present and ours, `T`'s shape, the age.
pub fn open<T: DeserializeOwned>(
    session_key: &Secret,
    encrypted_data: &str,
    iv: &str,
    app_id: &str,
    max_age_secs: Option<u64>,
    now: u64,
) -> Result<T, OpenDataError> {
    let plain = decrypt(session_key, encrypted_data, iv)?;
    // Only an object is open data (a struct would also accept an array).
    if plain.trim_ascii_start().first() != Some(&b'{') {
        return Err(OpenDataError::NotJson);
    }
    let Ok(Watermarked { watermark }) = serde_json::from_slice(&plain) else {
        return Err(OpenDataError::NotJson);
    };
    let watermark = watermark.as_ref().ok_or(OpenDataError::MissingWatermark)?;
    let (Some(appid), Some(timestamp)) = (watermark["appid"].as_str(), watermark["timestamp"].as_u64()) else {
        return Err(OpenDataError::MissingWatermark);
    };
    if appid != app_id {
        return Err(OpenDataError::ForeignAppId(appid.to_owned()));
    }
    let data = serde_json::from_slice(&plain).map_err(|e| {
        // serde names a missing field, but quotes values of the wrong type: keep those out.
        let text = e.to_string();
        OpenDataError::UnexpectedData(match text.find(" at line") {
            Some(end) if text.starts_with("missing field") => text[..end].to_owned(),
            _ => "a field is missing or has the wrong type".to_owned(),
        })
    })?;
    // The age last: "ask again" is only said of data that is otherwise good.
    check_age(timestamp, max_age_secs, now)?;
    Ok(data)
}

fn check_age(timestamp: u64, max_age_secs: Option<u64>, now: u64) -> Result<(), OpenDataError> {
    if timestamp > now.saturating_add(FUTURE_SKEW_SECS) {
        return Err(OpenDataError::FromTheFuture(timestamp - now));
    }
    if let Some(max_secs) = max_age_secs {
        let age_secs = now.saturating_sub(timestamp);
        if age_secs > max_secs {
            return Err(OpenDataError::Stale { age_secs, max_secs });
        }
    }
    Ok(())
}

/// Checks `signature == hex(sha1(raw_data + session_key))` in constant time (getUserInfo).
pub fn verify_signature(raw_data: &str, session_key: &Secret, signature: &str) -> bool {
    let mut hasher = Sha1::new();
    hasher.update(raw_data.as_bytes());
    hasher.update(session_key.expose().as_bytes());
    let expected = hex::encode(hasher.finalize());
    let given = signature.trim().to_ascii_lowercase();
    expected.as_bytes().ct_eq(given.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes::cipher::BlockEncryptMut;
    use aes::cipher::block_padding::Pkcs7;

    // The sample published with WeChat's open-data decryption docs.
    const DOC_APP_ID: &str = "wx4f4bc4dec97d474b";
    const DOC_KEY: &str = "tiihtNczf5v6AKRyjwEUhQ==";
    const DOC_IV: &str = "r7BXXKkLb8qrSNn05n0qiA==";
    const DOC_DATA: &str = "CiyLU1Aw2KjvrjMdj8YKliAjtP4gsMZMQmRzooG2xrDcvSnxIMXFufNstNGTyaGS9uT5geRa0W4oTOb1WT7fJlAC+oNPdbB+3hVbJSRgv+4lGOETKUQz6OYStslQ142dNCuabNPGBzlooOmB231qMM85d2/fV6ChevvXvQP8Hkue1poOFtnEtpyxVLW1zAo6/1Xx1COxFvrc2d7UL/lmHInNlxuacJXwu0fjpXfz/YqYzBIBzD6WUfTIF9GRHpOn/Hz7saL8xz+W//FRAUid1OksQaQx4CMs8LOddcQhULW4ucetDf96JcR3g0gfRK4PC7E/r7Z6xNrXd2UIeorGj5Ef7b1pJAYB6Y5anaHqZ9J6nKEBvB4DnNLIVWSgARns/8wR2SiRS7MNACwTyrGvt9ts8p12PKFdlqYTopNHR1Vf7XjfhQlVsAJdNiKdYmYVoKlaRv85IfVunYzO0IKXsyl7JCUjCpoG20f0a04COwfneQAGGwd5oa+T8yO5hzuyDb/XcxxmK01EpqOyuxINew==";
    const DOC_TIMESTAMP: u64 = 1477314187;

    fn key() -> Secret {
        Secret::new(DOC_KEY)
    }

    type Map = serde_json::Map<String, Value>;

    /// The whole object, as the operator's CLI reads it.
    fn open(
        key: &Secret,
        data: &str,
        iv: &str,
        app_id: &str,
        max_age_secs: Option<u64>,
        now: u64,
    ) -> Result<Map, OpenDataError> {
        super::open(key, data, iv, app_id, max_age_secs, now)
    }

    /// Our own vector: `plain` encrypted with `pad_with` as the padding routine.
    fn seal_raw(key: &[u8; 16], iv: &[u8; 16], padded: &[u8]) -> String {
        let mut buf = padded.to_vec();
        let len = buf.len();
        cbc::Encryptor::<aes::Aes128>::new(key.into(), iv.into())
            .encrypt_padded_mut::<NoPadding>(&mut buf, len)
            .unwrap();
        STANDARD.encode(buf)
    }

    fn seal(key_b64: &str, iv: &[u8; 16], plain: &[u8]) -> String {
        let key: [u8; 16] = STANDARD.decode(key_b64).unwrap().try_into().unwrap();
        STANDARD
            .encode(cbc::Encryptor::<aes::Aes128>::new(&key.into(), iv.into()).encrypt_padded_vec_mut::<Pkcs7>(plain))
    }

    #[test]
    fn decrypts_the_published_sample() {
        let data = open(&key(), DOC_DATA, DOC_IV, DOC_APP_ID, None, DOC_TIMESTAMP + 10).unwrap();
        assert_eq!(data["openId"], "oGZUI0egBJY1zhBYw2KhdUfwVJJE");
        assert_eq!(data["nickName"], "Band");
        assert_eq!(data["unionId"], "ocMvos6NjeKLIBqg5Mr9QjxrP1FA");
        assert_eq!(data["watermark"]["timestamp"], DOC_TIMESTAMP);
    }

    #[test]
    fn watermark_checks() {
        let now = DOC_TIMESTAMP + 100;
        assert_eq!(
            open(&key(), DOC_DATA, DOC_IV, "wx0000000000000000", None, now).unwrap_err(),
            OpenDataError::ForeignAppId(DOC_APP_ID.into())
        );
        assert_eq!(
            open(&key(), DOC_DATA, DOC_IV, DOC_APP_ID, Some(99), now).unwrap_err(),
            OpenDataError::Stale {
                age_secs: 100,
                max_secs: 99
            }
        );
        assert!(open(&key(), DOC_DATA, DOC_IV, DOC_APP_ID, Some(100), now).is_ok());
        assert_eq!(
            open(&key(), DOC_DATA, DOC_IV, DOC_APP_ID, None, DOC_TIMESTAMP - 61).unwrap_err(),
            OpenDataError::FromTheFuture(61)
        );
        assert!(open(&key(), DOC_DATA, DOC_IV, DOC_APP_ID, None, DOC_TIMESTAMP - 60).is_ok());

        let iv = [7u8; 16];
        let no_mark = seal(DOC_KEY, &iv, br#"{"openGId":"g"}"#);
        assert_eq!(
            open(&key(), &no_mark, &STANDARD.encode(iv), DOC_APP_ID, None, now).unwrap_err(),
            OpenDataError::MissingWatermark
        );
        let array = seal(DOC_KEY, &iv, b"[1,2]");
        assert_eq!(
            open(&key(), &array, &STANDARD.encode(iv), DOC_APP_ID, None, now).unwrap_err(),
            OpenDataError::NotJson
        );
    }

    #[test]
    fn typed_opening_reads_fields_and_names_what_is_missing() {
        #[derive(serde::Deserialize, Debug)]
        struct Phone {
            #[serde(rename = "purePhoneNumber")]
            pure_phone_number: String,
        }
        let iv = [9u8; 16];
        let iv64 = STANDARD.encode(iv);
        let mark = format!(r#""watermark":{{"appid":"{DOC_APP_ID}","timestamp":{DOC_TIMESTAMP}}}"#);
        let good = seal(
            DOC_KEY,
            &iv,
            format!(r#"{{"purePhoneNumber":"13800138000",{mark}}}"#).as_bytes(),
        );
        let phone: Phone = super::open(&key(), &good, &iv64, DOC_APP_ID, None, DOC_TIMESTAMP).unwrap();
        assert_eq!(phone.pure_phone_number, "13800138000");

        let missing = seal(DOC_KEY, &iv, format!(r#"{{"phoneNumber":"x",{mark}}}"#).as_bytes());
        assert_eq!(
            super::open::<Phone>(&key(), &missing, &iv64, DOC_APP_ID, None, DOC_TIMESTAMP).unwrap_err(),
            OpenDataError::UnexpectedData("missing field `purePhoneNumber`".into())
        );
        // A wrong type is reported without quoting the user's data back.
        let wrong = seal(
            DOC_KEY,
            &iv,
            format!(r#"{{"purePhoneNumber":13800138000,{mark}}}"#).as_bytes(),
        );
        let err = super::open::<Phone>(&key(), &wrong, &iv64, DOC_APP_ID, None, DOC_TIMESTAMP).unwrap_err();
        assert!(!err.to_string().contains("13800138000"), "{err}");
        assert!(err.is_rejected(), "the wrong shape gets the one answer too");
        // The watermark is still checked before the fields are read.
        assert_eq!(
            super::open::<Phone>(&key(), &good, &iv64, "wx0000000000000000", None, DOC_TIMESTAMP).unwrap_err(),
            OpenDataError::ForeignAppId(DOC_APP_ID.into())
        );
    }

    #[test]
    fn form_encoded_plus_signs_are_repaired() {
        assert!(DOC_DATA.contains('+'));
        let mangled = DOC_DATA.replace('+', " ");
        assert!(open(&key(), &mangled, DOC_IV, DOC_APP_ID, None, DOC_TIMESTAMP).is_ok());
        // A '+' at the very start is repaired too (0xf8 = 111110.., '+' in base64), and other
        // whitespace around a field is dropped.
        let mut iv = [0u8; 16];
        iv[0] = 0xf8;
        let iv_b64 = STANDARD.encode(iv);
        assert!(iv_b64.starts_with('+'));
        let plain = br#"{"openGId":"g","watermark":{"appid":"wx4f4bc4dec97d474b","timestamp":1477314187}}"#;
        let data = seal(DOC_KEY, &iv, plain);
        let iv_sent = format!("\n{}\t", iv_b64.replacen('+', " ", 1));
        assert_eq!(
            open(&key(), &data, &iv_sent, DOC_APP_ID, None, DOC_TIMESTAMP).unwrap()["openGId"],
            "g"
        );
    }

    #[test]
    fn every_malformed_input_has_its_own_error() {
        let iv = [1u8; 16];
        let iv_b64 = STANDARD.encode(iv);
        let k: [u8; 16] = STANDARD.decode(DOC_KEY).unwrap().try_into().unwrap();
        let cases: Vec<(Secret, String, String, OpenDataError)> = vec![
            (
                key(),
                "!!!".into(),
                iv_b64.clone(),
                OpenDataError::InvalidBase64 { field: "encryptedData" },
            ),
            (
                key(),
                DOC_DATA.into(),
                "r7BX*".into(),
                OpenDataError::InvalidBase64 { field: "iv" },
            ),
            (
                key(),
                DOC_DATA.into(),
                STANDARD.encode([0u8; 15]),
                OpenDataError::BadIvLength(15),
            ),
            (
                key(),
                DOC_DATA.into(),
                STANDARD.encode([0u8; 17]),
                OpenDataError::BadIvLength(17),
            ),
            (
                Secret::new(STANDARD.encode([0u8; 15])),
                DOC_DATA.into(),
                DOC_IV.into(),
                OpenDataError::BadSessionKey,
            ),
            (
                Secret::new(STANDARD.encode([0u8; 17])),
                DOC_DATA.into(),
                DOC_IV.into(),
                OpenDataError::BadSessionKey,
            ),
            (
                Secret::new("not base64!"),
                DOC_DATA.into(),
                DOC_IV.into(),
                OpenDataError::BadSessionKey,
            ),
            (key(), "".into(), iv_b64.clone(), OpenDataError::EmptyCiphertext),
            (
                key(),
                STANDARD.encode([0u8; 20]),
                iv_b64.clone(),
                OpenDataError::NotBlockAligned(20),
            ),
            // Pad byte 0, pad byte 17, and pad bytes that disagree.
            (
                key(),
                seal_raw(&k, &iv, &[b'x'; 16]),
                iv_b64.clone(),
                OpenDataError::BadPadding,
            ),
            (
                key(),
                seal_raw(&k, &iv, &[[b'{'; 15].as_slice(), &[0]].concat()),
                iv_b64.clone(),
                OpenDataError::BadPadding,
            ),
            (
                key(),
                seal_raw(&k, &iv, &[17u8; 32]),
                iv_b64.clone(),
                OpenDataError::BadPadding,
            ),
            (
                key(),
                seal_raw(&k, &iv, &[[b'{'; 13].as_slice(), &[3, 2, 3]].concat()),
                iv_b64.clone(),
                OpenDataError::BadPadding,
            ),
            // Valid padding around bytes that are not JSON.
            (
                key(),
                seal_raw(&k, &iv, &[[0xffu8; 12].as_slice(), &[4, 4, 4, 4]].concat()),
                iv_b64.clone(),
                OpenDataError::NotJson,
            ),
        ];
        for (session_key, data, iv, expected) in cases {
            let got = open(&session_key, &data, &iv, DOC_APP_ID, None, DOC_TIMESTAMP).unwrap_err();
            assert_eq!(got, expected, "data={data} iv={iv}");
        }
    }

    #[test]
    fn a_full_block_of_padding_is_accepted() {
        let iv = [9u8; 16];
        let plain = br#"{"openGId":"g1","watermark":{"appid":"wx4f4bc4dec97d474b","timestamp":1477314187}}"#;
        let body = [plain.as_slice(), &[b' '; 16][..(16 - plain.len() % 16) % 16]].concat();
        assert_eq!(
            body.len() % 16,
            0,
            "the test pads to a block boundary, so PKCS#7 adds a whole block"
        );
        let data = seal(DOC_KEY, &iv, &body);
        assert_eq!(decrypt(&key(), &data, &STANDARD.encode(iv)).unwrap(), body);
    }

    #[test]
    fn the_wrong_key_is_rejected_and_only_staleness_and_malformed_input_are_told_apart() {
        let other = Secret::new(STANDARD.encode([5u8; 16]));
        let err = open(&other, DOC_DATA, DOC_IV, DOC_APP_ID, None, DOC_TIMESTAMP).unwrap_err();
        assert!(err.is_rejected(), "{err:?}");
        assert!(
            !OpenDataError::Stale {
                age_secs: 1,
                max_secs: 0
            }
            .is_rejected()
        );
        assert!(!OpenDataError::NotBlockAligned(20).is_rejected());
        assert!(!OpenDataError::BadSessionKey.is_rejected());
    }

    #[test]
    fn raw_data_signature() {
        // Computed independently: printf '%s%s' '{"nickName":"Band"}' 'tiihtNczf5v6AKRyjwEUhQ==' | sha1sum
        let raw = r#"{"nickName":"Band"}"#;
        let sig = SIG_BAND;
        assert!(verify_signature(raw, &key(), sig));
        assert!(verify_signature(raw, &key(), &sig.to_uppercase()));
        assert!(!verify_signature(raw, &key(), &sig.replace('a', "b")));
        assert!(!verify_signature(r#"{"nickName":"Bond"}"#, &key(), sig));
        assert!(!verify_signature(raw, &key(), ""));
    }

    const SIG_BAND: &str = "54b71917aab21b53e850dec1b03f73b0bbeb6abe";
}
