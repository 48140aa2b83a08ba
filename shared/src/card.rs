//! `cardExt` for `wx.addCard`: a JSON string signed with the card `api_ticket`.
//!
//! signature = hex(sha1(the non-empty values of api_ticket, timestamp, card_id, code, openid and
//! nonce_str, sorted as strings and concatenated)); the keys take no part.

use serde::Serialize;
use sha1::{Digest, Sha1};

use crate::redacted::Secret;

/// Signs `values` (empty ones are left out) by the card rule.
pub fn card_signature(values: &[&str]) -> String {
    let mut values: Vec<&str> = values.iter().copied().filter(|v| !v.is_empty()).collect();
    values.sort_unstable();
    hex::encode(Sha1::digest(values.concat().as_bytes()))
}

#[derive(Serialize)]
struct CardExt<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    openid: Option<&'a str>,
    timestamp: String,
    nonce_str: &'a str,
    signature: String,
}

/// The `cardExt` string for `card_id`, optionally for a given `code` and bound to `openid`.
pub fn card_ext(
    api_ticket: &Secret,
    card_id: &str,
    code: Option<&str>,
    openid: Option<&str>,
    timestamp: u64,
    nonce_str: &str,
) -> String {
    let timestamp = timestamp.to_string();
    let signature = card_signature(&[
        api_ticket.expose(),
        &timestamp,
        card_id,
        code.unwrap_or_default(),
        openid.unwrap_or_default(),
        nonce_str,
    ]);
    serde_json::to_string(&CardExt {
        code,
        openid,
        timestamp,
        nonce_str,
        signature,
    })
    .expect("plain strings serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors computed independently with Python:
    //   v = sorted(x for x in values if x); hashlib.sha1("".join(v).encode()).hexdigest()
    #[test]
    fn signature_sorts_the_non_empty_values() {
        let values = [
            "ticket-abc",
            "1795536000",
            "pFS7Fjg8kV1IdDz01r4SQwMkuCKc",
            "",
            "oABC",
            "nonce123",
        ];
        assert_eq!(card_signature(&values), "00b82d89508c3690a8f6f4a0ffff3df479273432");
        // Order of the input does not matter.
        let mut reversed = values;
        reversed.reverse();
        assert_eq!(card_signature(&reversed), "00b82d89508c3690a8f6f4a0ffff3df479273432");
    }

    #[test]
    fn signature_of_a_card_without_code_or_openid() {
        let values = [
            "sM4AOVdWfPE4DxkXGEs8VMCPGGVi4C3VM0P37wVUCFvkVAy_90u5h9nbSlYy3-Sl-HhTdfl2fzFy1AOcHdP7qg",
            "1404896688",
            "pjZ8Yt1XGILfi-FUsewpnnolGgZk",
            "",
            "",
            "123456",
        ];
        assert_eq!(card_signature(&values), "274baa4f23d1dc94894d54becea65c097d22a3ea");
    }

    #[test]
    fn card_ext_is_a_json_string_with_the_signed_fields() {
        let ext = card_ext(
            &Secret::new("ticket-abc"),
            "pFS7Fjg8kV1IdDz01r4SQwMkuCKc",
            None,
            Some("oABC"),
            1795536000,
            "nonce123",
        );
        let json: serde_json::Value = serde_json::from_str(&ext).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"openid": "oABC", "timestamp": "1795536000", "nonce_str": "nonce123",
                               "signature": "00b82d89508c3690a8f6f4a0ffff3df479273432"})
        );
        assert!(!ext.contains("ticket-abc"), "the ticket itself is never sent");
    }

    #[test]
    fn nonces_are_random_alphanumerics() {
        let (a, b) = (crate::random::nonce(), crate::random::nonce());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
    }
}
