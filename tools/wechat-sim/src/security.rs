//! Content security and risk (内容安全, 安全风控): `msg_sec_check` judges a text at once,
//! `media_check_async` an image or audio later, in a `wxa_media_check` push; both judge by a fixed
//! word list ([`WORDS`]) and want a user active in the last 2 hours. `getuserriskrank` rates a
//! user 0 to 4, the same for the same openid unless a test sets it.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Shared;
use crate::api::{begin_json, wx_error};
use crate::crypto::{random_bytes, sorted_sha1};
use crate::pay::admin_error;
use crate::push::{event, push};
use crate::state::SimState;

/// What the simulator's content check finds, (word, suggest, label), matched without regard to
/// ASCII case. The first is WeChat's own test string for the check.
pub const WORDS: [(&str, &str, u32); 7] = [
    ("特3456书yuuo莞6543李zxcz蒜7782法fgnv级", "risky", 20001),
    ("sim-politics", "risky", 20001),
    ("sim-porn", "risky", 20002),
    ("sim-abuse", "risky", 20003),
    ("sim-crime", "risky", 20006),
    ("sim-advert", "review", 10001),
    ("sim-review", "review", 21000),
];
/// Texts longer than this are refused.
pub const MAX_CONTENT_CHARS: usize = 2500;
/// An asynchronous media check is pushed this long after it was asked for, on the simulator's
/// clock (WeChat: within 30 minutes), or when a test delivers it.
pub const MEDIA_CHECK_AFTER_SECS: i64 = 60;

struct MediaCheck {
    openid: String,
    media_url: String,
    due_at: i64,
    delivered: bool,
}

#[derive(Default)]
pub struct SecurityState {
    /// By trace_id.
    media_checks: HashMap<String, MediaCheck>,
    /// Risk ranks set by tests, by openid.
    risk_ranks: HashMap<String, u64>,
}

type Params = Query<HashMap<String, String>>;

/// The overall suggestion and label for `text`, and the words found (the worst decides:
/// risky before review before pass, 100 the label of a pass).
fn judge(text: &str) -> (&'static str, u32, Vec<(&'static str, &'static str, u32)>) {
    let lower = text.to_ascii_lowercase();
    let found: Vec<_> = WORDS.iter().copied().filter(|(w, _, _)| lower.contains(w)).collect();
    let worst = found
        .iter()
        .find(|(_, s, _)| *s == "risky")
        .or_else(|| found.first())
        .map_or(("pass", 100), |(_, s, l)| (*s, *l));
    (worst.0, worst.1, found)
}

/// A trace id as WeChat writes them (`60ae120f-371d5872-7941a05b`).
fn trace_id() -> String {
    let bytes = random_bytes::<12>();
    format!(
        "{}-{}-{}",
        hex::encode(&bytes[..4]),
        hex::encode(&bytes[4..8]),
        hex::encode(&bytes[8..])
    )
}

/// The checks both content APIs make of `openid` and `scene` (1 to 4).
fn user_and_scene(sim: &SimState, req: &Value) -> Result<(), (i64, &'static str)> {
    sim.active_user(req["openid"].as_str())?;
    if !matches!(req["scene"].as_u64(), Some(1..=4)) {
        return Err((40129, "invalid scene"));
    }
    Ok(())
}

