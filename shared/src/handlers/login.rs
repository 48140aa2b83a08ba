//! `POST /login {"code"}`: exchanges a `wx.login` code for our own login token.

use crate::at_init::AtInit;
use lambda_http::Request;
use lambda_http::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::api::request::{one_time_code, parse_json_body};
use crate::api::response::json_response;
use crate::clock::now_unix;
use crate::config::Parts;
use crate::function::{Answer, Entry, Function, Route};
use crate::wechat::WechatError;
use crate::{AppState, public};

pub const FUNCTION: Function = Function {
    name: "login",
    parts: Parts {
        sessions: true,
        login: true,
        wechat: true,
        ..Parts::NONE
    },
    // Every login reads the app secret, calls WeChat, then writes DynamoDB.
    at_init: AtInit {
        dynamodb: true,
        app_secret: true,
        wechat: true,
        ..AtInit::NOTHING
    },
    entry: Entry::Routes(&[Route::post("/login", public!(login))]),
};

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

async fn login(state: &AppState, req: &Request) -> Answer {
    let body: LoginRequest = parse_json_body(req)?;
    let code = one_time_code(&body.code, "wx.login")?;

    let wechat = state.wechat()?;
    let secrets = wechat.secrets.get().await?;
    let exchanged = match wechat.client.jscode2session(&secrets.app_secret, code).await {
        // WeChat checks the credentials before it looks at the code, so the code is still
        // unused: after a secret rotation, one more exchange with the new secret is safe. Every
        // other failure is final, since a code is single-use.
        Err(WechatError::InvalidAppSecret) => match wechat.secrets.refresh_after_rejection(&secrets).await? {
            Some(fresh) => wechat.client.jscode2session(&fresh.app_secret, code).await,
            None => Err(WechatError::InvalidAppSecret),
        },
        other => other,
    }?;

    let issued = state
        .sessions()?
        .create(
            &exchanged.openid,
            exchanged.unionid.as_deref(),
            &exchanged.session_key,
            state.config.session_ttl,
        )
        .await?;
    tracing::info!(openid = %exchanged.openid, "login ok");
    crate::metrics::count(crate::metrics::Metric::Logins);
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
