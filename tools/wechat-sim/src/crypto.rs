//! What the WeChat client does to open data: AES-128-CBC with PKCS#7 under the session key.

use aes::cipher::{BlockEncryptMut, KeyIvInit, block_padding::Pkcs7};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha1::{Digest, Sha1};

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("OS random source");
    bytes
}

/// hex(SHA-1 of the values sorted as strings and concatenated): how WeChat signs a message push
/// (token, timestamp, nonce[, Encrypt]) and a card's cardExt.
pub fn sorted_sha1(values: &[&str]) -> String {
    let mut values = values.to_vec();
    values.sort_unstable();
    hex::encode(Sha1::digest(values.concat().as_bytes()))
}

/// A new session key: base64 of 16 random bytes, as jscode2session returns it.
pub fn new_session_key() -> String {
    STANDARD.encode(random_bytes::<16>())
}

/// Encrypts `plaintext` under `session_key` (base64) with `iv`; returns base64 ciphertext.
pub fn encrypt(session_key: &str, iv: &[u8; 16], plaintext: &[u8]) -> Result<String, String> {
    let key = STANDARD
        .decode(session_key)
        .map_err(|e| format!("session_key is not base64: {e}"))?;
    let key: [u8; 16] = key
        .try_into()
        .map_err(|_| "session_key must decode to 16 bytes".to_owned())?;
    let cipher = cbc::Encryptor::<aes::Aes128>::new(&key.into(), iv.into());
    Ok(STANDARD.encode(cipher.encrypt_padded_vec_mut::<Pkcs7>(plaintext)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypts_like_openssl() {
        // printf 'hello' | openssl enc -aes-128-cbc -K 000102030405060708090a0b0c0d0e0f -iv 0f0e0d0c0b0a09080706050403020100 | base64
        let key = STANDARD.encode((0u8..16).collect::<Vec<_>>());
        let iv: [u8; 16] = core::array::from_fn(|i| 15 - i as u8);
        assert_eq!(encrypt(&key, &iv, b"hello").unwrap(), EXPECTED_HELLO);
    }

    #[test]
    fn signs_sorted_values() {
        // printf 'abc' | sha1sum: the values are sorted before they are joined.
        assert_eq!(
            sorted_sha1(&["c", "a", "b"]),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }

    const EXPECTED_HELLO: &str = "GBVHzmpUOMsiJBhWs1zEiQ==";
}
