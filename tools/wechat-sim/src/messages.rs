//! Subscribe messages (订阅消息): a user accepts a one-time template in the mini program's popup
//! (`wx.requestSubscribeMessage`), which lets the developer send that template to them once per
//! acceptance with `POST /cgi-bin/message/subscribe/send`. WeChat tells the developer's server of
//! the popup's outcome (`subscribe_msg_popup_event`), of a user turning a template off
//! (`subscribe_msg_change_event`) and of each message sent (`subscribe_msg_sent_event`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::Shared;
use crate::api::{begin_json, wx_error};
use crate::pay::admin_error;
use crate::push::{Format, add_list, event, new_msg_id, push};
use crate::state::{PAGES, SimState};

/// Templates every simulator knows; tests register more with `/__sim/subscribe/templates`.
pub const DEFAULT_TEMPLATES: [&str; 3] = ["tpl_order_paid", "tpl_order_shipped", "tpl_refund_done"];
/// `wx.requestSubscribeMessage` asks for at most 3 templates at a time.
const MAX_TEMPLATES_PER_POPUP: usize = 3;

pub struct SubscribeState {
    templates: BTreeSet<String>,
    /// One-time authorisations not yet used, by openid and template_id.
    credits: HashMap<(String, String), u32>,
}

impl Default for SubscribeState {
    fn default() -> Self {
        Self {
            templates: DEFAULT_TEMPLATES.iter().map(|t| t.to_string()).collect(),
            credits: HashMap::new(),
        }
    }
}

impl SubscribeState {
    fn left(&self, openid: &str, template_id: &str) -> u32 {
        let key = (openid.to_owned(), template_id.to_owned());
        self.credits.get(&key).copied().unwrap_or(0)
    }
}

type Params = Query<HashMap<String, String>>;

/// Whether `value` fits the rule of a template keyword named `key` (its type is the name without
/// the trailing number: `thing1`, `amount3`, `character_string7`, …), as the send API documents
/// them. Keywords of other types are taken as they are.
fn fits(key: &str, value: &str) -> bool {
    let kind = key.trim_end_matches(|c: char| c.is_ascii_digit());
    let chars = value.chars().count();
    let cjk = |c: char| ('\u{4e00}'..='\u{9fff}').contains(&c);
    let symbol = |c: char| c.is_ascii_punctuation() || c == ' ';
    // A moment (a time of day, a date, or both); a range joins two with a half-width "~".
    let moments = |needs: &[char]| {
        value.split('~').all(|part| {
            let part = part.trim();
            part.chars().any(|c| c.is_ascii_digit())
                && part.contains(needs)
                && part.chars().all(|c| c.is_ascii_digit() || " :-/年月日".contains(c))
        })
    };
    match kind {
        "thing" => chars <= 20,
        "number" => {
            chars <= 32
                && value.chars().filter(|c| *c == '.').count() <= 1
                && value.chars().all(|c| c.is_ascii_digit() || c == '.')
        }
        "letter" => chars <= 32 && value.chars().all(|c| c.is_ascii_alphabetic()),
        "symbol" => chars <= 5 && value.chars().all(symbol),
        "character_string" => chars <= 32 && value.chars().all(|c| c.is_ascii_alphanumeric() || symbol(c)),
        "time" => moments(&[':']),
        "date" => moments(&['年', '-', '/']),
        // One currency sign, at most 10 digits (and decimals), perhaps "元".
        "amount" => {
            let rest = value.trim_end_matches('元');
            let number = rest.trim_start_matches(|c: char| !c.is_ascii_digit());
            let currency = &rest[..rest.len() - number.len()];
            let (whole, _) = number.split_once('.').unwrap_or((number, ""));
            !number.is_empty()
                && currency.chars().count() <= 1
                && !currency.chars().any(char::is_alphanumeric)
                && whole.len() <= 10
                && number.chars().filter(|c| *c == '.').count() <= 1
                && number.chars().all(|c| c.is_ascii_digit() || c == '.')
        }
        "phone_number" => chars <= 17 && value.chars().all(|c| c.is_ascii_digit() || symbol(c)),
        "car_number" => {
            let inner: Vec<char> = value.chars().collect();
            chars <= 8
                && inner
                    .iter()
                    .enumerate()
                    .all(|(i, c)| c.is_ascii_alphanumeric() || (cjk(*c) && (i == 0 || i + 1 == inner.len())))
        }
        "name" if value.chars().any(cjk) => chars <= 10,
        "name" => chars <= 20 && value.chars().all(|c| c.is_ascii_alphabetic() || symbol(c)),
        "phrase" => chars <= 5 && value.chars().all(cjk),
        _ => true,
    }
}

