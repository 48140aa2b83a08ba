//! The WeChat Pay HTTP client: APIv3 JSAPI prepay (signed request, verified response) and APIv2
//! unified order (signed XML both ways).

use std::collections::BTreeMap;

use reqwest::Method;
use std::time::Duration;

use super::Merchant;
use super::v2::{self, SignType};
use super::v3::{self, SignedHeaders};
use crate::clock::now_unix;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PayError {
    #[error("WeChat Pay is not configured: {0}")]
    NotConfigured(String),
    #[error("WeChat Pay refused the order: {code}: {message}")]
    Rejected { code: String, message: String },
    #[error("WeChat Pay's answer does not carry a valid signature: {0}")]
    BadSignature(String),
    #[error("WeChat Pay is unavailable: {0}")]
    Unavailable(String),
    #[error("WeChat Pay answered HTTP {0}")]
    HttpStatus(u16),
    /// Too many requests (429 `FREQUENCY_LIMITED`) or a server fault (5xx `SYSTEM_ERROR`):
    /// whether the request was carried out is unknown, and asking again later is the answer.
    #[error("WeChat Pay is busy: HTTP {status} {code}")]
    Busy { status: u16, code: String },
    #[error("WeChat Pay answered something unexpected: {0}")]
    BadAnswer(String),
    #[error("WeChat Pay did not answer in time")]
    Timeout,
    #[error("WeChat Pay does not know it ({0})")]
    NotFound(String),
}

impl PayError {
    /// Worth one more try: the order request is idempotent for the same out_trade_no.
    fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unavailable(_) | Self::HttpStatus(_) | Self::Busy { .. } | Self::Timeout
        )
    }

    /// A refusal WeChat Pay certainly gave after receiving the request: it will not carry this
    /// request out as sent. Not one of these: a timeout, a cut connection, 429, 5xx, an answer
    /// we cannot verify, and business states that may pass (`NOT_ENOUGH`: the merchant's balance
    /// is short now) or that concern our set-up rather than the request (`SIGN_ERROR`). An
    /// unknown code is not definitive either.
    pub fn is_definitive_refusal(&self) -> bool {
        const DEFINITIVE: [&str; 6] = [
            "PARAM_ERROR",
            "INVALID_REQUEST",
            "NO_AUTH",
            "USER_ACCOUNT_ABNORMAL",
            "MCH_NOT_EXISTS",
            "RESOURCE_NOT_EXISTS",
        ];
        match self {
            Self::Rejected { code, .. } => DEFINITIVE.contains(&code.as_str()),
            _ => false,
        }
    }

    /// The `ErrCode` this failure is counted under in `WechatErrors`: WeChat Pay's error code,
    /// `http_<status>`, `unreachable` (no answer: refused, reset or timed out), `bad_signature`
    /// or `bad_response`.
    pub fn metric_code(&self) -> String {
        match self {
            Self::Rejected { code, .. } | Self::NotFound(code) | Self::Busy { code, .. } => code.clone(),
            Self::HttpStatus(status) => format!("http_{status}"),
            Self::BadSignature(_) => "bad_signature".to_owned(),
            Self::BadAnswer(_) => "bad_response".to_owned(),
            Self::Unavailable(_) | Self::Timeout => "unreachable".to_owned(),
            Self::NotConfigured(_) => "not_configured".to_owned(),
        }
    }
}

#[derive(Clone)]
pub struct PayClient {
    http: reqwest::Client,
    base: String,
    /// Each call's own timeout, cut further to the invocation's deadline.
    timeout: Duration,
}

const JSAPI_PATH: &str = "/v3/pay/transactions/jsapi";
const REFUNDS_PATH: &str = "/v3/refund/domestic/refunds";

/// A verified APIv3 answer.
pub(super) struct V3Answer {
    bytes: Vec<u8>,
}

impl V3Answer {
    pub(super) fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, PayError> {
        serde_json::from_slice(&self.bytes)
            .map_err(|e| PayError::BadAnswer(format!("an answer that is not the expected JSON: {e}")))
    }
}

