//! `POST /login {"code"}`: exchanges a `wx.login` code for our own login token.

use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};

use crate::http::{json_response, one_time_code, parse_json_body, require_method};
use crate::session::now_unix;
use crate::wechat::WechatError;
use crate::{ApiError, AppState};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    code: String,
}

#[derive(Serialize)]
struct LoginResponse<'a> {
    token: &'a str,
    expires_in: u64,
    openid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    unionid: Option<&'a str>,
}

pub async fn handle(state: &AppState, req: Request) -> Response<Body> {
    super::respond(login(state, &req).await)
}

async fn login(state: &AppState, req: &Request) -> Result<Response<Body>, ApiError> {
    require_method(req, Method::POST)?;
    let body: LoginRequest = parse_json_body(req)?;
    let code = one_time_code(&body.code, "wx.login")?;

    let secrets = state.secrets.get().await?;
    let exchanged = match state.wechat.jscode2session(&secrets.app_secret, code).await {
        // WeChat checks the credentials before it looks at the code, so the code is still
        // unused: after a secret rotation, one more exchange with the new secret is safe. Every
        // other failure is final, since a code is single-use.
        Err(WechatError::InvalidAppSecret) => match state.secrets.refresh_after_rejection(&secrets).await? {
            Some(fresh) => state.wechat.jscode2session(&fresh.app_secret, code).await,
            None => Err(WechatError::InvalidAppSecret),
        },
        other => other,
    }?;

    let issued = state
        .sessions
        .create(
            &exchanged.openid,
            exchanged.unionid.as_deref(),
            &exchanged.session_key,
            state.config.session_ttl,
        )
        .await?;
    tracing::info!(openid = %exchanged.openid, "login ok");
    Ok(json_response(
        StatusCode::OK,
        &LoginResponse {
            token: issued.token.expose(),
            expires_in: issued.expires_at.saturating_sub(now_unix()),
            openid: &exchanged.openid,
            unionid: exchanged.unionid.as_deref(),
        },
    ))
}
