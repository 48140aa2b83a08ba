//! Links that open the mini program from outside WeChat: the encrypted URL Scheme
//! (`weixin://dl/business/?t=…`), the URL Link (`https://wxaurl.cn/…`) and the Short Link
//! (`#小程序://…`). Pages must be in the released version, validity is at most 30 days, and the
//! app has daily quotas (schemes and URL links share one), which tests can lower.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Shared;
use crate::api::{begin_json, wx_error};
use crate::security::WORDS;
use crate::state::{PAGES, SimState, random_text};

/// A link is valid at most this long, and at least a minute.
pub const MAX_VALIDITY_SECS: i64 = 30 * 86_400;
/// The mini program's name, as Short Links show it.
pub const APP_NAME: &str = "小程序示例";
/// Characters a `query` may have.
const QUERY_CHARS: &str = "!#$&'()*+,/:;=?@-._~%";

pub struct LinkState {
    /// Whether the mini program has a released version (85079 otherwise).
    released: bool,
    /// URL Schemes and URL Links a day (WeChat: 500,000).
    daily_limit: u64,
    /// Short Links a day (WeChat: 10,000,000).
    shortlink_daily_limit: u64,
    /// Permanent Short Links ever (WeChat: 100,000).
    permanent_limit: u64,
    /// The day (China time) the daily counts are of.
    day: i64,
    daily_used: u64,
    shortlink_daily_used: u64,
    permanent_used: u64,
}

impl Default for LinkState {
    fn default() -> Self {
        Self {
            released: true,
            daily_limit: 500_000,
            shortlink_daily_limit: 10_000_000,
            permanent_limit: 100_000,
            day: 0,
            daily_used: 0,
            shortlink_daily_used: 0,
            permanent_used: 0,
        }
    }
}

impl LinkState {
    /// Starts the daily counts again on a new day in China.
    fn roll(&mut self, now: i64) {
        let day = (now + 8 * 3600).div_euclid(86_400);
        if day != self.day {
            self.day = day;
            self.daily_used = 0;
            self.shortlink_daily_used = 0;
        }
    }

    fn summary(&self) -> Value {
        json!({
            "released": self.released, "daily_limit": self.daily_limit, "daily_used": self.daily_used,
            "shortlink_daily_limit": self.shortlink_daily_limit, "shortlink_daily_used": self.shortlink_daily_used,
            "permanent_limit": self.permanent_limit, "permanent_used": self.permanent_used,
        })
    }
}

type Params = Query<HashMap<String, String>>;
type Refusal = (i64, &'static str);

/// Whether `path` (without a query, a leading "/" allowed) is a page of the released version.
fn released_page(path: &str) -> bool {
    PAGES.contains(&path.trim_start_matches('/'))
}

/// The checks of a link's target: a released page or none (the home page), a query WeChat
/// accepts, a known version.
fn check_target(target: &Value) -> Result<(), Refusal> {
    let text = |k: &str| target[k].as_str().unwrap_or_default();
    if !matches!(text("env_version"), "" | "release" | "trial" | "develop") {
        return Err((85402, "invalid env_version"));
    }
    let path = text("path");
    if !path.is_empty() && !released_page(path) {
        return Err((40165, "invalid weapp pagepath"));
    }
    let query = text("query");
    if query.chars().count() > 1024
        || !query
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || QUERY_CHARS.contains(c))
    {
        return Err((40212, "invalid query"));
    }
    Ok(())
}

/// When a scheme or URL link expires: `expire_type` 1 counts `expire_interval` days, 0 takes
/// `expire_time`; 1 minute to 30 days (85401), 30 days when nothing is said.
fn expiry(req: &Value, now: i64) -> Result<i64, Refusal> {
    const OUT_OF_RANGE: Refusal = (85401, "time limit between 1min and 30days");
    match req["expire_type"].as_u64().unwrap_or(0) {
        1 => match req["expire_interval"].as_i64() {
            Some(days @ 1..=30) => Ok(now + days * 86_400),
            _ => Err(OUT_OF_RANGE),
        },
        0 => match req["expire_time"].as_i64() {
            Some(at) if (60..=MAX_VALIDITY_SECS).contains(&(at - now)) => Ok(at),
            Some(_) => Err(OUT_OF_RANGE),
            None if req["is_expire"].as_bool() == Some(true) => Err(OUT_OF_RANGE),
            None => Ok(now + MAX_VALIDITY_SECS),
        },
        _ => Err((47001, "data format error")),
    }
}

/// A scheme or URL link: released app, target, validity, then the shared daily quota (44993).
fn issue(sim: &mut SimState, target: &Value, req: &Value) -> Result<(), Refusal> {
    if !sim.links.released {
        return Err((85079, "miniprogram has no online release"));
    }
    check_target(target)?;
    let now = sim.now();
    expiry(req, now)?;
    let links = &mut sim.links;
    links.roll(now);
    if links.daily_used >= links.daily_limit {
        return Err((44993, "reach max api day frequence limit"));
    }
    links.daily_used += 1;
    Ok(())
}

/// `POST /wxa/generatescheme?access_token=` `{jump_wxa? {path, query, env_version}, is_expire?,
/// expire_type?, expire_time | expire_interval}` → `{openlink}`.
pub async fn generatescheme(State(state): State<Shared>, Query(params): Params, body: Bytes) -> Response {
    let req = match begin_json(&state, &params, "generatescheme", &body).await {
        Ok(req) => req,
        Err(response) => return response,
    };
    let target = match &req["jump_wxa"] {
        Value::Null => json!({}),
        target @ Value::Object(_) => target.clone(),
        _ => return wx_error(47001, "data format error"),
    };
    match issue(&mut state.lock().unwrap(), &target, &req) {
        Ok(()) => {
            let openlink = format!("weixin://dl/business/?t={}", random_text(13));
            Json(json!({ "errcode": 0, "errmsg": "ok", "openlink": openlink })).into_response()
        }
        Err((errcode, errmsg)) => wx_error(errcode, errmsg),
    }
}

