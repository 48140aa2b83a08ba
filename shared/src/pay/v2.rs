//! WeChat Pay APIv2 (legacy, XML): the sign rule and flat `<xml>` documents.
//!
//! sign = upper-hex(MD5 or HMAC-SHA256 of `k1=v1&k2=v2…&key=<APIv2 key>`) over every non-empty
//! field but `sign`, sorted by name. Unknown extra fields take part: verification must not drop them.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::redacted::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignType {
    Md5,
    HmacSha256,
}

impl SignType {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "" | "MD5" => Some(Self::Md5),
            "HMAC-SHA256" => Some(Self::HmacSha256),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::HmacSha256 => "HMAC-SHA256",
        }
    }
}

/// The sign of `fields` (ignoring `sign` and empty values).
pub fn sign(fields: &BTreeMap<String, String>, key: &Secret, sign_type: SignType) -> String {
    let mut text = String::new();
    for (k, v) in fields.iter().filter(|(k, v)| k.as_str() != "sign" && !v.is_empty()) {
        text.push_str(k);
        text.push('=');
        text.push_str(v);
        text.push('&');
    }
    text.push_str("key=");
    text.push_str(key.expose());
    let digest = match sign_type {
        SignType::Md5 => Md5::digest(text.as_bytes()).to_vec(),
        SignType::HmacSha256 => {
            let mut mac = Hmac::<Sha256>::new_from_slice(key.expose().as_bytes()).expect("any key length");
            mac.update(text.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
    };
    hex::encode_upper(digest)
}

/// Whether `fields["sign"]` of a notification is right. The document names its `sign_type` (MD5
/// when absent, as documented); it must be `expected`, the merchant's configured one: a document
/// signed otherwise is refused, so an MD5 sign cannot stand in where HMAC-SHA256 is configured.
pub fn verify(fields: &BTreeMap<String, String>, key: &Secret, expected: SignType) -> bool {
    verify_as(fields, key, expected, SignType::Md5)
}

/// Whether the sign of an answer to our request signed with `requested` is right: an answer that
/// names no `sign_type` is signed the way it was asked.
pub fn verify_answer(fields: &BTreeMap<String, String>, key: &Secret, requested: SignType) -> bool {
    verify_as(fields, key, requested, requested)
}

fn verify_as(fields: &BTreeMap<String, String>, key: &Secret, expected: SignType, unnamed: SignType) -> bool {
    let sign_type = match fields.get("sign_type").map(String::as_str) {
        None | Some("") => unnamed,
        Some(name) => match SignType::parse(name) {
            Some(t) => t,
            None => return false,
        },
    };
    if sign_type != expected {
        return false;
    }
    let Some(given) = fields.get("sign") else { return false };
    let expected = sign(fields, key, sign_type);
    expected.as_bytes().ct_eq(given.to_ascii_uppercase().as_bytes()).into()
}

/// `paySign` for `wx.requestPayment` with a v2 `signType`: the sign rule over `appId`,
/// `nonceStr`, `package`, `signType` and `timeStamp` (capital I in `appId`).
pub fn pay_sign(
    key: &Secret,
    sign_type: SignType,
    app_id: &str,
    timestamp: &str,
    nonce: &str,
    package: &str,
) -> String {
    let fields: BTreeMap<String, String> = [
        ("appId", app_id),
        ("nonceStr", nonce),
        ("package", package),
        ("signType", sign_type.as_str()),
        ("timeStamp", timestamp),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    sign(&fields, key, sign_type)
}

/// `<xml><k><![CDATA[v]]></k>…</xml>`.
pub fn to_xml(fields: &BTreeMap<String, String>) -> String {
    let mut xml = String::from("<xml>");
    for (k, v) in fields {
        xml.push_str(&format!(
            "<{k}><![CDATA[{}]]></{k}>",
            v.replace("]]>", "]]]]><![CDATA[>")
        ));
    }
    xml.push_str("</xml>");
    xml
}

/// The children of the root element as a map (text or CDATA). `None` for anything that is not a
/// flat WeChat Pay XML document.
pub fn from_xml(xml: &str) -> Option<BTreeMap<String, String>> {
    crate::flat_xml::parse(xml).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn documented_fields() -> BTreeMap<String, String> {
        [
            ("appid", "wxd930ea5d5a258f4f"),
            ("mch_id", "10000100"),
            ("device_info", "1000"),
            ("body", "test"),
            ("nonce_str", "ibuaiVcKdpRxkhJA"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn reproduces_the_documented_vectors() {
        let key = Secret::new("192006250b4c09247ec02edce69f6a2d");
        let fields = documented_fields();
        assert_eq!(sign(&fields, &key, SignType::Md5), "9A0A8659F005D6984697E2CA0A9CF3B7");
        assert_eq!(
            sign(&fields, &key, SignType::HmacSha256),
            "6A9AE1657590FD6257D693A078E1C3E4BB6BA4DC30B23E0EE2496E54170DACD6"
        );
    }

    #[test]
    fn verification_uses_the_documents_sign_type_and_keeps_extra_fields() {
        let key = Secret::new("192006250b4c09247ec02edce69f6a2d");
        let mut fields = documented_fields();
        fields.insert("sign".into(), "9A0A8659F005D6984697E2CA0A9CF3B7".into());
        assert!(verify(&fields, &key, SignType::Md5));
        assert!(
            !verify(&fields, &key, SignType::HmacSha256),
            "an MD5 sign where HMAC-SHA256 is configured"
        );
        fields.insert("empty_extra".into(), String::new());
        assert!(verify(&fields, &key, SignType::Md5), "empty fields are not signed");
        fields.insert("new_field".into(), "x".into());
        assert!(
            !verify(&fields, &key, SignType::Md5),
            "a non-empty extra field is signed"
        );

        let mut hmac = documented_fields();
        hmac.insert("sign_type".into(), "HMAC-SHA256".into());
        let s = sign(&hmac, &key, SignType::HmacSha256);
        hmac.insert("sign".into(), s);
        assert!(verify(&hmac, &key, SignType::HmacSha256));
        assert!(
            !verify(&hmac, &key, SignType::Md5),
            "an HMAC-SHA256 sign where MD5 is configured"
        );
        hmac.insert("sign_type".into(), "SHA1".into());
        assert!(!verify(&hmac, &key, SignType::HmacSha256), "unknown sign types fail");
    }

    #[test]
    fn xml_round_trips_with_cdata_and_plain_text() {
        let mut fields = documented_fields();
        fields.insert("body".into(), "a <b> & ]]> c".into());
        let parsed = from_xml(&to_xml(&fields)).unwrap();
        assert_eq!(parsed, fields);
        let plain = from_xml("<xml><return_code>SUCCESS</return_code><total_fee>1</total_fee><x/><m>a&amp;b</m></xml>")
            .unwrap();
        assert_eq!(parsed.len(), 5);
        assert_eq!(plain["return_code"], "SUCCESS");
        assert_eq!(plain["total_fee"], "1");
        assert_eq!(plain["m"], "a&b");
        let refs = from_xml("<xml><m>&lt;&gt;&amp;&quot;&apos;&#x41;&#66;</m></xml>").unwrap();
        assert_eq!(refs["m"], "<>&\"'AB");
        assert!(
            from_xml("<xml><m>&nbsp;</m></xml>").is_none(),
            "only XML's own entities"
        );
        assert!(from_xml("<xml><m>&#0;</m></xml>").is_none());
        let bomb = "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY a \"aaaa\"><!ENTITY b \"&a;&a;&a;\">]>\
                    <xml><total_fee>&b;</total_fee></xml>";
        assert!(from_xml(bomb).is_none(), "entities a DOCTYPE declares are not expanded");
        assert!(from_xml("<xml><a><b>nested</b></a></xml>").is_none());
        assert!(from_xml("<xml><a>unclosed</xml>").is_none());
        // Found by the fuzzer: quick-xml reads `<x//>` as an empty element named `x/`.
        assert!(from_xml("<xml><x//></xml>").is_none());
        assert!(from_xml("<xml><a-b>1</a-b></xml>").is_none());
        assert!(from_xml("not xml <").map(|f| f.is_empty()).unwrap_or(true));
    }
}
