//! `POST /share-info {"encryptedData", "iv"}` (from `wx.getShareInfo`) → `{"openGId"}`.

use crate::at_init::AtInit;
use lambda_http::Request;
use lambda_http::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{Sealed, open_sealed};
use crate::api::request::parse_json_body;
use crate::api::response::json_response;
use crate::function::{Answer, Entry, Function, Route};
use crate::store::sessions::Session;
use crate::{AppState, authed};

pub const FUNCTION: Function = Function {
    name: "share-info",
    parts: super::OPEN_DATA,
    // WeChat only after a failed decryption.
    at_init: AtInit::DYNAMODB,
    entry: Entry::Routes(&[Route::post("/share-info", authed!(share_info))]),
};

/// What share info decrypts to that we return: the group's id for this app.
#[derive(Deserialize, Serialize)]
struct ShareInfo {
    #[serde(rename = "openGId")]
    open_gid: String,
}

pub async fn share_info(state: &AppState, session: &Session, req: &Request) -> Answer {
    let body: Sealed = parse_json_body(req)?;
    let data: ShareInfo = open_sealed(state, session, &body.encrypted_data, &body.iv).await?;
    Ok(json_response(StatusCode::OK, &data))
}
