//! WeChat's API security mode (服务端 API 安全鉴权, console: 开发设置 → API 安全): calls to the
//! APIs that support it carry a body encrypted with the app's symmetric key and a signature by
//! the app's private key; WeChat's answers come back encrypted and signed by WeChat's platform
//! key. Facts in `../shared/reference/wechat-server-api.md`.
//!
//! - Request: `{"iv","data","authtag"}` (base64; AES-256-GCM, 12-byte random IV) of the call's
//!   parameters without `access_token` plus `_n` (random), `_appid`, `_timestamp`; AAD
//!   `urlpath|appid|timestamp|sn` (urlpath: the URL with its scheme, without the query; sn: the
//!   symmetric key's SN). Signature: RSA-PSS (SHA-256, salt 32) over
//!   `urlpath\nappid\ntimestamp\n<the encrypted body>`; headers `Wechatmp-Appid`,
//!   `Wechatmp-TimeStamp`, `Wechatmp-Signature`, `Wechatmp-Serial` (the private key's SN; the SN
//!   is not part of the signed string).
//! - Answer: `Wechatmp-Signature` verified over `urlpath\nappid\ntimestamp\n<the answer's raw
//!   bytes>` with the platform certificate `Wechatmp-Serial` names (or the `-Deprecated` pair
//!   while WeChat rotates its key), the timestamp within [`ANSWER_WINDOW_SECS`], and only then
//!   decrypted. An answer that fails is never used. An unsigned answer is believed only as a
//!   refusal (a non-zero `errcode`): WeChat refuses a request it cannot verify in plain JSON, and
//!   a forged refusal gains an attacker nothing a dropped packet would not.
//!
//! Only AES256_GCM with RSAwithSHA256 is implemented; the console's other choice (SM4_GCM with
//! SM2withSM3) is refused when the keys are read, not at the first call.

use std::collections::BTreeMap;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;

use crate::pay::keys::VerifyingKey;
use crate::redacted::Secret;

/// How far an answer's `Wechatmp-TimeStamp` may be from our clock (either way).
pub const ANSWER_WINDOW_SECS: u64 = 300;

/// The APIs we call that WeChat marks "支持加密请求" (each API's own page): with the keys
/// configured, these go in the mode, every other call stays plain. Left out on purpose: the
/// calls that carry the AppSecret (`jscode2session`, `stable_token`, which the mode does not
/// cover), `checksession`/`resetusersessionkey` (GET, signed by the session key), and
/// `getwxacodeunlimit`, whose success is an image, not the JSON the mode encrypts.
pub const SUPPORTED_APIS: &[&str] = &[
    "/wxa/business/getuserphonenumber",
    "/wxa/getuserriskrank",
    "/wxa/msg_sec_check",
    "/wxa/media_check_async",
    "/cgi-bin/message/subscribe/send",
    "/cgi-bin/message/custom/send",
];

/// Whether the call to `path` goes in the mode (when the keys are configured).
pub fn supports(path: &str) -> bool {
    SUPPORTED_APIS.contains(&path)
}

/// The keys as the app secret holds them (`api_security`), each as the console shows it.
#[derive(Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiSecurityDocument {
    /// The symmetric key: base64 of 32 bytes (AES256).
    pub aes_key: Secret,
    /// Its SN (编号) in the console.
    pub aes_sn: String,
    /// The app's RSA private key, PEM, PKCS#1 (`BEGIN RSA PRIVATE KEY`, as the console
    /// downloads it) or PKCS#8 (`BEGIN PRIVATE KEY`).
    pub private_key: Secret,
    /// The asymmetric key's SN in the console.
    pub private_key_sn: String,
    /// WeChat's platform certificate(s) with the SN the console gives each (not the
    /// certificate's own serial); two while WeChat rotates its key.
    pub platform_certificates: Vec<PlatformCertificate>,
}

#[derive(Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PlatformCertificate {
    pub sn: String,
    /// PEM: `BEGIN CERTIFICATE` (or the bare `BEGIN PUBLIC KEY`).
    pub certificate: String,
}

/// The keys, parsed once per read of the app secret.
pub struct ApiSecurity {
    aes: LessSafeKey,
    aes_sn: String,
    signer: RsaKeyPair,
    signer_sn: String,
    /// WeChat's verifying keys by SN.
    platform: BTreeMap<String, VerifyingKey>,
}