/// The 47003 errmsg for the first keyword whose value is missing or breaks its rule.
fn data_error(data: &Value) -> Option<String> {
    let Some(data) = data.as_object().filter(|d| !d.is_empty()) else {
        return Some("argument invalid! data is empty".into());
    };
    for (key, field) in data {
        match field["value"].as_str() {
            None | Some("") => return Some(format!("argument invalid! data.{key}.value is empty")),
            Some(value) if !fits(key, value) => return Some(format!("argument invalid! data.{key}.value invalid")),
            Some(_) => {}
        }
    }
    None
}

/// The checks of a send on the request and the world, in WeChat's order; the errcode and errmsg.
fn check_send(sim: &SimState, req: &Value) -> Result<(String, String), (i64, String)> {
    let text = |k: &str| req[k].as_str().unwrap_or_default().to_owned();
    let (touser, template_id) = (text("touser"), text("template_id"));
    if !sim.users.contains_key(&touser) {
        return Err((40003, "invalid openid".into()));
    }
    if !sim.subscribe.templates.contains(&template_id) {
        return Err((40037, "invalid template_id".into()));
    }
    let state = req["miniprogram_state"].as_str().unwrap_or("formal");
    let lang = req["lang"].as_str().unwrap_or("zh_CN");
    if !matches!(state, "developer" | "trial" | "formal") || !matches!(lang, "zh_CN" | "en_US" | "zh_HK" | "zh_TW") {
        return Err((47001, "data format error".into()));
    }
    if let Some(error) = data_error(&req["data"]) {
        return Err((47003, error));
    }
    // The page must exist in the released version when the card opens the released version.
    let page = text("page");
    let path = page.split('?').next().unwrap_or_default().trim_start_matches('/');
    if state == "formal" && !page.is_empty() && !PAGES.contains(&path) {
        return Err((41030, "invalid page".into()));
    }
    if sim.subscribe.left(&touser, &template_id) == 0 {
        return Err((43101, "user refuse to accept the msg".into()));
    }
    Ok((touser, template_id))
}

/// `POST /cgi-bin/message/subscribe/send?access_token=` `{touser, template_id, page?, data,
/// miniprogram_state?, lang?}`: uses one of the user's authorisations of the template; answers
/// `msgid` and tells the developer's server in a `subscribe_msg_sent_event`.
pub async fn send(State(state): State<Shared>, Query(params): Params, body: Bytes) -> Response {
    let req = match begin_json(&state, &params, "subscribe_send", &body).await {
        Ok(req) => req,
        Err(response) => return response,
    };
    let (touser, template_id) = {
        let mut sim = state.lock().unwrap();
        let (touser, template_id) = match check_send(&sim, &req) {
            Ok(checked) => checked,
            Err((errcode, errmsg)) => return wx_error(errcode, &errmsg),
        };
        let key = (touser.clone(), template_id.clone());
        if let Some(left) = sim.subscribe.credits.get_mut(&key) {
            *left -= 1;
        }
        (touser, template_id)
    };
    let msgid = new_msg_id();
    // The result event comes after the answer, as WeChat's does; its JSON form writes the numbers
    // as text.
    tokio::spawn(async move {
        push(&state, |format| {
            let (id, code) = match format {
                Format::Xml => (json!(msgid), json!(0)),
                Format::Json => (json!(msgid.to_string()), json!("0")),
            };
            let item = json!({ "TemplateId": template_id, "MsgID": id, "ErrorCode": code, "ErrorStatus": "success" });
            list_event(format, &touser, "subscribe_msg_sent_event", vec![item])
        })
        .await;
    });
    Json(json!({ "errcode": 0, "errmsg": "ok", "msgid": msgid })).into_response()
}

