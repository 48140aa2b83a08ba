//! `POST /qrcode {"scene", "page"?, "width"?, "env_version"?, "check_path"?, "is_hyaline"?}` →
//! the mini-program code image (`wxa/getwxacodeunlimit`) as a binary response.
//!
//! Parameters are checked before WeChat is called, and the same request within
//! `QRCODE_CACHE_TTL_SECS` is served from the container's memory: a popular share page must not
//! burn the 5000/minute quota. (Memory rather than a DynamoDB item: a hit costs no round trip and
//! a miss no write; the price is one WeChat call per container per code per TTL.)

use crate::at_init::AtInit;
use std::sync::Arc;

use lambda_http::http::{HeaderValue, StatusCode, header};
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};

use crate::api::request::{parse_json_body, present};
use crate::config::Parts;
use crate::function::{Answer, Entry, Function, Route};
use crate::redacted::Secret;
use crate::store::sessions::Session;
use crate::token::TokenError;
use crate::wechat::WechatError;
use crate::{ApiError, AppState, authed};

pub const FUNCTION: Function = Function {
    name: "qrcode",
    parts: Parts {
        sessions: true,
        wechat: true,
        access_token: true,
        qrcode_cache: true,
        ..Parts::NONE
    },
    at_init: AtInit {
        dynamodb: true,
        access_token: true,
        wechat: true,
        ..AtInit::NOTHING
    },
    entry: Entry::Routes(&[Route::post("/qrcode", authed!(qrcode))]),
};

/// Characters WeChat allows in a scene besides letters and digits.
const SCENE_EXTRA: &str = "!#$&'()*+,/:;=?@-._~";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QrcodeRequest {
    scene: String,
    #[serde(default, deserialize_with = "present")]
    page: Option<String>,
    /// Any JSON number: `430.0` is the integer 430 (JSON Schema's `integer` takes it too).
    #[serde(default, deserialize_with = "present")]
    width: Option<f64>,
    #[serde(default, deserialize_with = "present")]
    env_version: Option<String>,
    #[serde(default, deserialize_with = "present")]
    check_path: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    is_hyaline: Option<bool>,
}

/// Exactly what is sent to WeChat; its JSON text is also the cache key.
#[derive(Serialize)]
struct WxacodeRequest<'a> {
    scene: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    page: &'a str,
    width: u32,
    env_version: &'a str,
    check_path: bool,
    is_hyaline: bool,
}

fn validate(req: &QrcodeRequest) -> Result<WxacodeRequest<'_>, ApiError> {
    let bad = |message: &str| ApiError::bad_request("invalid_request", message);
    let scene = req.scene.as_str();
    if scene.is_empty()
        || scene.len() > 32
        || !scene
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || SCENE_EXTRA.contains(c))
    {
        return Err(bad(
            "scene must be 1 to 32 characters: letters, digits and !#$&'()*+,/:;=?@-._~",
        ));
    }
    let page = req.page.as_deref().unwrap_or_default();
    if page.starts_with('/')
        || page.len() > 128
        || !page.bytes().all(|b| b.is_ascii_alphanumeric() || b"/_-.".contains(&b))
    {
        return Err(bad("page must be a page path such as pages/index/index (no leading /)"));
    }
    let width = req.width.unwrap_or(430.0);
    if width.fract() != 0.0 || !(280.0..=1280.0).contains(&width) {
        return Err(bad("width must be a whole number between 280 and 1280"));
    }
    let width = width as u32;
    let env_version = req.env_version.as_deref().unwrap_or("release");
    if !matches!(env_version, "release" | "trial" | "develop") {
        return Err(bad("env_version must be release, trial or develop"));
    }
    Ok(WxacodeRequest {
        scene,
        page,
        width,
        env_version,
        check_path: req.check_path.unwrap_or(true),
        is_hyaline: req.is_hyaline.unwrap_or(false),
    })
}

async fn qrcode(state: &AppState, _session: &Session, req: &Request) -> Answer {
    let body: QrcodeRequest = parse_json_body(req)?;
    let wx_request = serde_json::to_value(validate(&body)?).expect("plain fields serialize");
    let key = wx_request.to_string();
    if let Some(image) = state.qrcodes.get(&key) {
        return Ok(image_response(&image, "hit", state));
    }
    let wechat = state.wechat()?;
    let image = wechat
        .tokens()?
        .with_token(|token: Secret| {
            let (client, wx_request) = (&wechat.client, &wx_request);
            async move { client.get_wxa_code_unlimit(&token, wx_request).await }
        })
        .await
        .map_err(|e| match e {
            TokenError::Wechat(WechatError::Other { errcode: 40169, .. }) => {
                ApiError::bad_request("invalid_scene", "WeChat rejected the scene (40169)")
            }
            TokenError::Wechat(WechatError::Other { errcode: 41030, .. }) => ApiError::bad_request(
                "invalid_page",
                "the page is not in the released version (41030): publish it, or send check_path: false",
            ),
            TokenError::Wechat(WechatError::Other { errcode: 45009, .. }) => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "quota_exceeded",
                "WeChat's quota for mini-program codes is used up (45009): try again later",
            ),
            other => other.into(),
        })?;
    let image = Arc::new(image);
    state.qrcodes.put(key, image.clone());
    Ok(image_response(&image, "miss", state))
}

fn image_response(image: &[u8], cache: &'static str, state: &AppState) -> Response<Body> {
    let content_type = if image.starts_with(b"\x89PNG") {
        "image/png"
    } else {
        "image/jpeg"
    };
    let mut response = Response::new(Body::Binary(image.to_vec()));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    let max_age = state.config.qrcode_cache_ttl.as_secs();
    if let Ok(value) = HeaderValue::from_str(&format!("private, max-age={max_age}")) {
        headers.insert(header::CACHE_CONTROL, value);
    }
    headers.insert("x-cache", HeaderValue::from_static(cache));
    response
}
