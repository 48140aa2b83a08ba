//! The caller's session:
//! - `GET /session`: whether its session_key is still the one WeChat holds (`wxa/checksession`);
//!   a key WeChat no longer holds revokes the session (only a new login helps).
//! - `POST /session/reset`: WeChat issues a new session key (`wxa/resetusersessionkey`), stored in
//!   place. The key itself is never returned. A key WeChat refuses revokes the session.
//! - `POST /logout`: deletes the session; the token stops working at once.

use crate::at_init::AtInit;
use lambda_http::Request;
use lambda_http::http::StatusCode;

use crate::api::error::session_key_expired;
use crate::api::response::json_response;
use crate::config::Parts;
use crate::function::{Answer, Entry, Function, Route};
use crate::store::sessions::Session;
use crate::token::TokenError;
use crate::wechat::WechatError;
use crate::{ApiError, AppState, authed};

pub const FUNCTION: Function = Function {
    name: "session",
    parts: Parts {
        sessions: true,
        wechat: true,
        access_token: true,
        ..Parts::NONE
    },
    // GET /session calls checksession with the access token.
    at_init: AtInit {
        dynamodb: true,
        access_token: true,
        wechat: true,
        ..AtInit::NOTHING
    },
    entry: Entry::Routes(&[
        Route::get("/session", authed!(check)),
        Route::post("/session/reset", authed!(reset_key)),
        Route::post("/logout", authed!(logout)),
    ]),
};

async fn check(state: &AppState, session: &Session, _req: &Request) -> Answer {
    let valid = state.wechat()?.check_session(session).await?;
    if !valid {
        // Data the phone sends now is sealed under a key this session does not hold.
        state.sessions()?.revoke_stale(session).await?;
        tracing::info!(openid = %session.openid, "stale session revoked");
    }
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "valid": valid, "openid": session.openid }),
    ))
}

async fn reset_key(state: &AppState, session: &Session, _req: &Request) -> Answer {
    let sessions = state.sessions()?;
    let new_key = match state.wechat()?.reset_session_key(session).await {
        Ok(key) => key,
        // WeChat does not recognise the key we hold: only a new wx.login helps.
        Err(TokenError::Wechat(WechatError::InvalidSignature)) => {
            sessions.revoke_stale(session).await?;
            return Err(session_key_expired().with_detail("resetusersessionkey refused the stored key (87009)"));
        }
        Err(other) => return Err(other.into()),
    };
    if !sessions.replace_session_key(session, &new_key).await? {
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

async fn logout(state: &AppState, session: &Session, _req: &Request) -> Answer {
    state.sessions()?.revoke(session).await?;
    tracing::info!(openid = %session.openid, "logged out");
    let mut response = lambda_http::Response::new(lambda_http::Body::Empty);
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok(response)
}
