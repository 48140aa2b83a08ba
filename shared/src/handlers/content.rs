//! Content security for what users write and upload, checked with the caller's own openid:
//! - `POST /content/check {content, scene}` → `msg_sec_check` (v2) → `{"suggest", "label"}`;
//! - `POST /content/check-media {media_url, media_type, scene}` → `media_check_async` →
//!   `{"trace_id"}`; the verdict comes later by message push (`wxa_media_check`);
//! - `GET /content/check-media/{trace_id}` → `pending`, or the verdict. A caller sees only their
//!   own trace ids.

use crate::at_init::AtInit;
use lambda_http::Request;
use lambda_http::http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use crate::api::request::{parse_json_body, whole_u8};
use crate::api::response::json_response;
use crate::clock::now_unix;
use crate::config::Parts;
use crate::function::{Answer, Entry, Function, Route};
use crate::store::sessions::Session;
use crate::{ApiError, AppState, authed};

pub const FUNCTION: Function = Function {
    name: "content",
    parts: Parts {
        sessions: true,
        wechat: true,
        access_token: true,
        messages: true,
        budget: true,
        media_check: true,
        ..Parts::NONE
    },
    at_init: AtInit {
        dynamodb: true,
        access_token: true,
        wechat: true,
        ..AtInit::NOTHING
    },
    entry: Entry::Routes(&[
        Route::post("/content/check", authed!(check_text)),
        Route::post("/content/check-media", authed!(check_media)),
        Route::get("/content/check-media/{trace_id}", authed!(media_verdict)),
    ]),
};

/// WeChat's limit for one text check.
pub const MAX_CONTENT_CHARS: usize = 2500;

