//! WeChat Pay APIv3: request signatures, `Wechatpay-*` signature checks, AES-256-GCM resources
//! and the `paySign` of `wx.requestPayment`.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::keys::{SigningKey, VerifyingKey};
use crate::redacted::Secret;

/// Notifications and responses whose timestamp is further than this from now are refused.
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;

/// Who signs an APIv3 request: the merchant id, its API certificate serial and private key.
pub struct Credentials<'a> {
    pub mchid: &'a str,
    pub serial_no: &'a str,
    pub key: &'a SigningKey,
}

/// `Authorization: WECHATPAY2-SHA256-RSA2048 …` for a request. `url` is the path and query,
/// `body` the exact bytes sent (empty for GET).
pub fn authorization(
    credentials: &Credentials<'_>,
    method: &str,
    url: &str,
    body: &[u8],
    timestamp: u64,
    nonce: &str,
) -> String {
    let mut message = format!("{method}\n{url}\n{timestamp}\n{nonce}\n").into_bytes();
    message.extend_from_slice(body);
    message.push(b'\n');
    let signature = credentials.key.sign(&message);
    let Credentials { mchid, serial_no, .. } = credentials;
    format!(
        "WECHATPAY2-SHA256-RSA2048 mchid=\"{mchid}\",nonce_str=\"{nonce}\",timestamp=\"{timestamp}\",serial_no=\"{serial_no}\",signature=\"{signature}\""
    )
}

/// `paySign` for `wx.requestPayment` with `signType: "RSA"`.
pub fn pay_sign(key: &SigningKey, app_id: &str, timestamp: &str, nonce: &str, package: &str) -> String {
    key.sign(format!("{app_id}\n{timestamp}\n{nonce}\n{package}\n").as_bytes())
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Wechatpay-{0} header is missing")]
    MissingHeader(&'static str),
    #[error("a signature test probe (WECHATPAY/SIGNTEST/) is not a real message")]
    Probe,
    #[error("the timestamp is {0} s away from now (at most {MAX_CLOCK_SKEW_SECS})")]
    Stale(u64),
    #[error("no platform key is configured for serial {0}")]
    UnknownSerial(String),
    #[error("the signature does not match")]
    Mismatch,
}

/// The `Wechatpay-*` headers of a response or notification.
pub struct SignedHeaders<'a> {
    pub timestamp: Option<&'a str>,
    pub nonce: Option<&'a str>,
    pub signature: Option<&'a str>,
    pub serial: Option<&'a str>,
}

/// Checks `signature` over `timestamp\nnonce\nbody\n` on the raw body, with the platform key
/// named by `Wechatpay-Serial` (a certificate serial or a `PUB_KEY_ID_…`).
pub fn verify_signed<'k>(
    headers: &SignedHeaders<'_>,
    body: &[u8],
    keys: impl IntoIterator<Item = (&'k str, &'k VerifyingKey)>,
    now: u64,
) -> Result<(), SignatureError> {
    let timestamp = headers.timestamp.ok_or(SignatureError::MissingHeader("Timestamp"))?;
    let nonce = headers.nonce.ok_or(SignatureError::MissingHeader("Nonce"))?;
    let signature = headers.signature.ok_or(SignatureError::MissingHeader("Signature"))?;
    let serial = headers.serial.ok_or(SignatureError::MissingHeader("Serial"))?;
    if signature.starts_with("WECHATPAY/SIGNTEST/") {
        return Err(SignatureError::Probe);
    }
    let ts: u64 = timestamp.trim().parse().map_err(|_| SignatureError::Stale(u64::MAX))?;
    if ts.abs_diff(now) > MAX_CLOCK_SKEW_SECS {
        return Err(SignatureError::Stale(ts.abs_diff(now)));
    }
    let key = keys
        .into_iter()
        .find(|(id, _)| id.eq_ignore_ascii_case(serial.trim()))
        .map(|(_, key)| key)
        .ok_or_else(|| SignatureError::UnknownSerial(serial.to_owned()))?;
    let mut message = format!("{timestamp}\n{nonce}\n").into_bytes();
    message.extend_from_slice(body);
    message.push(b'\n');
    if key.verify(&message, signature) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Decrypts a notification `resource`: AES-256-GCM with the APIv3 key (32 ASCII bytes), the
/// 12-character nonce, `associated_data` as AAD, and base64(ciphertext ‖ tag).
pub fn decrypt_resource(apiv3_key: &Secret, nonce: &str, associated_data: &str, ciphertext: &str) -> Option<Vec<u8>> {
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, apiv3_key.expose().as_bytes()).ok()?);
    let nonce = Nonce::try_assume_unique_for_key(nonce.as_bytes()).ok()?;
    let mut data = STANDARD.decode(ciphertext).ok()?;
    let plain = key
        .open_in_place(nonce, Aad::from(associated_data.as_bytes()), &mut data)
        .ok()?;
    Some(plain.to_vec())
}

