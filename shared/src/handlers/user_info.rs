//! `POST /user-info {"rawData", "signature", "encryptedData", "iv"}` (from `wx.getUserInfo` with
//! credentials): checks `signature = sha1(rawData + session_key)`, decrypts, checks that the
//! data is the caller's own (`openId`), and returns the profile. Any of these failing is the one
//! open-data answer (`invalid_open_data`, or `session_key_expired` for a rotated key).

use crate::at_init::AtInit;
use lambda_http::Request;
use lambda_http::http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{open_sealed, reject_open_data};
use crate::api::request::parse_json_body;
use crate::api::response::json_response;
use crate::function::{Answer, Entry, Function, Route};
use crate::opendata::verify_signature;
use crate::store::sessions::Session;
use crate::{ApiError, AppState, authed};

pub const FUNCTION: Function = Function {
    name: "user-info",
    parts: super::OPEN_DATA,
    // WeChat only after a failed decryption.
    at_init: AtInit::DYNAMODB,
    entry: Entry::Routes(&[Route::post("/user-info", authed!(user_info))]),
};

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

pub async fn user_info(state: &AppState, session: &Session, req: &Request) -> Answer {
    let body: UserInfoRequest = parse_json_body(req)?;
    // Malformed input is said as such (and costs nothing); only a well-formed signature that does
    // not match is a failure of the data.
    if body.signature.len() != 40 || !body.signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request(
            "invalid_request",
            "signature must be the 40 hex digits getUserInfo gave",
        ));
    }
    // A rotated key fails here first; a forged rawData too. Either way, the one answer.
    if !verify_signature(&body.raw_data, &session.session_key, &body.signature) {
        return Err(reject_open_data(state, session, &"the rawData signature does not match").await);
    }
    let data: Map<String, Value> = open_sealed(state, session, &body.encrypted_data, &body.iv).await?;
    if data.get("openId").and_then(Value::as_str) != Some(session.openid.as_str()) {
        return Err(reject_open_data(state, session, &"the data's openId is not the caller's").await);
    }
    let profile: Map<String, Value> = PROFILE_FIELDS
        .iter()
        .filter_map(|&k| data.get(k).map(|v| (k.to_owned(), v.clone())))
        .collect();
    Ok(json_response(StatusCode::OK, &profile))
}
