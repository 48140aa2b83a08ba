//! `GET /session`: whether the caller's session_key is still the one WeChat holds
//! (`wxa/checksession`). `POST /session/reset`: asks WeChat for a new session key
//! (`wxa/resetusersessionkey`) and stores it, so that a mini-program whose data no longer decrypts
//! can recover without a full `wx.login` round. The key itself is never returned.

use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};

use crate::error::session_key_expired;
use crate::http::{bearer_token, json_response};
use crate::secret::Secret;
use crate::token::TokenError;
use crate::wechat::WechatError;
use crate::{ApiError, AppState};

pub async fn handle(state: &AppState, req: Request) -> Response<Body> {
    // Deployed, the path is /session or /session/reset; locally the function URL ends in / or /reset.
    let reset = req.uri().path().trim_end_matches('/').ends_with("/reset");
    let result = match (req.method(), reset) {
        (&Method::GET, false) => check(state, &req).await,
        (&Method::POST, true) => reset_key(state, &req).await,
        _ => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "use GET /session or POST /session/reset",
        )),
    };
    super::respond(result)
}

async fn check(state: &AppState, req: &Request) -> Result<Response<Body>, ApiError> {
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

async fn reset_key(state: &AppState, req: &Request) -> Result<Response<Body>, ApiError> {
    let session = state.authenticate(req).await?;
    let new_key = state
        .tokens
        .with_token(|token: Secret| {
            let (wechat, session) = (&state.wechat, &session);
            async move {
                wechat
                    .reset_user_session_key(&token, &session.openid, &session.session_key)
                    .await
            }
        })
        .await
        .map_err(|e| match e {
            // WeChat does not recognise the key we hold: only a new wx.login helps.
            TokenError::Wechat(WechatError::InvalidSignature) => session_key_expired(),
            other => other.into(),
        })?;
    if !state.sessions.replace_session_key(bearer_token(req)?, &new_key).await? {
        return Err(ApiError::unauthorized(
            "invalid_token",
            "the login token is unknown or expired: log in again",
        ));
    }
    tracing::info!(openid = %session.openid, "session key reset");
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "valid": true, "openid": session.openid }),
    ))
}