/// `POST /wxa/msg_sec_check?access_token=`: version 2 `{content, version: 2, openid, scene,
/// title?, nickname?, signature?}` → `{result {suggest, label}, detail, trace_id}`; without
/// version 2, the retired version 1 `{content}` → ok or 87014.
pub async fn msg_sec_check(State(state): State<Shared>, Query(params): Params, body: Bytes) -> Response {
    let req = match begin_json(&state, &params, "msg_sec_check", &body).await {
        Ok(req) => req,
        Err(response) => return response,
    };
    let Some(content) = req["content"].as_str() else {
        return wx_error(47001, "data format error");
    };
    if req["version"].as_u64() != Some(2) {
        let (suggest, _, _) = judge(content);
        return if suggest == "risky" {
            wx_error(87014, "risky content")
        } else {
            Json(json!({ "errcode": 0, "errmsg": "ok" })).into_response()
        };
    }
    if let Err((errcode, errmsg)) = user_and_scene(&state.lock().unwrap(), &req) {
        return wx_error(errcode, errmsg);
    }
    if content.chars().count() > MAX_CONTENT_CHARS {
        return wx_error(47001, "data format error");
    }
    let extra = ["title", "nickname", "signature"].map(|k| req[k].as_str().unwrap_or_default());
    let (suggest, label, found) = judge(&[content, extra[0], extra[1], extra[2]].join("\n"));
    let mut detail =
        vec![json!({ "strategy": "content_model", "errcode": 0, "suggest": suggest, "label": label, "prob": 90 })];
    detail.extend(found.iter().map(|(word, suggest, label)| {
        json!({ "strategy": "keyword", "errcode": 0, "suggest": suggest, "label": label, "level": 90, "keyword": word })
    }));
    Json(json!({
        "errcode": 0, "errmsg": "ok", "result": { "suggest": suggest, "label": label },
        "detail": detail, "trace_id": trace_id(),
    }))
    .into_response()
}

/// `POST /wxa/media_check_async?access_token=` `{media_url, media_type: 1 audio | 2 image,
/// version: 2, openid, scene}` → `{trace_id}`; the verdict comes in a `wxa_media_check` push.
pub async fn media_check_async(State(state): State<Shared>, Query(params): Params, body: Bytes) -> Response {
    let req = match begin_json(&state, &params, "media_check_async", &body).await {
        Ok(req) => req,
        Err(response) => return response,
    };
    let mut sim = state.lock().unwrap();
    let Some(media_url) = req["media_url"].as_str().filter(|u| !u.is_empty()) else {
        return wx_error(47001, "data format error");
    };
    if req["version"].as_u64() != Some(2) {
        return wx_error(47001, "data format error");
    }
    if !matches!(req["media_type"].as_u64(), Some(1 | 2)) {
        return wx_error(40004, "invalid media type");
    }
    if let Err((errcode, errmsg)) = user_and_scene(&sim, &req) {
        return wx_error(errcode, errmsg);
    }
    let trace_id = trace_id();
    let check = MediaCheck {
        openid: req["openid"].as_str().unwrap_or_default().to_owned(),
        media_url: media_url.to_owned(),
        due_at: sim.now() + MEDIA_CHECK_AFTER_SECS,
        delivered: false,
    };
    sim.security.media_checks.insert(trace_id.clone(), check);
    Json(json!({ "errcode": 0, "errmsg": "ok", "trace_id": trace_id })).into_response()
}

/// Pushes the verdict of the check `trace_id` (the label as text with `label_as_string`, as some
/// real pushes have it); answers `{trace_id, result, push}`, or `None` for an unknown trace_id.
async fn deliver(state: &Shared, trace_id: &str, label_as_string: bool) -> Option<Value> {
    let (openid, media_url, app_id) = {
        let mut sim = state.lock().unwrap();
        let app_id = sim.config.app_id.clone();
        let check = sim.security.media_checks.get_mut(trace_id)?;
        check.delivered = true;
        (check.openid.clone(), check.media_url.clone(), app_id)
    };
    let (suggest, label, _) = judge(&media_url);
    let label = if label_as_string {
        json!(label.to_string())
    } else {
        json!(label)
    };
    let result = json!({ "suggest": suggest, "label": label });
    let pushed = push(state, |_| {
        let mut message = event(&openid, "wxa_media_check");
        let fields = json!({
            "appid": app_id, "trace_id": trace_id, "version": 2, "errcode": 0, "errmsg": "ok",
            "detail": [{ "strategy": "content_model", "errcode": 0, "suggest": suggest, "label": label, "prob": 90 }],
            "result": result,
        });
        message.extend(fields.as_object().cloned().unwrap_or_default());
        message
    })
    .await;
    Some(json!({ "trace_id": trace_id, "result": result, "push": pushed }))
}

