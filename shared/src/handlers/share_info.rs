//! `POST /share-info {"encryptedData", "iv"}` (from `wx.getShareInfo`) → `{"openGId"}`.

use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};

use serde::{Deserialize, Serialize};

use super::{Sealed, open_sealed};
use crate::http::{json_response, parse_json_body, require_method};
use crate::session::Session;
use crate::{ApiError, AppState};

/// What share info decrypts to that we return: the group's id for this app.
#[derive(Deserialize, Serialize)]
struct ShareInfo {
    #[serde(rename = "openGId")]
    open_gid: String,
}

pub async fn handle(state: &AppState, req: Request) -> Response<Body> {
    super::respond(share_info(state, &req).await)
}

async fn share_info(state: &AppState, req: &Request) -> Result<Response<Body>, ApiError> {
    require_method(req, Method::POST)?;
    let session = state.authenticate(req).await?;
    for_session(state, &session, req).await
}

/// Everything after the session lookup (benchmarked on its own in `shared/benches/handlers.rs`).
pub async fn for_session(state: &AppState, session: &Session, req: &Request) -> Result<Response<Body>, ApiError> {
    let body: Sealed = parse_json_body(req)?;
    let data: ShareInfo = open_sealed(state, session, &body.encrypted_data, &body.iv).await?;
    Ok(json_response(StatusCode::OK, &data))
}