impl std::fmt::Debug for ApiSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiSecurity")
            .field("aes_sn", &self.aes_sn)
            .field("private_key_sn", &self.signer_sn)
            .field("platform_sns", &self.platform.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A request body in the mode and the headers that go with it.
pub struct SealedRequest {
    pub body: String,
    pub headers: [(&'static str, String); 4],
}

/// Why an answer was not used (logged; the caller sees one 502).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("the answer failed API security verification: {0}")]
pub struct Unverified(pub &'static str);

impl ApiSecurity {
    /// Checks and parses the console's keys; the error names the field, never a value.
    pub fn from_document(doc: &ApiSecurityDocument) -> Result<Self, String> {
        let key = STANDARD
            .decode(doc.aes_key.expose().trim())
            .map_err(|_| "api_security.aes_key is not base64".to_owned())?;
        if key.len() != 32 {
            return Err(format!(
                "api_security.aes_key is {} bytes, not the 32 of an AES256 key (SM4 is not supported)",
                key.len()
            ));
        }
        let aes = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &key).map_err(|_| "api_security.aes_key is not an AES256 key")?,
        );
        let signer = match PrivateKeyDer::from_pem_slice(doc.private_key.expose().as_bytes()) {
            Ok(PrivateKeyDer::Pkcs1(der)) => RsaKeyPair::from_der(der.secret_pkcs1_der()).ok(),
            Ok(PrivateKeyDer::Pkcs8(der)) => RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).ok(),
            _ => None,
        }
        .ok_or("api_security.private_key is not an RSA private key in PEM (PKCS#1 or PKCS#8; SM2 is not supported)")?;
        let mut platform = BTreeMap::new();
        for (i, cert) in doc.platform_certificates.iter().enumerate() {
            let key = VerifyingKey::from_pem(&cert.certificate).ok_or_else(|| {
                format!("api_security.platform_certificates[{i}].certificate is not a PEM certificate or public key")
            })?;
            if cert.sn.trim().is_empty() {
                return Err(format!("api_security.platform_certificates[{i}].sn is empty"));
            }
            platform.insert(cert.sn.clone(), key);
        }
        if platform.is_empty() {
            return Err("api_security.platform_certificates is empty: WeChat's answers could not be verified".into());
        }
        for (name, sn) in [("aes_sn", &doc.aes_sn), ("private_key_sn", &doc.private_key_sn)] {
            if sn.trim().is_empty() {
                return Err(format!("api_security.{name} is empty"));
            }
        }
        Ok(Self {
            aes,
            aes_sn: doc.aes_sn.clone(),
            signer,
            signer_sn: doc.private_key_sn.clone(),
            platform,
        })
    }

    /// Encrypts and signs the parameters `params` (a JSON object, without `access_token`) of a
    /// call to `url_path` at `timestamp`.
    pub fn seal(&self, url_path: &str, app_id: &str, timestamp: u64, params: &serde_json::Value) -> SealedRequest {
        let mut plain = params.as_object().cloned().unwrap_or_default();
        plain.insert("_n".into(), STANDARD.encode(random_bytes::<24>()).into());
        plain.insert("_appid".into(), app_id.into());
        plain.insert("_timestamp".into(), timestamp.into());
        let mut data = serde_json::to_vec(&plain).expect("a JSON map serialises");
        let iv = random_bytes::<NONCE_LEN>();
        let aad = format!("{url_path}|{app_id}|{timestamp}|{}", self.aes_sn);
        let tag = self
            .aes
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(iv), Aad::from(aad.as_bytes()), &mut data)
            .expect("AES-GCM sealing with a valid key does not fail");
        let body = serde_json::json!({
            "iv": STANDARD.encode(iv),
            "data": STANDARD.encode(&data),
            "authtag": STANDARD.encode(tag.as_ref()),
        })
        .to_string();
        let mut sig = vec![0; self.signer.public_modulus_len()];
        self.signer
            .sign(
                &signature::RSA_PSS_SHA256,
                &SystemRandom::new(),
                signed_string(url_path, app_id, &timestamp.to_string(), body.as_bytes()).as_slice(),
                &mut sig,
            )
            .expect("RSA signing with a valid key does not fail");
        SealedRequest {
            body,
            headers: [
                ("Wechatmp-Appid", app_id.to_owned()),
                ("Wechatmp-TimeStamp", timestamp.to_string()),
                ("Wechatmp-Signature", STANDARD.encode(sig)),
                ("Wechatmp-Serial", self.signer_sn.clone()),
            ],
        }
    }

    /// The plaintext JSON of WeChat's answer `body` (its raw bytes) to a call to `url_path`,
    /// given the answer's headers (`header(name)`), once its signature and timestamp check out.
    /// An unsigned answer is passed through only when it is a refusal (a non-zero `errcode`).
    pub fn open<'h>(
        &self,
        url_path: &str,
        app_id: &str,
        now: u64,
        header: impl Fn(&str) -> Option<&'h str>,
        body: &[u8],
    ) -> Result<Vec<u8>, Unverified> {
        if header("Wechatmp-Signature").is_none() && header("Wechatmp-Signature-Deprecated").is_none() {
            return match serde_json::from_slice::<Refusal>(body) {
                Ok(refusal) if refusal.errcode != 0 => Ok(body.to_vec()),
                _ => Err(Unverified("the answer is not signed")),
            };
        }
        if header("Wechatmp-Appid") != Some(app_id) {
            return Err(Unverified("Wechatmp-Appid is not this app's"));
        }
        let timestamp = header("Wechatmp-TimeStamp").ok_or(Unverified("no Wechatmp-TimeStamp"))?;
        let ts: u64 = timestamp
            .parse()
            .map_err(|_| Unverified("Wechatmp-TimeStamp is not a number"))?;
        if ts.abs_diff(now) > ANSWER_WINDOW_SECS {
            return Err(Unverified("Wechatmp-TimeStamp is outside the window"));
        }
        // The first pair whose serial we hold decides: the current one, or during WeChat's
        // rotation the deprecated one when we do not hold the new certificate yet.
        let pairs = [
            ("Wechatmp-Serial", "Wechatmp-Signature"),
            ("Wechatmp-Serial-Deprecated", "Wechatmp-Signature-Deprecated"),
        ];
        let (key, sig) = pairs
            .iter()
            .find_map(|(serial, sig)| Some((self.platform.get(header(serial)?)?, header(sig)?)))
            .ok_or(Unverified("no signature by a platform certificate we hold"))?;
        let signed = signed_string(url_path, app_id, timestamp, body);
        let sig = STANDARD
            .decode(sig.trim())
            .map_err(|_| Unverified("the signature is not base64"))?;
        if !key.verify_with(&signature::RSA_PSS_2048_8192_SHA256, &signed, &sig) {
            return Err(Unverified("the signature does not verify"));
        }
        let sealed: SealedBody =
            serde_json::from_slice(body).map_err(|_| Unverified("the body is not {iv, data, authtag}"))?;
        let aad = format!("{url_path}|{app_id}|{timestamp}|{}", self.aes_sn);
        sealed
            .open(&self.aes, &aad)
            .ok_or(Unverified("the body does not decrypt"))
    }
}

