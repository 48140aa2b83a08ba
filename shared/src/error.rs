//! The one error type handlers return, and its JSON shape:
//! `{"error": {"code": "...", "message": "..."}}`.

use lambda_http::http::{HeaderValue, StatusCode, header};
use lambda_http::{Body, Response};

/// An error answered to the client. `code` is stable and machine-readable; `message` is for
/// people and never holds a secret.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    pub fn misconfigured(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_misconfigured", message)
    }

    pub fn into_response(self) -> Response<Body> {
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        let mut response = crate::http::json_response(self.status, &body);
        let headers = response.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.status == StatusCode::TOO_MANY_REQUESTS || self.status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

/// The one place WeChat failures become client answers (the table in README.md).
impl From<crate::wechat::WechatError> for ApiError {
    fn from(e: crate::wechat::WechatError) -> Self {
        use crate::wechat::WechatError as W;
        let operator = |what: &str| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "wechat_credentials_rejected",
                format!("{what}: the operator must check APP_ID and the app_secret in the configured secret"),
            )
        };
        match e {
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
            W::Unreachable(_) | W::BadResponse(_) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "wechat_unavailable", format!("{e}"))
            }
            W::InvalidAppId(code) => operator(&format!("WeChat rejected the AppID ({code})")),
            W::InvalidAppSecret => operator("WeChat rejected the app secret (40125)"),
            W::AppSecretFrozen => operator("WeChat says the AppSecret is frozen (40243)"),
            W::IpNotWhitelisted => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "wechat_ip_not_whitelisted",
                "WeChat refused this server's IP (40164): add it to the app's API IP whitelist or turn the whitelist off",
            ),
            W::InvalidAccessToken(code) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "wechat_token_rejected",
                format!("WeChat rejected a freshly fetched access token ({code})"),
            ),
            W::MissingParameter(_) | W::InvalidSignature | W::Other { .. } => {
                ApiError::new(StatusCode::BAD_GATEWAY, "wechat_error", e.to_string())
            }
        }
    }
}

impl From<crate::token::TokenError> for ApiError {
    fn from(e: crate::token::TokenError) -> Self {
        match e {
            crate::token::TokenError::Wechat(e) => e.into(),
            crate::token::TokenError::Secrets(e) => e.into(),
        }
    }
}

impl From<crate::opendata::OpenDataError> for ApiError {
    fn from(e: crate::opendata::OpenDataError) -> Self {
        use crate::opendata::OpenDataError as O;
        let code = match e {
            O::InvalidBase64 { .. } | O::BadIvLength(_) | O::EmptyCiphertext | O::NotBlockAligned(_) => {
                "malformed_encrypted_data"
            }
            O::BadPadding | O::NotJson | O::MissingWatermark => "decryption_failed",
            O::ForeignAppId(_) => "watermark_app_mismatch",
            O::Stale { .. } | O::FromTheFuture(_) => "watermark_expired",
            O::UnexpectedData(_) => "unexpected_data",
            O::BadSessionKey => return session_key_expired(),
        };
        ApiError::bad_request(code, e.to_string())
    }
}

/// The answer when open data does not match the session's key because WeChat rotated it.
pub fn session_key_expired() -> ApiError {
    ApiError::unauthorized(
        "session_key_expired",
        "the user's session key changed (wx.login ran again): POST /session/reset or log in again (wx.login, POST /login), then ask for the data again",
    )
}

impl From<crate::pay::client::PayError> for ApiError {
    fn from(e: crate::pay::client::PayError) -> Self {
        use crate::pay::client::PayError as P;
        match &e {
            P::NotConfigured(_) => ApiError::misconfigured(e.to_string()),
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
            P::Rejected { .. } => ApiError::new(StatusCode::BAD_GATEWAY, "wechatpay_rejected", e.to_string()),
            P::BadSignature(_) => ApiError::new(StatusCode::BAD_GATEWAY, "wechatpay_signature_invalid", e.to_string()),
            P::Unavailable(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "wechatpay_unavailable", e.to_string()),
            P::Timeout => ApiError::new(StatusCode::GATEWAY_TIMEOUT, "wechatpay_timeout", e.to_string()),
        }
    }
}