/// After the clock moved: pushes the verdicts now due; what each got.
pub async fn deliver_due(state: &Shared) -> Vec<Value> {
    let due: Vec<String> = {
        let sim = state.lock().unwrap();
        let now = sim.now();
        let mut due: Vec<(i64, String)> = sim
            .security
            .media_checks
            .iter()
            .filter(|(_, c)| !c.delivered && c.due_at <= now)
            .map(|(id, c)| (c.due_at, id.clone()))
            .collect();
        due.sort();
        due.into_iter().map(|(_, id)| id).collect()
    };
    let mut delivered = Vec::new();
    for trace_id in due {
        delivered.extend(deliver(state, &trace_id, false).await);
    }
    delivered
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverBody {
    trace_id: String,
    #[serde(default)]
    label_as_string: bool,
}

/// `POST /__sim/media-check/deliver {"trace_id", "label_as_string"?}`: WeChat finishes the check
/// now (again, if it was pushed before: a duplicate push).
pub async fn deliver_now(State(state): State<Shared>, Json(body): Json<DeliverBody>) -> Response {
    match deliver(&state, &body.trace_id, body.label_as_string).await {
        Some(answer) => Json(answer).into_response(),
        None => admin_error(StatusCode::NOT_FOUND, "no media check with that trace_id"),
    }
}

/// The rank a user has unless a test set one: fixed by the openid, mostly 0.
fn natural_rank(openid: &str) -> u64 {
    let digit = u64::from_str_radix(&sorted_sha1(&[openid])[..2], 16).unwrap_or(0) % 10;
    match digit {
        0..=4 => 0,
        5 | 6 => 1,
        7 => 2,
        8 => 3,
        _ => 4,
    }
}

fn rank_of(sim: &SimState, openid: &str) -> u64 {
    let set = sim.security.risk_ranks.get(openid).copied();
    set.unwrap_or_else(|| natural_rank(openid))
}

/// `POST /wxa/getuserriskrank?access_token=` `{appid, openid, scene: 0 sign-up | 1 marketing
/// cheat | 2 UGC, client_ip, mobile_no?, email_address?, extended_info?, is_test?}` →
/// `{risk_rank: 0..4, unoin_id}`.
pub async fn getuserriskrank(State(state): State<Shared>, Query(params): Params, body: Bytes) -> Response {
    let req = match begin_json(&state, &params, "getuserriskrank", &body).await {
        Ok(req) => req,
        Err(response) => return response,
    };
    let sim = state.lock().unwrap();
    let text = |k: &str| req[k].as_str().filter(|v| !v.is_empty());
    let (Some(appid), Some(openid), Some(_client_ip), Some(scene)) =
        (text("appid"), text("openid"), text("client_ip"), req["scene"].as_u64())
    else {
        return wx_error(47001, "data format error");
    };
    if appid != sim.config.app_id {
        return wx_error(43104, "The openid does not match the appid");
    }
    if scene > 2 {
        return wx_error(40129, "invalid scene");
    }
    if let Err((errcode, errmsg)) = sim.active_user(Some(openid)) {
        return wx_error(errcode, errmsg);
    }
    let rank = rank_of(&sim, openid);
    let unoin_id = u32::from_be_bytes(random_bytes::<4>()) >> 1;
    Json(json!({ "errcode": 0, "errmsg": "ok", "risk_rank": rank, "unoin_id": unoin_id })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskBody {
    openid: String,
    /// 0 to 4; null for the openid's own rank again.
    risk_rank: Option<u64>,
}

/// `POST /__sim/risk {"openid", "risk_rank"}`: the rank getuserriskrank gives this user.
pub async fn set_risk(State(state): State<Shared>, Json(body): Json<RiskBody>) -> Response {
    let mut sim = state.lock().unwrap();
    match body.risk_rank {
        Some(rank) if rank > 4 => return admin_error(StatusCode::BAD_REQUEST, "risk_rank is 0 to 4"),
        Some(rank) => sim.security.risk_ranks.insert(body.openid.clone(), rank),
        None => sim.security.risk_ranks.remove(&body.openid),
    };
    let rank = rank_of(&sim, &body.openid);
    Json(json!({ "openid": body.openid, "risk_rank": rank })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_word_decides() {
        assert_eq!(judge("hello").0, "pass");
        assert_eq!(judge("a SIM-ADVERT here").1, 10001);
        let (suggest, label, found) = judge("sim-advert and sim-porn");
        assert_eq!((suggest, label, found.len()), ("risky", 20002, 2));
        assert_eq!(judge(WORDS[0].0).1, 20001);
    }
}