/// A transaction, as a query answers it and a payment notification carries it (decrypted).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Transaction {
    pub appid: String,
    pub mchid: String,
    pub out_trade_no: String,
    /// Absent until paid.
    #[serde(default)]
    pub transaction_id: Option<String>,
    /// SUCCESS, REFUND, NOTPAY, CLOSED, REVOKED, USERPAYING, PAYERROR.
    pub trade_state: String,
    #[serde(default)]
    pub amount: Option<TransactionAmount>,
    #[serde(default)]
    pub payer: Option<Payer>,
    #[serde(default)]
    pub success_time: Option<String>,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct TransactionAmount {
    pub total: u64,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct Payer {
    /// Absent in the answer about an unpaid order.
    #[serde(default)]
    pub openid: Option<String>,
}

/// A refund as WeChat Pay answers it (apply, query) and a refund notification carries it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct RefundState {
    pub out_refund_no: String,
    #[serde(default)]
    pub refund_id: Option<String>,
    #[serde(default)]
    pub out_trade_no: Option<String>,
    /// PROCESSING, SUCCESS, CLOSED, ABNORMAL (`refund_status` in notifications).
    #[serde(alias = "refund_status")]
    pub status: String,
    #[serde(default)]
    pub success_time: Option<String>,
}

/// The pause before the one retry of a transient failure.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

