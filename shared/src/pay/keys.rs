//! RSA keys for WeChat Pay v3: PEM decoding, PKCS#1 v1.5 SHA-256 signing and verification, and
//! the public key and serial of a platform certificate. PEM is read by rustls' `pki-types`, and a
//! certificate by `rustls-webpki` (both already there for TLS).

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, RsaKeyPair, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rustls::pki_types::pem::{PemObject, SectionKind};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer};

/// The DER inside the first PEM block labelled `label` (`PRIVATE KEY`, `PUBLIC KEY`, `CERTIFICATE`).
pub fn pem_to_der(pem: &str, label: &str) -> Option<Vec<u8>> {
    let kind = SectionKind::try_from(label.as_bytes()).ok()?;
    <(SectionKind, Vec<u8>)>::pem_slice_iter(pem.as_bytes())
        .map_while(Result::ok)
        .find_map(|(found, der)| (found == kind).then_some(der))
}

/// The merchant's API private key (PKCS#8 `BEGIN PRIVATE KEY`, as `apiclient_key.pem`).
pub struct SigningKey(RsaKeyPair);

impl SigningKey {
    pub fn from_pem(pem: &str) -> Option<Self> {
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).ok()?;
        RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).ok().map(Self)
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
        if let Ok(spki) = SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes()) {
            return Some(Self(spki.to_vec()));
        }
        let cert = CertificateDer::from_pem_slice(pem.as_bytes()).ok()?;
        spki_of_certificate(&cert).map(Self)
    }

    pub fn from_spki_der(der: Vec<u8>) -> Self {
        Self(der)
    }

    /// Whether `signature` (raw bytes) is a valid signature of `message` under `algorithm`
    /// (WeChat's API security mode signs with RSA-PSS).
    pub fn verify_with(&self, algorithm: &'static signature::RsaParameters, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(algorithm, &self.0)
            .verify(message, signature)
            .is_ok()
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

impl VerifyingKey {
    /// base64(RSA-OAEP(SHA-1, MGF1-SHA-1)(plaintext)) under this key: how WeChat Pay wants a
    /// sensitive field (a transfer's `user_name`) sent. `None` when the key is not an RSA key or
    /// the text too long for it.
    pub fn encrypt_sensitive(&self, plaintext: &str) -> Option<String> {
        use aws_lc_rs::rsa::{OAEP_SHA1_MGF1SHA1, OaepPublicEncryptingKey, PublicEncryptingKey};
        let key = OaepPublicEncryptingKey::new(PublicEncryptingKey::from_der(&self.0).ok()?).ok()?;
        let mut out = vec![0; key.ciphertext_size()];
        let sealed = key
            .encrypt(&OAEP_SHA1_MGF1SHA1, plaintext.as_bytes(), &mut out, None)
            .ok()?;
        Some(STANDARD.encode(sealed))
    }
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifyingKey({} bytes)", self.0.len())
    }
}

/// A certificate as `rustls-webpki` reads it (X.509 v3, DER).
fn parse_certificate<T>(cert: &[u8], read: impl FnOnce(&webpki::EndEntityCert<'_>) -> T) -> Option<T> {
    let der = CertificateDer::from(cert);
    webpki::EndEntityCert::try_from(&der).ok().as_ref().map(read)
}

/// The serial number of an X.509 certificate, as WeChat Pay writes it (upper-case hex, without
/// the sign byte DER adds before a high bit).
pub fn serial_of_certificate(cert: &[u8]) -> Option<String> {
    parse_certificate(cert, |c| {
        let serial = c.serial();
        hex::encode_upper(serial.strip_prefix(&[0]).unwrap_or(serial))
    })
}

/// SubjectPublicKeyInfo (DER) of an X.509 certificate.
pub fn spki_of_certificate(cert: &[u8]) -> Option<Vec<u8>> {
    parse_certificate(cert, |c| c.subject_public_key_info().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
    use aws_lc_rs::signature::KeyPair;
    use wechat_sim::pay::to_pem as pem;

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
    fn sensitive_fields_are_sealed_with_oaep_sha1_for_the_private_key_alone() {
        use aws_lc_rs::rsa::{
            OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, PrivateDecryptingKey,
        };
        let key = include_str!("../../../tools/wechat-sim/src/platform_key.pem");
        let cert = include_str!("../../../tools/wechat-sim/src/platform_cert.pem");
        let sealed = VerifyingKey::from_pem(cert)
            .unwrap()
            .encrypt_sensitive("张三")
            .expect("sealed");
        let again = VerifyingKey::from_pem(cert).unwrap().encrypt_sensitive("张三").unwrap();
        assert_ne!(sealed, again, "OAEP is randomised");
        let der = PrivatePkcs8KeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let private =
            OaepPrivateDecryptingKey::new(PrivateDecryptingKey::from_pkcs8(der.secret_pkcs8_der()).unwrap()).unwrap();
        let bytes = STANDARD.decode(&sealed).unwrap();
        assert_eq!(bytes.len(), 256, "a 2048-bit key's block");
        let mut out = vec![0; 256];
        let plain = private.decrypt(&OAEP_SHA1_MGF1SHA1, &bytes, &mut out, None).unwrap();
        assert_eq!(plain, "张三".as_bytes());
        let mut out = vec![0; 256];
        assert!(
            private
                .decrypt(&OAEP_SHA256_MGF1SHA256, &bytes, &mut out, None)
                .is_err(),
            "SHA-1 OAEP, not SHA-256"
        );
        assert!(
            VerifyingKey::from_spki_der(vec![0x30, 0x00])
                .encrypt_sensitive("x")
                .is_none()
        );
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
        assert!(serial_of_certificate(b"\x30\x03\x02\x01\x01").is_none());
        let der = pem_to_der(cert, "CERTIFICATE").unwrap();
        assert_eq!(
            serial_of_certificate(&der).as_deref(),
            Some("5157F09EFDC096DE15EBE81A47057A72")
        );
        assert!(pem_to_der("no pem here", "CERTIFICATE").is_none());
        // As files and secrets come: CRLF, text around the block, another block before it.
        let dressed = format!(
            "subject=CN = x\r\n{}\n{}",
            pem("PUBLIC KEY", b"\x30\x00"),
            cert.replace('\n', "\r\n")
        );
        assert_eq!(pem_to_der(&dressed, "CERTIFICATE").as_ref(), Some(&der));
        assert!(VerifyingKey::from_pem(&dressed.replace("PUBLIC KEY", "X509 CRL")).is_some_and(|k| k == from_cert));
    }
}
