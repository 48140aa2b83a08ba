//! `POST /phone`: the user's phone number from a `getPhoneNumber` button event, either
//! `{"code"}` (current button: `wxa/business/getuserphonenumber`) or `{"encryptedData", "iv"}`
//! (legacy button: decrypted with the session key) → `{"phoneNumber", "purePhoneNumber", "countryCode"}`.

use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use serde::Deserialize;

use super::open_sealed;
use crate::http::{json_response, one_time_code, parse_json_body, require_method};
use crate::secret::Secret;
use crate::session::Session;
use crate::token::TokenError;
use crate::wechat::{PhoneInfo, WechatError};
use crate::{ApiError, AppState};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PhoneRequest {
    code: Option<String>,
    #[serde(rename = "encryptedData")]
    encrypted_data: Option<String>,
    iv: Option<String>,
}

pub async fn handle(state: &AppState, req: Request) -> Response<Body> {
    super::respond(phone(state, &req).await)
}

async fn phone(state: &AppState, req: &Request) -> Result<Response<Body>, ApiError> {
    require_method(req, Method::POST)?;
    let session = state.authenticate(req).await?;
    for_session(state, &session, req).await
}

/// Everything after the session lookup (benchmarked on its own in `shared/benches/handlers.rs`).
pub async fn for_session(state: &AppState, session: &Session, req: &Request) -> Result<Response<Body>, ApiError> {
    let body: PhoneRequest = parse_json_body(req)?;
    let phone = match (body.code, body.encrypted_data, body.iv) {
        (Some(code), None, None) => by_code(state, &code).await?,
        (None, Some(encrypted_data), Some(iv)) => {
            open_sealed::<PhoneInfo>(state, session, &encrypted_data, &iv).await?
        }
        _ => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "send either {\"code\"} from the getPhoneNumber event, or {\"encryptedData\", \"iv\"}",
            ));
        }
    };
    Ok(json_response(StatusCode::OK, &phone))
}

async fn by_code(state: &AppState, code: &str) -> Result<PhoneInfo, ApiError> {
    let code = one_time_code(code, "the getPhoneNumber event")?;
    let result = state
        .tokens
        .with_token(|token: Secret| async move { state.wechat.get_user_phone_number(&token, code).await })
        .await;
    result.map_err(|e| match e {
        TokenError::Wechat(WechatError::InvalidCode | WechatError::CodeUsed) => ApiError::bad_request(
            "invalid_phone_code",
            "WeChat rejected the phone code (invalid, expired or already used): ask the user to tap the button again",
        ),
        other => other.into(),
    })
}