/// A subscribe event with its list of templates (`SubscribeMsgPopupEvent`, … in XML).
fn list_event(format: Format, openid: &str, name: &str, items: Vec<Value>) -> Map<String, Value> {
    let wrapper = match name {
        "subscribe_msg_popup_event" => "SubscribeMsgPopupEvent",
        "subscribe_msg_change_event" => "SubscribeMsgChangeEvent",
        _ => "SubscribeMsgSentEvent",
    };
    let mut message = event(openid, name);
    add_list(format, &mut message, wrapper, items);
    message
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PopupBody {
    openid: String,
    template_ids: Vec<String>,
    accept: bool,
}

/// The templates of a popup or settings change, checked as the client checks them.
fn known_templates(sim: &SimState, openid: &str, template_ids: &[String]) -> Result<(), (StatusCode, String)> {
    if !sim.users.contains_key(openid) {
        return Err((StatusCode::NOT_FOUND, "unknown openid: log the user in first".into()));
    }
    if template_ids.is_empty() || template_ids.len() > MAX_TEMPLATES_PER_POPUP {
        return Err((StatusCode::BAD_REQUEST, "give 1 to 3 template_ids".into()));
    }
    if let Some(unknown) = template_ids.iter().find(|t| !sim.subscribe.templates.contains(*t)) {
        // What wx.requestSubscribeMessage fails with (errCode 20001).
        let message = format!("No template data return, verify the template id exist: {unknown}");
        return Err((StatusCode::BAD_REQUEST, message));
    }
    Ok(())
}

/// What the user has left of each template, for the admin answers.
fn left_of(sim: &SimState, openid: &str, template_ids: &[String]) -> BTreeMap<String, u32> {
    template_ids
        .iter()
        .map(|t| (t.clone(), sim.subscribe.left(openid, t)))
        .collect()
}

/// `POST /__sim/subscribe/popup {"openid", "template_ids", "accept"}`: the user answers the
/// subscribe popup; each accepted template may be sent once more. Answers `{subscriptions:
/// {template_id: left}, push}` (the `subscribe_msg_popup_event` deliveries, null without a push URL).
pub async fn popup(State(state): State<Shared>, Json(body): Json<PopupBody>) -> Response {
    let subscriptions = {
        let mut sim = state.lock().unwrap();
        if let Err((status, message)) = known_templates(&sim, &body.openid, &body.template_ids) {
            return admin_error(status, &message);
        }
        let now = sim.now();
        if let Some(user) = sim.users.get_mut(&body.openid) {
            user.active_at = now;
        }
        if body.accept {
            for template_id in &body.template_ids {
                *sim.subscribe
                    .credits
                    .entry((body.openid.clone(), template_id.clone()))
                    .or_default() += 1;
            }
        }
        left_of(&sim, &body.openid, &body.template_ids)
    };
    let status = if body.accept { "accept" } else { "reject" };
    let items = body
        .template_ids
        .iter()
        .map(|t| json!({ "TemplateId": t, "SubscribeStatusString": status, "PopupScene": "0" }))
        .collect();
    let name = "subscribe_msg_popup_event";
    tell(&state, &body.openid, name, items, subscriptions).await
}

/// Pushes the user's choice to the developer's server (the event `name` with `items`); answers
/// what the user has left and the push's deliveries.
async fn tell(
    state: &Shared,
    openid: &str,
    name: &str,
    items: Vec<Value>,
    subscriptions: BTreeMap<String, u32>,
) -> Response {
    let pushed = push(state, |format| list_event(format, openid, name, items)).await;
    Json(json!({ "subscriptions": subscriptions, "push": pushed })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeBody {
    openid: String,
    template_ids: Vec<String>,
}

/// `POST /__sim/subscribe/change {"openid", "template_ids"}`: the user turns the templates off in
/// the settings (拒收); what was left of them is gone, and a `subscribe_msg_change_event` says so.
pub async fn change(State(state): State<Shared>, Json(body): Json<ChangeBody>) -> Response {
    let subscriptions = {
        let mut sim = state.lock().unwrap();
        if let Err((status, message)) = known_templates(&sim, &body.openid, &body.template_ids) {
            return admin_error(status, &message);
        }
        for template_id in &body.template_ids {
            sim.subscribe
                .credits
                .remove(&(body.openid.clone(), template_id.clone()));
        }
        left_of(&sim, &body.openid, &body.template_ids)
    };
    let items = body
        .template_ids
        .iter()
        .map(|t| json!({ "TemplateId": t, "SubscribeStatusString": "reject" }))
        .collect();
    tell(&state, &body.openid, "subscribe_msg_change_event", items, subscriptions).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplatesBody {
    template_ids: Vec<String>,
}

/// `POST /__sim/subscribe/templates {"template_ids"}`: templates the app has chosen (选用), beside
/// the default ones; answers every known template.
pub async fn add_templates(State(state): State<Shared>, Json(body): Json<TemplatesBody>) -> Response {
    let mut sim = state.lock().unwrap();
    if body.template_ids.iter().any(String::is_empty) {
        return admin_error(StatusCode::BAD_REQUEST, "template_ids must not be empty");
    }
    sim.subscribe.templates.extend(body.template_ids);
    Json(json!({ "template_ids": sim.subscribe.templates })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyword_rules() {
        for (key, value) in [
            ("thing1", "一杯奶茶"),
            ("number2", "12.5"),
            ("amount3", "¥12.50元"),
            ("amount3", "12"),
            ("character_string4", "T2026-0001"),
            ("time5", "2019年10月1日 15:01"),
            ("time5", "15:01~16:00"),
            ("date6", "2019-10-01"),
            ("phrase7", "配送中"),
            ("phone_number8", "+86-0766-66888866"),
            ("car_number9", "粤A8Z888挂"),
            ("name10", "张三"),
            ("letter11", "abc"),
            ("symbol12", "%"),
        ] {
            assert!(fits(key, value), "{key}: {value}");
        }
        for (key, value) in [
            ("thing1", "一二三四五六七八九十一二三四五六七八九十一"),
            ("number2", "12a"),
            ("amount3", "¥12345678901"),
            ("character_string4", "中文"),
            ("time5", "15:01～16:00"),
            ("phrase7", "配送中配送中"),
            ("name10", "张三张三张三张三张三张"),
        ] {
            assert!(!fits(key, value), "{key}: {value}");
        }
    }
}
