//! The one error type handlers return, and its JSON shape:
//! `{"error": {"code": "...", "message": "...", "request_id": "..."}}`.

use lambda_http::http::{HeaderValue, StatusCode, header};
use lambda_http::{Body, Response};

/// An error answered to the client. `code` is stable and machine-readable; `message` says what
/// the caller can do and never names a secret, an ARN, a table or an upstream message: those go
/// in `detail`, which only the log sees.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    detail: Option<String>,
    /// The methods of the route, for a 405's `Allow` header.
    allow: Option<String>,
    /// Seconds for a 429's or 503's `Retry-After` (1 when not given).
    retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            detail: None,
            allow: None,
            retry_after: None,
        }
    }

    /// 429: the caller spent their budget on this route (see `store::budgets`); `Retry-After`
    /// says when the next call is allowed.
    pub fn too_many_requests(retry_after_secs: u64) -> Self {
        let mut error = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            format!("too many requests from this user: try again in {retry_after_secs} s"),
        );
        error.retry_after = Some(retry_after_secs);
        error
    }

    /// What the operator needs to know (logged with the request id, never answered).
    pub fn with_detail(mut self, detail: impl std::fmt::Display) -> Self {
        self.detail = Some(detail.to_string());
        self
    }

    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    /// A deployment problem (a missing table or secret, a malformed secret): the caller learns
    /// only that the operator must look; `detail` says what is wrong.
    pub fn misconfigured(detail: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_misconfigured",
            "the server is misconfigured: the operator finds the cause in the log under this request_id",
        )
        .with_detail(detail)
    }

    /// 405 for a known path, with the methods it takes.
    pub fn method_not_allowed(allow: &str) -> Self {
        let mut error = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("this route takes {allow}"),
        );
        error.allow = Some(allow.to_owned());
        error
    }

    /// `{"error": {"code", "message", "request_id"}}`.
    pub fn to_json(&self, request_id: &str) -> serde_json::Value {
        serde_json::json!({
            "error": { "code": self.code, "message": self.message, "request_id": request_id }
        })
    }

    pub fn into_response(self, request_id: &str) -> Response<Body> {
        let body = self.to_json(request_id);
        let mut response = crate::api::response::json_response(self.status, &body);
        let headers = response.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.status == StatusCode::TOO_MANY_REQUESTS || self.status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(self.retry_after.unwrap_or(1)));
        }
        if let Some(allow) = self.allow.as_deref().and_then(|a| HeaderValue::from_str(a).ok()) {
            headers.insert(header::ALLOW, allow);
        }
        response
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)?;
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

/// The one place WeChat failures become client answers (the table in README.md).
impl From<crate::wechat::WechatError> for ApiError {
    fn from(e: crate::wechat::WechatError) -> Self {
        use crate::wechat::WechatError as W;
        let operator = || {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "wechat_credentials_rejected",
                "WeChat rejected this server's credentials: the operator must check APP_ID and the app secret",
            )
        };
        let detail = e.to_string();
        let answer = match e {
            W::InvalidCode => ApiError::bad_request(
                "invalid_login_code",
                "WeChat rejected the login code as invalid or expired (40029): call wx.login again",
            ),
            W::CodeUsed => ApiError::bad_request(
                "invalid_login_code",
                "this login code was already used (40163): call wx.login again",
            ),
            W::CodeBlocked => ApiError::new(
                StatusCode::FORBIDDEN,
                "login_blocked",
                "WeChat blocked this login (40226)",
            ),
            W::RateLimited => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "WeChat's rate limit was reached (45011): wait a minute and try again",
            ),
            W::Busy => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "wechat_busy",
                "WeChat is busy (-1): try again shortly",
            ),
            W::Timeout => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "wechat_timeout",
                "WeChat did not answer in time",
            ),
            W::Unreachable(_) | W::HttpStatus(_) | W::BadResponse(_) | W::Unverified(_) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "wechat_unavailable",
                "WeChat could not be reached or answered unexpectedly: try again later",
            ),
            W::InvalidAppId(_) | W::InvalidAppSecret | W::AppSecretFrozen | W::ApiSecurityRejected(_) => operator(),
            W::IpNotWhitelisted => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "wechat_ip_not_whitelisted",
                "WeChat refused this server's IP (40164): add it to the app's API IP whitelist or turn the whitelist off",
            ),
            W::InvalidAccessToken(_) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "wechat_token_rejected",
                "WeChat rejected a freshly fetched access token: try again later",
            ),
            W::MissingParameter(_) | W::InvalidSignature | W::Other { .. } => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "wechat_error",
                "WeChat refused the request: the operator finds its answer in the log under this request_id",
            ),
        };
        answer.with_detail(detail)
    }
}

impl From<crate::token::TokenError> for ApiError {
    fn from(e: crate::token::TokenError) -> Self {
        match e {
            crate::token::TokenError::Wechat(e) => e.into(),
            crate::token::TokenError::Secrets(e) => e.into(),
            e @ crate::token::TokenError::Undeclared => ApiError::misconfigured(e),
        }
    }
}

/// The one answer to open data (or a `rawData` signature) that does not check out under the
/// session's key, whatever the reason: bad padding, not UTF-8 or JSON, no watermark, another
/// app's, the wrong shape. One answer, so that a caller probing with their own session learns
/// nothing (no padding oracle); the reason goes to the log.
pub fn invalid_open_data() -> ApiError {
    ApiError::bad_request(
        "invalid_open_data",
        "the data does not check out under this session: do not retry it; ask WeChat for the data again",
    )
}

/// The answer when the session's key is no longer the one WeChat holds (the user ran `wx.login`
/// again): the session is gone, the client logs in again.
pub fn session_key_expired() -> ApiError {
    ApiError::unauthorized(
        "session_key_expired",
        "the user's session key changed (wx.login ran again): log in again (wx.login, POST /login), then ask for the data again",
    )
}

impl From<crate::pay::client::PayError> for ApiError {
    fn from(e: crate::pay::client::PayError) -> Self {
        use crate::pay::client::PayError as P;
        let answer = match &e {
            P::NotConfigured(_) => return ApiError::misconfigured(e),
            P::Rejected { code, .. } if code == "ORDERPAID" || code == "ORDER_PAID" => ApiError::new(
                StatusCode::CONFLICT,
                "order_already_paid",
                "WeChat Pay says this order is already paid",
            ),
            P::Rejected { code, .. } if code == "ORDER_CLOSED" || code == "ORDERCLOSED" => ApiError::new(
                StatusCode::CONFLICT,
                "order_closed",
                "WeChat Pay says this order is closed",
            ),
            P::Rejected { .. } => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "wechatpay_rejected",
                "WeChat Pay refused the request: the operator finds its reason in the log under this request_id",
            ),
            P::NotFound(_) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "wechatpay_not_found",
                "WeChat Pay does not know this order or refund",
            ),
            P::BadSignature(_) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "wechatpay_signature_invalid",
                "WeChat Pay's answer did not carry a valid signature: nothing was stored",
            ),
            P::Unavailable(_) | P::HttpStatus(_) | P::Busy { .. } | P::BadAnswer(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "wechatpay_unavailable",
                "WeChat Pay could not be reached: try again",
            ),
            P::Timeout => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "wechatpay_timeout",
                "WeChat Pay did not answer in time: try again",
            ),
        };
        answer.with_detail(e)
    }
}
