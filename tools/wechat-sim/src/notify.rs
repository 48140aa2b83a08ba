//! WeChat Pay's notifications as the merchant receives them: an APIv3 envelope around an
//! AES-256-GCM resource, signed with the platform key, delivered to a notify_url and retried
//! until acknowledged; on request tampered, stale, a signature probe, signed with the wrong key,
//! duplicated, or dropped.
//!
//! Every WeChat Pay notification (payments, refunds, transfers) leaves through [`send`] or
//! [`send_in_background`], which queue it instead while a test holds notifications
//! (`POST /__sim/pay/notifications/hold`), so that the test delivers them itself: late, twice,
//! out of order, or never.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::signature::RsaKeyPair;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::Shared;
use crate::pay::{PLATFORM_CERT_SERIAL, platform_key, rsa_sign};
use crate::state::{SimState, random_text, rfc3339_cst};

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

/// The signed APIv3 notification for `event`, encrypted under `apiv3_key`, shaped by `mode`,
/// naming `serial` (the current signer's) unless the mode asks for the certificate.
pub fn v3_envelope(apiv3_key: &str, event: &Event, now: i64, mode: &str, serial: &str) -> (Headers, String) {
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
        serial
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

/// What a notification is about, for the test that delivers a held one: `kind` (`transaction`,
/// `refund`, `transfer`), `key` (out_trade_no, out_refund_no, out_bill_no) and the `state` it tells.
#[derive(Clone, Serialize)]
pub struct Label {
    pub kind: &'static str,
    pub key: String,
    pub state: String,
}

/// One WeChat Pay notification, fully formed: sent `copies` times at once, shaped by `mode`.
pub struct PayNotification {
    pub label: Label,
    pub outgoing: Outgoing,
    pub copies: u32,
    pub mode: String,
}

impl PayNotification {
    async fn deliver(self) -> Vec<Value> {
        let Outgoing { url, headers, body } = &self.outgoing;
        deliver_copies(url, headers, body, self.copies, &self.mode).await
    }
}

/// A queued notification as `GET /__sim/pay/notifications` lists it.
#[derive(Clone, Serialize)]
struct Held {
    id: u64,
    #[serde(flatten)]
    label: Label,
    url: String,
    headers: BTreeMap<String, String>,
    body: String,
}

/// Whether notifications are held, and those held, in the order WeChat Pay would have sent them.
#[derive(Default)]
pub struct HoldState {
    held: bool,
    next_id: u64,
    queue: Vec<Held>,
}

impl HoldState {
    /// Queues `n` (each copy) while notifications are held, answering `{"held": id}` for each;
    /// else hands it back to be sent. A dropped one (mode `drop`) is neither.
    fn intercept(&mut self, n: PayNotification) -> Result<Vec<Value>, Box<PayNotification>> {
        if n.mode == "drop" {
            return Ok(Vec::new());
        }
        if !self.held {
            return Err(Box::new(n));
        }
        let mut held = Vec::new();
        for _ in 0..n.copies.clamp(1, 200) {
            self.next_id += 1;
            self.queue.push(Held {
                id: self.next_id,
                label: n.label.clone(),
                url: n.outgoing.url.clone(),
                headers: n.outgoing.headers.iter().cloned().collect(),
                body: n.outgoing.body.clone(),
            });
            held.push(json!({ "held": self.next_id }));
        }
        Ok(held)
    }
}

/// Sends `n` (or holds it); answers what each copy got (`{status, body, attempts}`) or `{held}`.
pub async fn send(state: &Shared, n: PayNotification) -> Vec<Value> {
    let intercepted = state.lock().unwrap().notifications.intercept(n);
    match intercepted {
        Ok(held) => held,
        Err(n) => n.deliver().await,
    }
}

/// [`send`] for a caller that holds the state's lock (an API call that finds refunds due): held
/// ones are queued now, the others sent without holding up the answer.
pub fn send_in_background(sim: &mut SimState, notifications: Vec<PayNotification>) {
    let to_send: Vec<Box<PayNotification>> = notifications
        .into_iter()
        .filter_map(|n| sim.notifications.intercept(n).err())
        .collect();
    if !to_send.is_empty() {
        tokio::spawn(async move {
            for n in to_send {
                n.deliver().await;
            }
        });
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldBody {
    hold: bool,
}

/// `POST /__sim/pay/notifications/hold {"hold"}`: from now on notifications are queued (true) or
/// sent (false); those already queued stay queued until taken.
pub async fn hold(State(state): State<Shared>, Json(body): Json<HoldBody>) -> Response {
    state.lock().unwrap().notifications.held = body.hold;
    Json(json!({ "hold": body.hold })).into_response()
}

/// `GET /__sim/pay/notifications`: the queued notifications.
pub async fn held(State(state): State<Shared>) -> Response {
    let sim = state.lock().unwrap();
    Json(json!({ "notifications": sim.notifications.queue })).into_response()
}

/// `POST /__sim/pay/notifications/take`: the queued notifications, removed from the queue.
pub async fn take(State(state): State<Shared>) -> Response {
    let taken = std::mem::take(&mut state.lock().unwrap().notifications.queue);
    Json(json!({ "notifications": taken })).into_response()
}

/// Delivers `copies` concurrent copies of one notification to `url`; a correct one is retried
/// until acknowledged (faster than WeChat Pay's 15 s, 15 s, 30 s ... schedule), a forged one is
/// sent once. Answers what each copy got last.
async fn deliver_copies(url: &str, headers: &Headers, payload: &str, copies: u32, mode: &str) -> Vec<Value> {
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
pub async fn deliver_all<A>(requests: Vec<Outgoing>, attempts: u32, acknowledged: A) -> Vec<Value>
where
    A: Fn(u16, &str) -> bool + Clone + Send + Sync + 'static,
{
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let mut tasks = tokio::task::JoinSet::new();
    for request in requests {
        let (client, acknowledged) = (client.clone(), acknowledged.clone());
        tasks.spawn(async move { deliver(&client, &request, attempts, &acknowledged).await });
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
    acknowledged: &impl Fn(u16, &str) -> bool,
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
