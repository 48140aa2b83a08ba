//! A merchant of WeChat Pay against the simulator: its keys, signed APIv3 calls, a notify_url
//! that records what it receives, and the checks a merchant makes of answers and notifications.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, KeyPair, RsaKeyPair, UnparsedPublicKey};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rustls_pki_types::SubjectPublicKeyInfoDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};

use super::Sim;

pub const MCHID: &str = "1230000109";
const SERIAL: &str = "3775B6A45ACD588826D15E583A95F5DD2C5A0C2A";
pub const APIV3_KEY: &str = "0123456789abcdefghijklmnopqrstuv";
pub const OPENID: &str = "o_payer";

/// Notifications a merchant's notify_url received; the next `fail_next` are answered 500.
#[derive(Clone, Default)]
pub struct Inbox {
    received: Arc<Mutex<Vec<(HeaderMap, String)>>>,
    pub fail_next: Arc<AtomicU32>,
}

impl Inbox {
    pub fn received(&self) -> Vec<(HeaderMap, String)> {
        self.received.lock().unwrap().clone()
    }
}

async fn record(State(inbox): State<Inbox>, headers: HeaderMap, body: String) -> StatusCode {
    let failing = inbox
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    inbox.received.lock().unwrap().push((headers, body));
    if failing {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    }
}

/// A simulator with a merchant registered, the merchant's key, WeChat Pay's public key and a
/// notify_url that records what it receives.
pub struct Shop {
    pub sim: Sim,
    key: RsaKeyPair,
    /// WeChat Pay's public key (SPKI DER).
    pub platform: Vec<u8>,
    pub notify_url: String,
    pub inbox: Inbox,
    _receiver: tokio::task::JoinHandle<()>,
}

pub struct Answer {
    pub status: u16,
    pub body: Value,
    /// Whether the Wechatpay-* headers verify with the platform key over the raw body.
    pub verified: bool,
    /// The `Wechatpay-Serial` the answer names.
    pub serial: String,
}

impl Shop {
    pub async fn open() -> Shop {
        let sim = Sim::start().await;
        let key = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let public: PublicKeyX509Der = key.public_key().as_der().unwrap();
        let merchant = json!({
            "mchid": MCHID, "serial_no": SERIAL, "apiv3_key": APIV3_KEY, "apiv2_key": "k".repeat(32),
            "public_key": wechat_sim::pay::to_pem("PUBLIC KEY", public.as_ref()),
        });
        assert_eq!(sim.post("/__sim/pay/merchant", merchant).await, Value::Null);
        let pem = sim.get("/__sim/pay/platform", &[]).await["public_key"]
            .as_str()
            .unwrap()
            .to_owned();
        let platform = SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec();
        let inbox = Inbox::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let notify_url = format!("http://{}/notify", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/notify", post(record))
            .with_state(inbox.clone());
        let receiver = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Shop {
            sim,
            key,
            platform,
            notify_url,
            inbox,
            _receiver: receiver,
        }
    }

    /// `WECHATPAY2-SHA256-RSA2048` over `METHOD\nURL\nTIMESTAMP\nNONCE\nBODY\n`.
    pub fn authorization(&self, method: &str, url: &str, body: &str) -> String {
        let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let nonce = format!("n{timestamp}x{}", body.len());
        let message = format!("{method}\n{url}\n{timestamp}\n{nonce}\n{body}\n");
        let mut sig = vec![0; self.key.public_modulus_len()];
        self.key
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                message.as_bytes(),
                &mut sig,
            )
            .unwrap();
        format!(
            r#"WECHATPAY2-SHA256-RSA2048 mchid="{MCHID}",nonce_str="{nonce}",signature="{}",timestamp="{timestamp}",serial_no="{SERIAL}""#,
            STANDARD.encode(sig)
        )
    }

