//! One module per Lambda function: each takes the container's [`AppState`](crate::AppState) and
//! a request, and always answers (errors become JSON responses, never a panic or a `500`).

pub mod card_sign;
pub mod decrypt_phone;
pub mod login;
pub mod pay_notify;
pub mod pay_sign;
pub mod qrcode;
pub mod session;
pub mod share_info;
pub mod user_info;
pub mod werun;

use lambda_http::{Body, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::session_key_expired;
use crate::opendata;
use crate::secret::Secret;
use crate::session::{Session, now_unix};
use crate::{ApiError, AppState};

/// Turns a handler's result into the response, logging refusals at the right level.
pub(crate) fn respond(result: Result<Response<Body>, ApiError>) -> Response<Body> {
    match result {
        Ok(response) => response,
        Err(error) => {
            if error.status.is_server_error() {
                tracing::error!(status = error.status.as_u16(), code = error.code, message = %error.message, "request failed");
            } else {
                tracing::info!(status = error.status.as_u16(), code = error.code, "request refused");
            }
            error.into_response()
        }
    }
}

/// The body of getWeRunData / getShareInfo results and of the legacy phone button.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Sealed {
    #[serde(rename = "encryptedData")]
    pub encrypted_data: String,
    pub iv: String,
}

/// Decrypts open data for `session` and checks its watermark. When well-formed data does not
/// decrypt, asks WeChat (only then) whether the stored key is still current, so the client hears
/// "log in again" for a rotated key and "bad data" for tampered data.
pub(crate) async fn open_sealed<T: DeserializeOwned>(
    state: &AppState,
    session: &Session,
    encrypted_data: &str,
    iv: &str,
) -> Result<T, ApiError> {
    let opened = opendata::open_as(
        &session.session_key,
        encrypted_data,
        iv,
        &state.config.app_id,
        state.config.watermark_max_age_secs,
        now_unix(),
    );
    match opened {
        Ok(data) => Ok(data),
        Err(e) if e.is_wrong_key() => Err(if key_still_current(state, session).await {
            e.into()
        } else {
            session_key_expired()
        }),
        Err(e) => Err(e.into()),
    }
}

/// Whether the session's key is still the one WeChat holds, asked only after a decryption or
/// signature failure: `false` (a rotated key, the common case after the user logs in elsewhere)
/// means "log in again", `true` means the data itself is bad.
pub(crate) async fn key_still_current(state: &AppState, session: &Session) -> bool {
    let current = state
        .tokens
        .with_token(|token: Secret| async move {
            state
                .wechat
                .check_session(&token, &session.openid, &session.session_key)
                .await
        })
        .await;
    current.unwrap_or_else(|e| {
        // WeChat cannot tell us; a rotated key is by far the likeliest cause.
        tracing::warn!(error = %e, "checksession failed while explaining a decryption failure");
        false
    })
}

/// A string field of decrypted open data, or a 400 naming it.
pub(crate) fn text_field<'a>(data: &'a Map<String, Value>, name: &str) -> Result<&'a str, ApiError> {
    data.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("unexpected_data", format!("the decrypted data has no {name}")))
}
