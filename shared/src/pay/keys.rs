//! RSA keys for WeChat Pay v3: PEM decoding, PKCS#1 v1.5 SHA-256 signing and verification, and
//! the public key of a platform certificate.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, RsaKeyPair, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The DER inside the first PEM block labelled `label` (`PRIVATE KEY`, `PUBLIC KEY`, `CERTIFICATE`).
pub fn pem_to_der(pem: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = start + pem[start..].find(&end)?;
    let body: String = pem[start..stop].chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD.decode(body).ok()
}

/// The merchant's API private key (PKCS#8 `BEGIN PRIVATE KEY`, as `apiclient_key.pem`).
pub struct SigningKey(RsaKeyPair);

impl SigningKey {
    pub fn from_pem(pem: &str) -> Option<Self> {
        RsaKeyPair::from_pkcs8(&pem_to_der(pem, "PRIVATE KEY")?).ok().map(Self)
    }

    /// base64(RSA-PKCS#1-v1.5-SHA256(message)).
    pub fn sign(&self, message: &[u8]) -> String {
        let mut signature = vec![0; self.0.public_modulus_len()];
        self.0
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                message,
                &mut signature,
            )
            .expect("RSA signing with a valid key does not fail");
        STANDARD.encode(signature)
    }
}

/// A public key to check WeChat Pay's signatures with (SPKI DER).
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyingKey(Vec<u8>);

impl VerifyingKey {
    /// From `BEGIN PUBLIC KEY` (the WeChat Pay public key) or `BEGIN CERTIFICATE` (a platform
    /// certificate).
    pub fn from_pem(pem: &str) -> Option<Self> {
        if let Some(der) = pem_to_der(pem, "PUBLIC KEY") {
            return Some(Self(der));
        }
        spki_of_certificate(&pem_to_der(pem, "CERTIFICATE")?).map(|spki| Self(spki.to_vec()))
    }

    pub fn from_spki_der(der: Vec<u8>) -> Self {
        Self(der)
    }

    /// Whether `signature_b64` is a valid RSA-SHA256 signature of `message`.
    pub fn verify(&self, message: &[u8], signature_b64: &str) -> bool {
        let Ok(signature) = STANDARD.decode(signature_b64.trim()) else {
            return false;
        };
        UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, &self.0)
            .verify(message, &signature)
            .is_ok()
    }
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifyingKey({} bytes)", self.0.len())
    }
}

/// One DER element: (tag, content, rest).
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        (
            rest[..n].iter().fold(0usize, |acc, &b| acc << 8 | usize::from(b)),
            &rest[n..],
        )
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The whole element (header included) at the start of `input`.
fn der_whole(input: &[u8]) -> Option<&[u8]> {
    let (_, content, rest) = der_element(input)?;
    let _ = content;
    Some(&input[..input.len() - rest.len()])
}

/// The serial number of an X.509 certificate, as WeChat Pay writes it (upper-case hex).
pub fn serial_of_certificate(cert: &[u8]) -> Option<String> {
    let (0x30, certificate, _) = der_element(cert)? else {
        return None;
    };
    let (0x30, mut tbs, _) = der_element(certificate)? else {
        return None;
    };
    if tbs.first() == Some(&0xa0) {
        tbs = der_element(tbs)?.2;
    }
    let (0x02, serial, _) = der_element(tbs)? else {
        return None;
    };
    let serial = serial.strip_prefix(&[0]).unwrap_or(serial);
    Some(hex::encode_upper(serial))
}

/// SubjectPublicKeyInfo of an X.509 certificate: Certificate → tbsCertificate → [version],
/// serialNumber, signature, issuer, validity, subject, **subjectPublicKeyInfo**.
pub fn spki_of_certificate(cert: &[u8]) -> Option<&[u8]> {
    let (0x30, certificate, _) = der_element(cert)? else {
        return None;
    };
    let (0x30, mut tbs, _) = der_element(certificate)? else {
        return None;
    };
    if tbs.first() == Some(&0xa0) {
        tbs = der_element(tbs)?.2; // explicit version
    }
    for _ in 0..5 {
        tbs = der_element(tbs)?.2; // serial, signature, issuer, validity, subject
    }
    let spki = der_whole(tbs)?;
    (spki.first() == Some(&0x30)).then_some(spki)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
    use aws_lc_rs::signature::KeyPair;

    fn pem(label: &str, der: &[u8]) -> String {
        let body = STANDARD.encode(der);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
    }

    #[test]
    fn signatures_round_trip_with_a_generated_key_pair() {
        let pair = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let private: Pkcs8V1Der = pair.as_der().unwrap();
        let public: PublicKeyX509Der = pair.public_key().as_der().unwrap();
        let signer = SigningKey::from_pem(&pem("PRIVATE KEY", private.as_ref())).expect("PKCS#8 PEM parses");
        let verifier = VerifyingKey::from_pem(&pem("PUBLIC KEY", public.as_ref())).expect("SPKI PEM parses");
        let message = b"POST\n/v3/pay/transactions/jsapi\n1554208460\n593BEC0C930BF1AFEB40B4A08C8FB242\n{}\n";
        let signature = signer.sign(message);
        assert!(verifier.verify(message, &signature));
        assert!(!verifier.verify(b"another message", &signature));
        assert!(!verifier.verify(message, "WECHATPAY/SIGNTEST/abc"));
        let other = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let other_public: PublicKeyX509Der = other.public_key().as_der().unwrap();
        assert!(!VerifyingKey::from_spki_der(other_public.as_ref().to_vec()).verify(message, &signature));
    }

    #[test]
    fn the_key_of_a_certificate_is_found() {
        // tools/wechat-sim/src/platform_cert.pem: `openssl req -x509` over platform_key.pem.
        let cert = include_str!("../../../tools/wechat-sim/src/platform_cert.pem");
        let key = include_str!("../../../tools/wechat-sim/src/platform_key.pem");
        let from_cert = VerifyingKey::from_pem(cert).expect("certificate parses");
        let signer = SigningKey::from_pem(key).unwrap();
        assert!(from_cert.verify(b"hello", &signer.sign(b"hello")));
        assert!(spki_of_certificate(b"\x30\x03\x02\x01\x01").is_none());
        let der = pem_to_der(cert, "CERTIFICATE").unwrap();
        assert_eq!(
            serial_of_certificate(&der).as_deref(),
            Some("5157F09EFDC096DE15EBE81A47057A72")
        );
        assert!(pem_to_der("no pem here", "CERTIFICATE").is_none());
    }
}
