//! `POST /user-info {"rawData", "signature", "encryptedData", "iv"}` (from `wx.getUserInfo` with
//! credentials): checks `signature = sha1(rawData + session_key)`, decrypts, checks that the
//! data is the caller's own (`openId`), and returns the profile.

use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{key_still_current, open_sealed, text_field};
use crate::error::session_key_expired;
use crate::http::{json_response, parse_json_body, require_method};
use crate::opendata::verify_signature;
use crate::session::Session;
use crate::{ApiError, AppState};

/// Profile fields returned; anything else in the decrypted data stays on the server.
const PROFILE_FIELDS: [&str; 9] = [
    "nickName",
    "avatarUrl",
    "gender",
    "city",
    "province",
    "country",
    "language",
    "unionId",
    "openId",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserInfoRequest {
    #[serde(rename = "rawData")]
    raw_data: String,
    signature: String,
    #[serde(rename = "encryptedData")]
    encrypted_data: String,
    iv: String,
}

pub async fn handle(state: &AppState, req: Request) -> Response<Body> {
    super::respond(user_info(state, &req).await)
}

async fn user_info(state: &AppState, req: &Request) -> Result<Response<Body>, ApiError> {
    require_method(req, Method::POST)?;
    let session = state.authenticate(req).await?;
    for_session(state, &session, req).await
}

/// Everything after the session lookup (benchmarked on its own in `shared/benches/handlers.rs`).
pub async fn for_session(state: &AppState, session: &Session, req: &Request) -> Result<Response<Body>, ApiError> {
    let body: UserInfoRequest = parse_json_body(req)?;
    if !verify_signature(&body.raw_data, &session.session_key, &body.signature) {
        // A rotated key fails here first; tell that apart from a forged rawData.
        return Err(if key_still_current(state, session).await {
            ApiError::bad_request("invalid_signature", "signature is not sha1(rawData + session_key)")
        } else {
            session_key_expired()
        });
    }
    let data = open_sealed(state, session, &body.encrypted_data, &body.iv).await?;
    if text_field(&data, "openId")? != session.openid {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "openid_mismatch",
            "the encrypted data belongs to another user",
        ));
    }
    let profile: Map<String, Value> = PROFILE_FIELDS
        .iter()
        .filter_map(|&k| data.get(k).map(|v| (k.to_owned(), v.clone())))
        .collect();
    Ok(json_response(StatusCode::OK, &profile))
}