/// The inverse of [`decrypt_resource`], for the simulator and tests.
pub fn encrypt_resource(apiv3_key: &str, nonce: &str, associated_data: &str, plaintext: &[u8]) -> Option<String> {
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, apiv3_key.as_bytes()).ok()?);
    let nonce = Nonce::try_assume_unique_for_key(nonce.as_bytes()).ok()?;
    let mut data = plaintext.to_vec();
    key.seal_in_place_append_tag(nonce, Aad::from(associated_data.as_bytes()), &mut data)
        .ok()?;
    Some(STANDARD.encode(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_pair() -> (SigningKey, VerifyingKey) {
        let key = include_str!("../../../tools/wechat-sim/src/platform_key.pem");
        let cert = include_str!("../../../tools/wechat-sim/src/platform_cert.pem");
        (
            SigningKey::from_pem(key).unwrap(),
            VerifyingKey::from_pem(cert).unwrap(),
        )
    }

    #[test]
    fn authorization_signs_the_documented_message() {
        let (signer, verifier) = key_pair();
        let body = br#"{"appid":"wx1"}"#;
        let credentials = Credentials {
            mchid: "1900000001",
            serial_no: "SERIAL1",
            key: &signer,
        };
        let header = authorization(
            &credentials,
            "POST",
            "/v3/pay/transactions/jsapi",
            body,
            1554208460,
            "NONCE1",
        );
        assert!(header.starts_with("WECHATPAY2-SHA256-RSA2048 mchid=\"1900000001\",nonce_str=\"NONCE1\",timestamp=\"1554208460\",serial_no=\"SERIAL1\",signature=\""));
        let signature = header.split("signature=\"").nth(1).unwrap().trim_end_matches('"');
        let message = b"POST\n/v3/pay/transactions/jsapi\n1554208460\nNONCE1\n{\"appid\":\"wx1\"}\n";
        assert!(verifier.verify(message, signature));
    }

    #[test]
    fn pay_sign_is_over_four_lines() {
        let (signer, verifier) = key_pair();
        let sig = pay_sign(&signer, "wx4f4bc4dec97d474b", "1795536000", "n1", "prepay_id=wx1");
        assert!(verifier.verify(b"wx4f4bc4dec97d474b\n1795536000\nn1\nprepay_id=wx1\n", &sig));
    }

    #[test]
    fn signed_messages_are_checked_strictly() {
        let (signer, verifier) = key_pair();
        let keys = [
            ("PUB_KEY_ID_0114", &verifier),
            ("5157F09EFDC096DE15EBE81A47057A72", &verifier),
        ];
        let body = br#"{"id":"1"}"#;
        let sig = signer.sign(b"1795536000\nabc\n{\"id\":\"1\"}\n");
        let headers = |signature: &'static str, serial: &'static str, ts: &'static str| SignedHeaders {
            timestamp: Some(ts),
            nonce: Some("abc"),
            signature: Some(signature),
            serial: Some(serial),
        };
        let sig: &'static str = Box::leak(sig.into_boxed_str());
        assert_eq!(
            verify_signed(&headers(sig, "PUB_KEY_ID_0114", "1795536000"), body, keys, 1795536100),
            Ok(())
        );
        assert_eq!(
            verify_signed(
                &headers(sig, "5157f09efdc096de15ebe81a47057a72", "1795536000"),
                body,
                keys,
                1795536000
            ),
            Ok(())
        );
        assert_eq!(
            verify_signed(
                &headers(sig, "PUB_KEY_ID_0114", "1795536000"),
                b"{\"id\":\"2\"}",
                keys,
                1795536000
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signed(&headers(sig, "PUB_KEY_ID_0114", "1795536000"), body, keys, 1795536301),
            Err(SignatureError::Stale(301))
        );
        assert_eq!(
            verify_signed(&headers(sig, "OTHER", "1795536000"), body, keys, 1795536000),
            Err(SignatureError::UnknownSerial("OTHER".into()))
        );
        assert_eq!(
            verify_signed(
                &headers("WECHATPAY/SIGNTEST/x", "PUB_KEY_ID_0114", "1795536000"),
                body,
                keys,
                1795536000
            ),
            Err(SignatureError::Probe)
        );
        let missing = SignedHeaders {
            timestamp: None,
            nonce: Some("a"),
            signature: Some("b"),
            serial: Some("c"),
        };
        assert_eq!(
            verify_signed(&missing, body, keys, 0),
            Err(SignatureError::MissingHeader("Timestamp"))
        );
    }

    #[test]
    fn resources_round_trip_and_tampering_fails() {
        let key = "0123456789abcdef0123456789abcdef";
        let sealed = encrypt_resource(key, "0123456789ab", "transaction", br#"{"out_trade_no":"T1"}"#).unwrap();
        let secret = Secret::new(key);
        assert_eq!(
            decrypt_resource(&secret, "0123456789ab", "transaction", &sealed).unwrap(),
            br#"{"out_trade_no":"T1"}"#
        );
        assert!(
            decrypt_resource(&secret, "0123456789ab", "other", &sealed).is_none(),
            "AAD is authenticated"
        );
        assert!(decrypt_resource(&secret, "ba9876543210", "transaction", &sealed).is_none());
        assert!(
            decrypt_resource(
                &Secret::new("fedcba9876543210fedcba9876543210"),
                "0123456789ab",
                "transaction",
                &sealed
            )
            .is_none()
        );
        let mut bytes = STANDARD.decode(&sealed).unwrap();
        bytes[0] ^= 1;
        assert!(decrypt_resource(&secret, "0123456789ab", "transaction", &STANDARD.encode(bytes)).is_none());
        assert!(decrypt_resource(&Secret::new("short"), "0123456789ab", "transaction", &sealed).is_none());
    }
}