impl PayClient {
    /// `http` is the container's one HTTP client, shared with the WeChat client.
    pub fn new(base: &str, http: reqwest::Client, timeout: Duration) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            timeout,
        }
    }

    /// Opens (TCP + TLS) the connection the next call will use, sending nothing (init).
    pub async fn connect_ahead(&self) -> bool {
        crate::net::open_ahead::open_ahead(&self.http, &self.base).await
    }

    /// `request` with this call's time budget; none left is a timeout before anything is sent.
    fn bounded(&self, request: reqwest::RequestBuilder) -> Result<reqwest::RequestBuilder, PayError> {
        let budget = crate::deadline::budget(self.timeout).ok_or(PayError::Timeout)?;
        Ok(request.timeout(budget))
    }

    /// Sends `request` within this call's time budget and reads the answer with `read`. Every call
    /// to WeChat Pay goes through here, and every one that fails is counted once: `WechatErrors`
    /// under [`PayError::metric_code`] (also those the caller handles, as `ORDER_NOT_EXIST`). A
    /// call never sent, for want of time, is not WeChat Pay's failure and is not counted.
    async fn call<T, F, Fut>(&self, request: reqwest::RequestBuilder, read: F) -> Result<T, PayError>
    where
        F: FnOnce(reqwest::Response) -> Fut,
        Fut: Future<Output = Result<T, PayError>>,
    {
        let request = self.bounded(request)?;
        let answer = match request.send().await {
            Ok(response) => read(response).await,
            Err(e) => Err(transport(e)),
        };
        answer.inspect_err(|e| crate::metrics::wechat_error(&e.metric_code()))
    }

    /// Places a JSAPI order (APIv3) and returns its prepay_id. One retry on a transient failure.
    pub async fn jsapi_prepay(&self, merchant: &Merchant, order: &serde_json::Value) -> Result<String, PayError> {
        #[derive(serde::Deserialize)]
        struct Prepay {
            prepay_id: String,
        }
        let answer = self
            .v3_retried(merchant, Method::POST, JSAPI_PATH.to_owned(), Some(order))
            .await?;
        let prepay: Prepay = answer.json()?;
        Ok(prepay.prepay_id)
    }

    /// An idempotent APIv3 call, tried once more after a transient failure when time allows.
    async fn v3_retried(
        &self,
        merchant: &Merchant,
        method: Method,
        path: String,
        body: Option<&serde_json::Value>,
    ) -> Result<V3Answer, PayError> {
        self.v3_retried_as(merchant, method, path, body, None).await
    }

    /// [`Self::v3_retried`] with `Wechatpay-Serial: <wechatpay_serial>` when given: the id of the
    /// WeChat Pay key a sensitive field of `body` is encrypted with (see `pay::transfer`).
    pub(super) async fn v3_retried_as(
        &self,
        merchant: &Merchant,
        method: Method,
        path: String,
        body: Option<&serde_json::Value>,
        wechatpay_serial: Option<&str>,
    ) -> Result<V3Answer, PayError> {
        match self
            .v3_call(merchant, method.clone(), &path, body, wechatpay_serial)
            .await
        {
            Err(e) if e.is_transient() && crate::deadline::allows(RETRY_PAUSE, Duration::from_secs(1)) => {
                tokio::time::sleep(RETRY_PAUSE).await;
                self.v3_call(merchant, method, &path, body, wechatpay_serial).await
            }
            other => other,
        }
    }

    /// One APIv3 call: signed with the merchant's key over exactly the bytes sent, the answer's
    /// `Wechatpay-*` signature checked over exactly the bytes received before anything in it is
    /// read. `path` includes the query string, as signed.
    async fn v3_call(
        &self,
        merchant: &Merchant,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        wechatpay_serial: Option<&str>,
    ) -> Result<V3Answer, PayError> {
        let missing = |what: &str| PayError::NotConfigured(format!("the pay secret has no {what}"));
        let key = merchant
            .signing_key
            .as_ref()
            .ok_or_else(|| missing("merchant_private_key"))?;
        let serial = merchant
            .serial_no
            .as_deref()
            .ok_or_else(|| missing("merchant_serial_no"))?;
        // Serialize once: the signature covers exactly the bytes sent.
        let body = body
            .map(|b| serde_json::to_vec(b).expect("JSON serializes"))
            .unwrap_or_default();
        let nonce = crate::random::nonce();
        let credentials = v3::Credentials {
            mchid: &merchant.mchid,
            serial_no: serial,
            key,
        };
        let authorization = v3::authorization(&credentials, method.as_str(), path, &body, now_unix(), &nonce);
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("Authorization", authorization)
            .header("Accept", "application/json")
            .header("User-Agent", "wxa-serverless");
        if !body.is_empty() {
            request = request.header("Content-Type", "application/json").body(body);
        }
        if let Some(serial) = wechatpay_serial {
            request = request.header("Wechatpay-Serial", serial);
        }
        self.call(request, |response| async move {
            let status = response.status();
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let (timestamp, nonce, signature, serial) = (
                header("Wechatpay-Timestamp"),
                header("Wechatpay-Nonce"),
                header("Wechatpay-Signature"),
                header("Wechatpay-Serial"),
            );
            let bytes = response.bytes().await.map_err(transport)?;
            #[derive(serde::Deserialize)]
            struct Failure {
                code: String,
                message: String,
            }
            let failure = || -> Option<Failure> { serde_json::from_slice(&bytes).ok() };
            if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                return Err(match failure() {
                    Some(f) => PayError::Busy {
                        status: status.as_u16(),
                        code: f.code,
                    },
                    None => PayError::HttpStatus(status.as_u16()),
                });
            }
            if !status.is_success() {
                let failure = failure().unwrap_or(Failure {
                    code: format!("http_{}", status.as_u16()),
                    message: String::new(),
                });
                return Err(if status == reqwest::StatusCode::NOT_FOUND {
                    PayError::NotFound(failure.code)
                } else {
                    PayError::Rejected {
                        code: failure.code,
                        message: failure.message,
                    }
                });
            }
            // A 204 carries nothing to trust; anything with a body is read only once verified.
            if !bytes.is_empty() {
                let headers = SignedHeaders {
                    timestamp: timestamp.as_deref(),
                    nonce: nonce.as_deref(),
                    signature: signature.as_deref(),
                    serial: serial.as_deref(),
                };
                v3::verify_signed(&headers, &bytes, merchant.platform_keys(), now_unix())
                    .map_err(|e| PayError::BadSignature(e.to_string()))?;
            }
            Ok(V3Answer { bytes: bytes.to_vec() })
        })
        .await
    }

    /// The transaction of `out_trade_no` as WeChat Pay knows it (query by the merchant's number).
    pub async fn query_order(&self, merchant: &Merchant, out_trade_no: &str) -> Result<Transaction, PayError> {
        let path = format!(
            "/v3/pay/transactions/out-trade-no/{out_trade_no}?mchid={}",
            merchant.mchid
        );
        self.v3_retried(merchant, Method::GET, path, None).await?.json()
    }

    /// Closes an unpaid order at WeChat Pay (204). A paid order is `Rejected { code: ORDER_PAID }`.
    pub async fn close_order(&self, merchant: &Merchant, out_trade_no: &str) -> Result<(), PayError> {
        let path = format!("/v3/pay/transactions/out-trade-no/{out_trade_no}/close");
        let body = serde_json::json!({ "mchid": merchant.mchid });
        self.v3_retried(merchant, Method::POST, path, Some(&body)).await?;
        Ok(())
    }

    /// Applies for a refund (idempotent on `out_refund_no` at WeChat Pay: a retry never refunds
    /// twice).
    pub async fn refund(&self, merchant: &Merchant, request: &serde_json::Value) -> Result<RefundState, PayError> {
        self.v3_retried(merchant, Method::POST, REFUNDS_PATH.to_owned(), Some(request))
            .await?
            .json()
    }

    /// A refund as WeChat Pay knows it.
    pub async fn query_refund(&self, merchant: &Merchant, out_refund_no: &str) -> Result<RefundState, PayError> {
        let path = format!("{REFUNDS_PATH}/{out_refund_no}");
        self.v3_retried(merchant, Method::GET, path, None).await?.json()
    }

    /// Places a JSAPI order (APIv2 `pay/unifiedorder`) and returns its prepay_id.
    pub async fn unified_order(
        &self,
        merchant: &Merchant,
        mut fields: BTreeMap<String, String>,
        sign_type: SignType,
    ) -> Result<String, PayError> {
        let key = merchant
            .apiv2_key
            .as_ref()
            .ok_or_else(|| PayError::NotConfigured("the pay secret has no apiv2_key".into()))?;
        fields.insert("sign_type".into(), sign_type.as_str().into());
        let sign = v2::sign(&fields, key, sign_type);
        fields.insert("sign".into(), sign);
        let request = self
            .http
            .post(format!("{}/pay/unifiedorder", self.base))
            .header("Content-Type", "text/xml; charset=utf-8")
            .body(v2::to_xml(&fields));
        self.call(request, |response| async move {
            let status = response.status();
            let text = response.text().await.map_err(transport)?;
            if !status.is_success() {
                return Err(PayError::HttpStatus(status.as_u16()));
            }
            let answer = v2::from_xml(&text).ok_or_else(|| PayError::BadAnswer("an answer that is not XML".into()))?;
            let get = |k: &str| answer.get(k).map(String::as_str).unwrap_or_default();
            if get("return_code") != "SUCCESS" {
                return Err(PayError::Rejected {
                    code: "FAIL".into(),
                    message: get("return_msg").into(),
                });
            }
            if !v2::verify_answer(&answer, key, sign_type) {
                return Err(PayError::BadSignature(
                    "the sign of the unifiedorder answer does not match".into(),
                ));
            }
            if get("result_code") != "SUCCESS" {
                return Err(PayError::Rejected {
                    code: get("err_code").into(),
                    message: get("err_code_des").into(),
                });
            }
            match get("prepay_id") {
                "" => Err(PayError::BadAnswer("an answer without prepay_id".into())),
                id => Ok(id.to_owned()),
            }
        })
        .await
    }
}

fn transport(e: reqwest::Error) -> PayError {
    if e.is_timeout() {
        PayError::Timeout
    } else {
        PayError::Unavailable(crate::net::error_chain(&e.without_url()))
    }
}
