//! `GET /session`: whether the caller's session_key is still the one WeChat holds
//! (`wxa/checksession`). A mini-program calls it before decrypting data, instead of guessing.

use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};

use crate::http::{json_response, require_method};
use crate::secret::Secret;
use crate::{ApiError, AppState};

pub async fn handle(state: &AppState, req: Request) -> Response<Body> {
    super::respond(check(state, &req).await)
}

async fn check(state: &AppState, req: &Request) -> Result<Response<Body>, ApiError> {
    require_method(req, Method::GET)?;
    let session = state.authenticate(req).await?;
    let valid = state
        .tokens
        .with_token(|token: Secret| {
            let (wechat, session) = (&state.wechat, &session);
            async move {
                wechat
                    .check_session(&token, &session.openid, &session.session_key)
                    .await
            }
        })
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "valid": valid, "openid": session.openid }),
    ))
}