    /// Whether `headers` carry a platform signature over `body`.
    pub fn signed_by_platform(&self, headers: &HeaderMap, body: &str) -> bool {
        let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let message = format!(
            "{}\n{}\n{body}\n",
            header("wechatpay-timestamp"),
            header("wechatpay-nonce")
        );
        let signature = STANDARD.decode(header("wechatpay-signature")).unwrap_or_default();
        UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, &self.platform)
            .verify(message.as_bytes(), &signature)
            .is_ok()
    }

    /// A v3 call signed with `authorization` (the merchant's, unless given).
    pub async fn v3_as(&self, method: &str, url: &str, body: Option<&Value>, authorization: Option<String>) -> Answer {
        self.try_v3(method, url, body, authorization, &[])
            .await
            .expect("an answer")
    }

    /// A v3 call with `extra` headers; the transport error if no answer arrived (a cut connection).
    pub async fn try_v3(
        &self,
        method: &str,
        url: &str,
        body: Option<&Value>,
        authorization: Option<String>,
        extra: &[(&str, &str)],
    ) -> Result<Answer, reqwest::Error> {
        let text = body.map(Value::to_string).unwrap_or_default();
        let authorization = authorization.unwrap_or_else(|| self.authorization(method, url, &text));
        let full = format!("{}{url}", self.sim.server.base_url());
        let mut request = match method {
            "GET" => self.sim.http.get(full),
            _ => self
                .sim
                .http
                .post(full)
                .header("content-type", "application/json")
                .body(text),
        };
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        let response = request
            .header("authorization", authorization)
            .header("accept", "application/json")
            .send()
            .await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let raw = response.text().await?;
        let serial = headers
            .get("wechatpay-serial")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Ok(Answer {
            status,
            verified: self.signed_by_platform(&headers, &raw),
            body: serde_json::from_str(&raw).unwrap_or(Value::Null),
            serial,
        })
    }

    /// A v3 call whose answer must carry a valid platform signature.
    pub async fn v3(&self, method: &str, url: &str, body: Option<&Value>) -> (u16, Value) {
        let answer = self.v3_as(method, url, body, None).await;
        assert!(
            answer.verified,
            "{method} {url}: the answer is not signed by the platform key"
        );
        (answer.status, answer.body)
    }

    /// A JSAPI order of `total` fen; its prepay_id.
    pub async fn order(&self, out_trade_no: &str, total: u64) -> String {
        let body = json!({
            "appid": super::APP_ID, "mchid": MCHID, "description": "a cup of tea", "out_trade_no": out_trade_no,
            "notify_url": self.notify_url, "amount": {"total": total, "currency": "CNY"}, "payer": {"openid": OPENID},
            "attach": "table 7",
        });
        let (status, answer) = self.v3("POST", "/v3/pay/transactions/jsapi", Some(&body)).await;
        assert_eq!(status, 200, "{answer}");
        answer["prepay_id"].as_str().unwrap().to_owned()
    }

    /// The user pays; the transaction_id.
    pub async fn pay(&self, prepay_id: &str, mode: &str) -> String {
        let (status, paid) = self
            .sim
            .post_status("/__sim/pay/complete", json!({"prepay_id": prepay_id, "mode": mode}))
            .await;
        assert_eq!(status, 200, "{paid}");
        paid["transaction_id"].as_str().unwrap().to_owned()
    }

    /// A paid order; its transaction_id.
    pub async fn paid_order(&self, out_trade_no: &str, total: u64) -> String {
        let prepay_id = self.order(out_trade_no, total).await;
        self.pay(&prepay_id, "normal").await
    }

    pub async fn query(&self, out_trade_no: &str) -> (u16, Value) {
        let url = format!("/v3/pay/transactions/out-trade-no/{out_trade_no}?mchid={MCHID}");
        self.v3("GET", &url, None).await
    }

    pub async fn refund(&self, body: Value) -> (u16, Value) {
        self.v3("POST", "/v3/refund/domestic/refunds", Some(&body)).await
    }

    pub async fn refund_query(&self, out_refund_no: &str) -> (u16, Value) {
        let url = format!("/v3/refund/domestic/refunds/{out_refund_no}");
        self.v3("GET", &url, None).await
    }

    /// A received notification checked as a merchant must: the platform signature over the
    /// raw body, then the resource decrypted with the APIv3 key. The envelope and plaintext.
    pub fn unseal(&self, (headers, body): &(HeaderMap, String)) -> (Value, Value) {
        assert!(
            self.signed_by_platform(headers, body),
            "a notification signed by the platform"
        );
        let envelope: Value = serde_json::from_str(body).unwrap();
        let resource = &envelope["resource"];
        assert_eq!(resource["algorithm"], "AEAD_AES_256_GCM");
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, APIV3_KEY.as_bytes()).unwrap());
        let mut sealed = STANDARD.decode(resource["ciphertext"].as_str().unwrap()).unwrap();
        let nonce = Nonce::try_assume_unique_for_key(resource["nonce"].as_str().unwrap().as_bytes()).unwrap();
        let aad = Aad::from(resource["associated_data"].as_str().unwrap().as_bytes());
        let plain = key.open_in_place(nonce, aad, &mut sealed).unwrap();
        let plaintext = serde_json::from_slice(plain).unwrap();
        (envelope, plaintext)
    }
}

/// A refund request of `refund` fen out of the order's `total`.
pub fn refund_request(out_trade_no: &str, out_refund_no: &str, refund: u64, total: u64) -> Value {
    json!({
        "out_trade_no": out_trade_no, "out_refund_no": out_refund_no, "reason": "out of stock",
        "amount": {"refund": refund, "total": total, "currency": "CNY"},
    })
}