/// 1 profile, 2 comment, 3 forum, 4 social log.
fn checked_scene(scene: u8) -> Result<u8, ApiError> {
    if (1..=4).contains(&scene) {
        Ok(scene)
    } else {
        Err(ApiError::bad_request(
            "invalid_request",
            "scene must be 1 (profile), 2 (comment), 3 (forum) or 4 (social log)",
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TextCheck {
    content: String,
    #[serde(deserialize_with = "whole_u8")]
    scene: u8,
}

async fn check_text(state: &AppState, session: &Session, req: &Request) -> Answer {
    let body: TextCheck = parse_json_body(req)?;
    let scene = checked_scene(body.scene)?;
    let chars = body.content.chars().count();
    if chars == 0 || chars > MAX_CONTENT_CHARS {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("content must be 1 to {MAX_CONTENT_CHARS} characters"),
        ));
    }
    // Every check spends the app's msg_sec_check quota: each user gets a share.
    state.spend_budget("content", &session.openid).await?;
    let request = json!({ "content": body.content, "version": 2, "openid": session.openid, "scene": scene });
    let answer = call(state, "/wxa/msg_sec_check", &request).await?;
    let result = &answer["result"];
    Ok(json_response(
        StatusCode::OK,
        &json!({ "suggest": result["suggest"], "label": result["label"], "trace_id": answer["trace_id"] }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MediaCheck {
    media_url: String,
    /// 1 audio, 2 image.
    #[serde(deserialize_with = "whole_u8")]
    media_type: u8,
    #[serde(deserialize_with = "whole_u8")]
    scene: u8,
}

async fn check_media(state: &AppState, session: &Session, req: &Request) -> Answer {
    let body: MediaCheck = parse_json_body(req)?;
    let scene = checked_scene(body.scene)?;
    if !(1..=2).contains(&body.media_type) {
        return Err(ApiError::bad_request(
            "invalid_request",
            "media_type must be 1 (audio) or 2 (image)",
        ));
    }
    let url = body.media_url.as_str();
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    // URLs are ASCII: anything else is percent-encoded.
    if !rest.is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_graphic())) || url.len() > 1024 {
        return Err(ApiError::bad_request(
            "invalid_request",
            "media_url must be an http(s) URL of at most 1024 printable ASCII characters (percent-encode anything else)",
        ));
    }
    // A URL whose host cannot be read, or that carries credentials, names no listed host.
    let host = reqwest::Url::parse(url)
        .ok()
        .filter(|u| u.username().is_empty() && u.password().is_none())
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    // WeChat fetches the URL on our behalf: only from hosts the operator serves media from.
    if !host_allowed(&host, &state.config.media_url_hosts) {
        return Err(ApiError::bad_request(
            "media_host_not_allowed",
            "media_url must be on a host this server checks media from",
        )
        .with_detail(format_args!("{host} is not in MEDIA_URL_HOSTS")));
    }
    state.spend_budget("content", &session.openid).await?;
    let request = json!({ "media_url": url, "media_type": body.media_type, "version": 2, "openid": session.openid, "scene": scene });
    let answer = call(state, "/wxa/media_check_async", &request).await?;
    let trace_id = answer["trace_id"]
        .as_str()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::from(crate::wechat::WechatError::BadResponse("no trace_id".into())))?;
    state
        .messages()?
        .record_media_check(trace_id, &session.openid, now_unix())
        .await?;
    Ok(json_response(StatusCode::OK, &json!({ "trace_id": trace_id })))
}

/// Whether `host` is one of `allowed` (`example.com`), or below one given as `*.example.com`.
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let host = host.to_ascii_lowercase();
    allowed.iter().any(|entry| match entry.strip_prefix("*.") {
        Some(parent) => host
            .strip_suffix(parent)
            .is_some_and(|below| below.len() > 1 && below.ends_with('.')),
        None => host == *entry,
    })
}

async fn media_verdict(state: &AppState, session: &Session, req: &Request) -> Answer {
    let trace_id = crate::function::path_parameter(req, "trace_id").unwrap_or_default();
    let well_formed = (1..=128).contains(&trace_id.len())
        && trace_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
    if !well_formed {
        return Err(ApiError::bad_request(
            "invalid_request",
            "trace_id must be the trace_id of a check",
        ));
    }
    let check = state
        .messages()?
        .media_check(&trace_id)
        .await?
        // Another user's check is as unknown as one that does not exist.
        .filter(|c| c.openid.as_deref() == Some(session.openid.as_str()))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "media_check_not_found",
                "no check of yours has this trace_id",
            )
        })?;
    let mut answer = json!({ "trace_id": trace_id, "status": check.status });
    if let Some(suggest) = check.suggest {
        answer["suggest"] = json!(suggest);
    }
    if let Some(label) = check.label {
        answer["label"] = json!(label);
    }
    Ok(json_response(StatusCode::OK, &answer))
}

/// A content-security API with the access token.
async fn call(state: &AppState, path: &str, body: &serde_json::Value) -> Result<serde_json::Value, ApiError> {
    use crate::token::TokenError;
    use crate::wechat::WechatError;
    state.wechat()?.call(path, body).await.map_err(|e| match e {
        // WeChat checks content only for a user active in the last 2 hours.
        TokenError::Wechat(WechatError::Other { errcode: 61010, .. }) => ApiError::new(
            StatusCode::CONFLICT,
            "user_not_active",
            "WeChat checks content only for a user who used the mini-program within 2 hours (61010): log in again",
        ),
        other => other.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::host_allowed;

    #[test]
    fn only_listed_hosts_and_their_subdomains_when_starred() {
        let allowed = ["cdn.example.com".to_owned(), "*.img.example.net".to_owned()];
        for host in [
            "cdn.example.com",
            "CDN.example.com",
            "a.img.example.net",
            "b.a.img.example.net",
        ] {
            assert!(host_allowed(host, &allowed), "{host}");
        }
        for host in [
            "example.com",
            "cdn.example.com.evil",
            "evilcdn.example.com",
            "img.example.net",
            "ximg.example.net",
            "169.254.169.254",
        ] {
            assert!(!host_allowed(host, &allowed), "{host}");
        }
        assert!(!host_allowed("cdn.example.com", &[]));
    }
}