#[derive(Deserialize)]
struct Refusal {
    #[serde(default)]
    errcode: i64,
}

/// `{"iv","data","authtag"}`, as both directions carry it.
#[derive(Deserialize)]
pub struct SealedBody {
    pub iv: String,
    pub data: String,
    pub authtag: String,
}

impl SealedBody {
    /// The plaintext, when the IV is 12 bytes and the tag checks out under `key` and `aad`.
    pub fn open(&self, key: &LessSafeKey, aad: &str) -> Option<Vec<u8>> {
        let iv: [u8; NONCE_LEN] = STANDARD.decode(&self.iv).ok()?.try_into().ok()?;
        let mut data = STANDARD.decode(&self.data).ok()?;
        data.extend(STANDARD.decode(&self.authtag).ok()?);
        let plain = key
            .open_in_place(Nonce::assume_unique_for_key(iv), Aad::from(aad.as_bytes()), &mut data)
            .ok()?;
        Some(plain.to_vec())
    }
}

/// `urlpath\nappid\ntimestamp\nbody`, no trailing newline (the SN is not in it).
pub fn signed_string(url_path: &str, app_id: &str, timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut signed = format!("{url_path}\n{app_id}\n{timestamp}\n").into_bytes();
    signed.extend_from_slice(body);
    signed
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
    use aws_lc_rs::signature::KeyPair;
    use wechat_sim::pay::to_pem as pem;

    fn keys() -> (ApiSecurity, RsaKeyPair) {
        let app = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let wechat = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let app_der: Pkcs8V1Der = app.as_der().unwrap();
        let wechat_public: PublicKeyX509Der = wechat.public_key().as_der().unwrap();
        let doc = ApiSecurityDocument {
            aes_key: Secret::new(STANDARD.encode([7u8; 32])),
            aes_sn: "aes-sn".into(),
            private_key: Secret::new(pem("PRIVATE KEY", app_der.as_ref())),
            private_key_sn: "rsa-sn".into(),
            platform_certificates: vec![PlatformCertificate {
                sn: "wx-sn".into(),
                certificate: pem("PUBLIC KEY", wechat_public.as_ref()),
            }],
        };
        (ApiSecurity::from_document(&doc).unwrap(), wechat)
    }

    fn sign(key: &RsaKeyPair, message: &[u8]) -> String {
        let mut sig = vec![0; key.public_modulus_len()];
        key.sign(&signature::RSA_PSS_SHA256, &SystemRandom::new(), message, &mut sig)
            .unwrap();
        STANDARD.encode(sig)
    }

    #[test]
    fn a_signed_answer_opens_and_every_tampering_is_refused() {
        let (keys, wechat) = keys();
        let url = "https://api.weixin.qq.com/wxa/getuserriskrank";
        let sealed = keys.seal(url, "wxapp", 1_700_000_000, &serde_json::json!({"openid": "o1"}));
        // The answer, sealed as WeChat would (the request's sealing, reused for the body shape).
        let aad = format!("{url}|wxapp|1700000001|aes-sn");
        let mut data = br#"{"errcode":0,"risk_rank":1}"#.to_vec();
        let tag = keys
            .aes
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key([1; 12]),
                Aad::from(aad.as_bytes()),
                &mut data,
            )
            .unwrap();
        let body = serde_json::json!({"iv": STANDARD.encode([1u8; 12]), "data": STANDARD.encode(&data), "authtag": STANDARD.encode(tag.as_ref())}).to_string();
        let sig = sign(&wechat, &signed_string(url, "wxapp", "1700000001", body.as_bytes()));
        let open = |headers: &[(&str, &str)], body: &[u8], now: u64| {
            let header = |name: &str| headers.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
            keys.open(url, "wxapp", now, header, body)
        };
        let signed_by = |serial: &'static str, sig: &'static str, ts: &'static str| {
            [
                ("Wechatmp-Appid", "wxapp"),
                ("Wechatmp-TimeStamp", ts),
                ("Wechatmp-Serial", serial),
                ("Wechatmp-Signature", sig),
            ]
        };
        let sig: &'static str = Box::leak(sig.into_boxed_str());
        let good = signed_by("wx-sn", sig, "1700000001");
        assert_eq!(
            open(&good, body.as_bytes(), 1_700_000_010).unwrap(),
            br#"{"errcode":0,"risk_rank":1}"#
        );
        let mut tampered = body.clone().into_bytes();
        tampered.push(b' ');
        assert_eq!(
            open(&good, &tampered, 1_700_000_010),
            Err(Unverified("the signature does not verify"))
        );
        assert!(open(&good, body.as_bytes(), 1_700_000_001 + ANSWER_WINDOW_SECS + 1).is_err());
        assert!(
            open(
                &signed_by("other-sn", sig, "1700000001"),
                body.as_bytes(),
                1_700_000_010
            )
            .is_err()
        );
        assert!(open(&signed_by("wx-sn", sig, "1700000002"), body.as_bytes(), 1_700_000_010).is_err());
        // During WeChat's rotation: the new serial unknown to us, the deprecated pair ours.
        let rotating = [
            ("Wechatmp-Appid", "wxapp"),
            ("Wechatmp-TimeStamp", "1700000001"),
            ("Wechatmp-Serial", "new-sn"),
            ("Wechatmp-Signature", "bm90IG91cnM="),
            ("Wechatmp-Serial-Deprecated", "wx-sn"),
            ("Wechatmp-Signature-Deprecated", sig),
        ];
        assert!(open(&rotating, body.as_bytes(), 1_700_000_010).is_ok());
        // Unsigned: a refusal passes, a success does not.
        assert!(open(&[], br#"{"errcode":40234,"errmsg":"invalid signature"}"#, 0).is_ok());
        assert_eq!(
            open(&[], br#"{"errcode":0,"risk_rank":0}"#, 0),
            Err(Unverified("the answer is not signed"))
        );
        assert!(sealed.body.contains("\"authtag\""));
    }

    #[test]
    fn keys_that_are_not_what_the_console_gives_are_named() {
        let doc = |aes: &str, private: &str| ApiSecurityDocument {
            aes_key: Secret::new(aes),
            aes_sn: "a".into(),
            private_key: Secret::new(private),
            private_key_sn: "b".into(),
            platform_certificates: vec![],
        };
        let err = ApiSecurity::from_document(&doc("c2hvcnQ=", "")).unwrap_err();
        assert!(err.contains("aes_key is 5 bytes"), "{err}");
        let err = ApiSecurity::from_document(&doc(&STANDARD.encode([0u8; 32]), "nope")).unwrap_err();
        assert!(err.contains("private_key"), "{err}");
        assert!(!err.contains("nope"));
    }
}
