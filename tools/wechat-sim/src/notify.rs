//! WeChat Pay's notifications as the merchant receives them: an APIv3 envelope around an
//! AES-256-GCM resource, signed with the platform key, delivered to a notify_url and retried
//! until acknowledged; on request tampered, stale, a signature probe, signed with the wrong key,
//! duplicated, or dropped.

use std::time::Duration;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::signature::RsaKeyPair;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::pay::{PLATFORM_CERT_SERIAL, PLATFORM_PUBLIC_KEY_ID, platform_key, rsa_sign};
use crate::state::{random_text, rfc3339_cst};

pub type Headers = Vec<(String, String)>;

/// What one notification says: `event_type` (`TRANSACTION.SUCCESS`, `REFUND.SUCCESS`, ...), its
/// `summary`, the resource's `original_type` (also its associated data) and plaintext.
pub struct Event<'a> {
    pub event_type: &'a str,
    pub summary: &'a str,
    pub original_type: &'a str,
    pub resource: &'a Value,
}

/// The modes `/__sim/pay/complete` and `/__sim/pay/refund/settle` accept.
pub const MODES: [&str; 7] = [
    "normal",
    "tampered",
    "stale",
    "signtest",
    "wrong_key",
    "certificate",
    "drop",
];

/// The signed APIv3 notification for `event`, encrypted under `apiv3_key`, shaped by `mode`.
pub fn v3_envelope(apiv3_key: &str, event: &Event, now: i64, mode: &str) -> (Headers, String) {
    let nonce = random_text(12);
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, apiv3_key.as_bytes()).expect("32-byte APIv3 key"));
    let mut sealed = event.resource.to_string().into_bytes();
    key.seal_in_place_append_tag(
        Nonce::try_assume_unique_for_key(nonce.as_bytes()).expect("12 bytes"),
        Aad::from(event.original_type.as_bytes()),
        &mut sealed,
    )
    .expect("sealing works");
    let body = json!({
        "id": format!("EV-{}", random_text(16)), "create_time": rfc3339_cst(now),
        "resource_type": "encrypt-resource", "event_type": event.event_type, "summary": event.summary,
        "resource": { "original_type": event.original_type, "algorithm": "AEAD_AES_256_GCM",
                      "ciphertext": STANDARD.encode(sealed), "associated_data": event.original_type, "nonce": nonce },
    })
    .to_string();
    let timestamp = if mode == "stale" { now - 400 } else { now };
    let header_nonce = random_text(32);
    let message = format!("{timestamp}\n{header_nonce}\n{body}\n");
    let signature = match mode {
        "signtest" => format!("WECHATPAY/SIGNTEST/{}", random_text(16)),
        "wrong_key" => {
            let other = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("keygen");
            rsa_sign(&other, message.as_bytes())
        }
        _ => rsa_sign(&platform_key(), message.as_bytes()),
    };
    let serial = if mode == "certificate" {
        PLATFORM_CERT_SERIAL
    } else {
        PLATFORM_PUBLIC_KEY_ID
    };
    let sent = if mode == "tampered" {
        // Changed after signing: the signature no longer covers what is sent.
        body.replace(event.event_type, &format!("{} ", event.event_type))
    } else {
        body
    };
    let headers = [
        ("content-type", "application/json".to_owned()),
        ("wechatpay-timestamp", timestamp.to_string()),
        ("wechatpay-nonce", header_nonce),
        ("wechatpay-signature", signature),
        ("wechatpay-serial", serial.to_owned()),
        ("wechatpay-signature-type", "WECHATPAY2-SHA256-RSA2048".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    (headers, sent)
}

/// Delivers `copies` concurrent copies of one notification to `url`; a correct one is retried
/// until acknowledged (faster than WeChat Pay's 15 s, 15 s, 30 s ... schedule), a forged one is
/// sent once. Answers what each copy got last.
pub async fn deliver_copies(url: &str, headers: &Headers, payload: &str, copies: u32, mode: &str) -> Vec<Value> {
    if mode == "drop" {
        return Vec::new();
    }
    let attempts = if matches!(mode, "normal" | "certificate") { 3 } else { 1 };
    let outgoing = Outgoing {
        url: url.to_owned(),
        headers: headers.clone(),
        body: payload.to_owned(),
    };
    let requests = vec![outgoing; copies.clamp(1, 200) as usize];
    deliver_all(requests, attempts, |status, _| (200..300).contains(&status)).await
}

/// One POST to make: WeChat Pay's notifications and WeChat's message pushes.
#[derive(Clone)]
pub struct Outgoing {
    pub url: String,
    pub headers: Headers,
    pub body: String,
}

/// Sends the requests concurrently, each up to `attempts` times until its answer is
/// `acknowledged` (status and body); answers what each got last (`{status, body, attempts}`).
pub async fn deliver_all(requests: Vec<Outgoing>, attempts: u32, acknowledged: fn(u16, &str) -> bool) -> Vec<Value> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let mut tasks = tokio::task::JoinSet::new();
    for request in requests {
        let client = client.clone();
        tasks.spawn(async move { deliver(&client, &request, attempts, acknowledged).await });
    }
    let mut deliveries = Vec::new();
    while let Some(result) = tasks.join_next().await {
        if let Ok(d) = result {
            deliveries.push(d);
        }
    }
    deliveries
}

async fn deliver(
    client: &reqwest::Client,
    outgoing: &Outgoing,
    attempts: u32,
    acknowledged: fn(u16, &str) -> bool,
) -> Value {
    let mut last = json!(null);
    for attempt in 1..=attempts {
        let mut request = client.post(&outgoing.url).body(outgoing.body.clone());
        for (k, v) in &outgoing.headers {
            request = request.header(k, v);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_default();
                let done = acknowledged(status, &text);
                last = json!({ "status": status, "body": text, "attempts": attempt });
                if done {
                    break;
                }
            }
            Err(e) => last = json!({ "status": 0, "body": e.to_string(), "attempts": attempt }),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}