/// `POST /wxa/generate_urllink?access_token=` `{path?, query?, env_version?, is_expire?,
/// expire_type?, expire_time | expire_interval, cloud_base?}` → `{url_link}`.
pub async fn generate_urllink(State(state): State<Shared>, Query(params): Params, body: Bytes) -> Response {
    let req = match begin_json(&state, &params, "generate_urllink", &body).await {
        Ok(req) => req,
        Err(response) => return response,
    };
    match issue(&mut state.lock().unwrap(), &req, &req) {
        Ok(()) => {
            let url_link = format!("https://wxaurl.cn/{}", random_text(11));
            Json(json!({ "errcode": 0, "errmsg": "ok", "url_link": url_link })).into_response()
        }
        Err((errcode, errmsg)) => wx_error(errcode, errmsg),
    }
}

/// The checks of a Short Link; counts it.
fn shorten(sim: &mut SimState, req: &Value) -> Result<(), Refusal> {
    let page_url = req["page_url"].as_str().unwrap_or_default();
    if page_url.is_empty() {
        return Err((47001, "data format error"));
    }
    let path = page_url.split('?').next().unwrap_or_default();
    if !sim.links.released || !released_page(path) || page_url.chars().count() > 1024 {
        return Err((40066, "invalid url"));
    }
    // A title must pass the content check (a longer one is cut with "...", not refused).
    let title = req["page_title"].as_str().unwrap_or_default().to_ascii_lowercase();
    if WORDS.iter().any(|(word, _, _)| title.contains(word)) {
        return Err((40225, "invalid page title"));
    }
    let now = sim.now();
    let links = &mut sim.links;
    links.roll(now);
    let permanent = req["is_permanent"].as_bool().unwrap_or(false);
    if permanent && links.permanent_used >= links.permanent_limit {
        return Err((85400, "reach max long time quota limit"));
    }
    if links.shortlink_daily_used >= links.shortlink_daily_limit {
        return Err((45009, "reach max api daily quota limit"));
    }
    links.shortlink_daily_used += 1;
    links.permanent_used += u64::from(permanent);
    Ok(())
}

/// `POST /wxa/genwxashortlink?access_token=` `{page_url, page_title?, is_permanent?}` → `{link}`.
pub async fn genwxashortlink(State(state): State<Shared>, Query(params): Params, body: Bytes) -> Response {
    let req = match begin_json(&state, &params, "genwxashortlink", &body).await {
        Ok(req) => req,
        Err(response) => return response,
    };
    match shorten(&mut state.lock().unwrap(), &req) {
        Ok(()) => {
            let link = format!("#小程序://{APP_NAME}/{}", random_text(13));
            Json(json!({ "errcode": 0, "errmsg": "ok", "link": link })).into_response()
        }
        Err((errcode, errmsg)) => wx_error(errcode, errmsg),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinksBody {
    #[serde(default)]
    released: Option<bool>,
    #[serde(default)]
    daily_limit: Option<u64>,
    #[serde(default)]
    shortlink_daily_limit: Option<u64>,
    #[serde(default)]
    permanent_limit: Option<u64>,
}

/// `POST /__sim/links {"released"?, "daily_limit"?, "shortlink_daily_limit"?, "permanent_limit"?}`:
/// the app's release and link quotas; answers them with what is used today.
pub async fn configure(State(state): State<Shared>, Json(body): Json<LinksBody>) -> Response {
    let mut sim = state.lock().unwrap();
    let now = sim.now();
    let links = &mut sim.links;
    links.roll(now);
    links.released = body.released.unwrap_or(links.released);
    links.daily_limit = body.daily_limit.unwrap_or(links.daily_limit);
    links.shortlink_daily_limit = body.shortlink_daily_limit.unwrap_or(links.shortlink_daily_limit);
    links.permanent_limit = body.permanent_limit.unwrap_or(links.permanent_limit);
    Json(links.summary()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_is_one_minute_to_thirty_days() {
        let now = 1_800_000_000;
        let at = |req: Value| expiry(&req, now).map_err(|(code, _)| code);
        assert_eq!(at(json!({})), Ok(now + MAX_VALIDITY_SECS));
        assert_eq!(
            at(json!({"expire_type": 1, "expire_interval": 30})),
            Ok(now + MAX_VALIDITY_SECS)
        );
        assert_eq!(at(json!({"expire_type": 1, "expire_interval": 31})), Err(85401));
        assert_eq!(at(json!({"expire_type": 1})), Err(85401));
        assert_eq!(at(json!({"is_expire": true, "expire_time": now + 60})), Ok(now + 60));
        assert_eq!(at(json!({"is_expire": true, "expire_time": now + 59})), Err(85401));
        assert_eq!(at(json!({"is_expire": true})), Err(85401));
        assert_eq!(at(json!({"expire_time": now + MAX_VALIDITY_SECS + 1})), Err(85401));
    }

    #[test]
    fn targets_are_released_pages_with_plain_queries() {
        let code = |t: Value| check_target(&t).map_err(|(code, _)| code);
        assert_eq!(
            code(json!({"path": "/pages/detail/detail", "query": "id=1&from=sms"})),
            Ok(())
        );
        assert_eq!(code(json!({"path": "pages/nope/nope"})), Err(40165));
        assert_eq!(code(json!({"path": "pages/detail/detail?id=1"})), Err(40165));
        assert_eq!(code(json!({"query": "a=中文"})), Err(40212));
        assert_eq!(code(json!({"env_version": "beta"})), Err(85402));
    }
}
