//! `/wechat/push`: WeChat's message push (消息推送) to this server, set up in the console with
//! the push token and EncodingAESKey kept in the push secret (`PUSH_SECRET_ID`: `push_token`,
//! `push_aes_key`), a secret of its own: this function never reads the AppSecret.
//!
//! - `GET`: the console's URL check: `echostr` back unchanged when `signature` is the sha1 of the
//!   sorted token, timestamp and nonce (and the timestamp is fresh); anything else `401`.
//! - `POST`: a message or event, plain, compat or safe mode, XML or JSON. Encrypted pushes are
//!   checked by `msg_signature` over the exact `Encrypt` before anything is decrypted; plain ones
//!   by `signature`, and only while no EncodingAESKey is configured (with one, plain mode would
//!   let a captured push's unsigned body be swapped). In plain mode a `(timestamp, nonce,
//!   signature)` is taken with one body only, and an event that changes state is refused `403
//!   push_mode_insecure` unless `PUSH_PLAIN_EFFECTS=true`. A timestamp more than
//!   [`REPLAY_WINDOW_SECS`] from now is refused. Every such failure gets one answer, `401
//!   invalid_push`; the reason goes to the log.
//! - Each push is handled once: claimed by a conditional write keyed by its `MsgId` (or sender,
//!   time, event and its other fields) before its effect, marked done after it, given back if it
//!   failed (`503`, so WeChat retries). A duplicate of a handled push is answered `success` and
//!   changes nothing; one of a push still being handled `503 push_in_progress` (WeChat asks
//!   again); a claim whose invocation died is taken over after 30 s.
//! - Effects: `subscribe_msg_popup_event` / `subscribe_msg_change_event` → the user's record per
//!   template (an accepted popup grants one send; a template turned off has none left);
//!   `wxa_media_check` → the stored media check by `trace_id`; `trade_manage_order_settlement` /
//!   `trade_manage_remind_shipping` → the order; a customer-service message (text, image,
//!   mini-program card) or `user_enter_tempsession` → the user's conversation and WeChat's reply
//!   window (`store::conversations`), answered `transfer_customer_service` (sealed when the push
//!   was) for a user's message when `CUSTOMER_SERVICE_HANDOVER=console`; anything else logged
//!   and acknowledged.

use crate::at_init::AtInit;
use lambda_http::http::{HeaderValue, StatusCode, header};
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::clock::now_unix;
use crate::config::Parts;
use crate::customer_service;
use crate::function::{Answer, Entry, Function, Route};
use crate::push::{self, BodyFormat, PushError, PushKeys, PushMessage, REPLAY_WINDOW_SECS};
use crate::redacted::Secret;
use crate::store::messages::Claim;
use crate::store::orders::TradeEvent;
use crate::{ApiError, AppState, public};

pub const FUNCTION: Function = Function {
    name: "wechat-push",
    parts: Parts {
        push: true,
        messages: true,
        orders: true,
        auto_reply: true,
        ..Parts::NONE
    },
    // Every push is verified with the push secret's token.
    at_init: AtInit {
        dynamodb: true,
        push_secret: true,
        ..AtInit::NOTHING
    },
    entry: Entry::Routes(&[
        Route::get("/wechat/push", public!(verify_url)),
        Route::post("/wechat/push", public!(receive)),
    ]),
};

/// The one answer to a push (or URL check) that does not check out, whatever failed; counted
/// (`NotificationsRejected`).
fn invalid_push(why: impl std::fmt::Display) -> ApiError {
    crate::metrics::count(crate::metrics::Metric::NotificationsRejected);
    ApiError::unauthorized(
        "invalid_push",
        "the push is not signed by WeChat for this app, or is stale",
    )
    .with_detail(why)
}

/// The query parameter `name`: from API Gateway's parsed parameters, else the URI's query.
fn query<'a>(req: &'a Request, name: &str) -> Option<std::borrow::Cow<'a, str>> {
    if let Some(value) = req.query_string_parameters_ref().and_then(|q| q.first(name)) {
        return Some(std::borrow::Cow::Borrowed(value));
    }
    let query = req.uri().query()?;
    reqwest::Url::parse(&format!("http://query/?{query}"))
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| std::borrow::Cow::Owned(v.into_owned()))
}

/// The push token and, when configured, the safe-mode keys.
async fn push_keys(state: &AppState) -> Result<(Secret, Option<PushKeys>), ApiError> {
    let secrets = state.push_secrets()?.get().await?;
    let token = secrets.push_token.clone();
    let keys = match &secrets.push_aes_key {
        None => None,
        Some(aes_key) => Some(
            PushKeys::new(token.clone(), aes_key, state.config.app_id.clone())
                .map_err(|e| ApiError::misconfigured(format!("the push secret's push_aes_key: {e}")))?,
        ),
    };
    Ok((token, keys))
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Body::Text(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// What WeChat takes as "handled: do not retry".
fn success() -> Response<Body> {
    text(StatusCode::OK, "success".to_owned())
}

async fn verify_url(state: &AppState, req: &Request) -> Answer {
    let (Some(signature), Some(timestamp), Some(nonce), Some(echostr)) = (
        query(req, "signature"),
        query(req, "timestamp"),
        query(req, "nonce"),
        query(req, "echostr"),
    ) else {
        return Err(invalid_push(
            "a URL check without signature, timestamp, nonce and echostr",
        ));
    };
    // WeChat's echostr is digits; nothing else is reflected.
    if echostr.is_empty() || echostr.len() > 128 || !echostr.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(invalid_push("an echostr that is not 1 to 128 letters or digits"));
    }
    let (token, _) = push_keys(state).await?;
    push::verify_signature(&token, &timestamp, &nonce, &signature).map_err(invalid_push)?;
    if !push::is_fresh(&timestamp, now_unix(), REPLAY_WINDOW_SECS) {
        return Err(invalid_push(format_args!(
            "a URL check with a stale timestamp {timestamp}"
        )));
    }
    tracing::info!("message push URL verified");
    Ok(text(StatusCode::OK, echostr.into_owned()))
}

/// Whether a push failure is the body's shape (said as such) rather than its authenticity.
fn is_malformed(e: &PushError) -> bool {
    matches!(
        e,
        PushError::BodyTooLarge(_)
            | PushError::UnknownFormat
            | PushError::BadXml(_)
            | PushError::BadJson(_)
            | PushError::MissingEncrypt
    )
}

fn malformed(e: PushError) -> ApiError {
    match e {
        PushError::BodyTooLarge(_) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", e.to_string()),
        e => ApiError::bad_request("invalid_push_body", e.to_string()),
    }
}

async fn receive(state: &AppState, req: &Request) -> Answer {
    let body = match req.body() {
        Body::Text(text) => text.as_str(),
        Body::Binary(bytes) => std::str::from_utf8(bytes)
            .map_err(|_| ApiError::bad_request("invalid_push_body", "the body is not UTF-8"))?,
        _ => "",
    };
    if body.len() > push::MAX_BODY_BYTES {
        return Err(malformed(PushError::BodyTooLarge(body.len())));
    }
    let (Some(timestamp), Some(nonce)) = (query(req, "timestamp"), query(req, "nonce")) else {
        return Err(invalid_push("a push without timestamp and nonce"));
    };
    let (token, keys) = push_keys(state).await?;
    let encrypted = query(req, "encrypt_type").is_some_and(|t| t == "aes");
    let message = match (&keys, encrypted) {
        (Some(keys), true) => {
            let msg_signature = query(req, "msg_signature").unwrap_or_default();
            match keys.open(&timestamp, &nonce, &msg_signature, body) {
                Ok(message) => message,
                Err(e) if is_malformed(&e) => return Err(malformed(e)),
                Err(e) => return Err(invalid_push(e)),
            }
        }
        (None, true) => {
            return Err(ApiError::misconfigured(
                "an encrypted push arrived but the push secret has no push_aes_key",
            ));
        }
        (Some(_), false) => return Err(invalid_push("a plain push while safe mode is configured")),
        (None, false) => {
            let signature = query(req, "signature").unwrap_or_default();
            push::verify_signature(&token, &timestamp, &nonce, &signature).map_err(invalid_push)?;
            body.to_owned()
        }
    };
    // After the signature: the timestamp it covers is WeChat's own.
    if !push::is_fresh(&timestamp, now_unix(), REPLAY_WINDOW_SECS) {
        return Err(invalid_push(format_args!("a push with a stale timestamp {timestamp}")));
    }
    let message = PushMessage::parse(&message).map_err(malformed)?;
    let key = dedupe_key(&message);
    if keys.is_none() {
        // Plain mode signs no body: a signature seen with one push is never taken with another,
        // and a push that would change state is refused unless the operator opted in.
        let signature = query(req, "signature").unwrap_or_default();
        let signature_key = hex::encode(Sha256::digest(format!("{timestamp}\n{nonce}\n{signature}").as_bytes()));
        if !state
            .messages()?
            .bind_push_signature(&signature_key, &key, now_unix())
            .await?
        {
            return Err(invalid_push("a plain push's signature seen before with another body"));
        }
        if changes_state(&message) && !state.config.push_plain_effects {
            tracing::warn!(
                event = message.get("Event"),
                "a plain-mode push that would change state refused: configure safe mode (push_aes_key) or set PUSH_PLAIN_EFFECTS=true"
            );
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "push_mode_insecure",
                "this event changes state and plain-mode pushes carry no body signature: use safe mode",
            ));
        }
    }
    let claim_id = crate::random::nonce();
    let messages = state.messages()?;
    match messages.claim_push(&key, &claim_id, now_unix()).await? {
        Claim::Mine => {}
        Claim::Done => {
            tracing::info!(event = message.get("Event"), "a push handled before: acknowledged");
            // WeChat asks again when our answer was lost: a hand-over is answered again.
            return Ok(answer(&message, keys.as_ref(), hands_over(state, &message)));
        }
        // Not acknowledged, so that WeChat asks again: the other delivery may yet fail.
        Claim::Busy => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "push_in_progress",
                "this push is being handled by another delivery; try again",
            ));
        }
    }
    if let Err(e) = apply(state, &message, &key).await {
        // Given back, so that WeChat's retry is handled.
        if let Err(release) = messages.release_push(&key, &claim_id).await {
            tracing::error!(error = %release, "could not give back a push's claim");
        }
        return Err(e);
    }
    messages.finish_push(&key, &claim_id).await?;
    Ok(answer(&message, keys.as_ref(), hands_over(state, &message)))
}

/// The operator's automatic reply to a user who opens a conversation, sent once (a repeat of
/// the push finds the message kept and sends nothing). Its failure is logged, never the push's:
/// the message is recorded, and the back office can still answer.
async fn auto_reply(state: &AppState, openid: &str, text: &str) {
    let body = serde_json::json!({ "touser": openid, "msgtype": "text", "text": { "content": text } });
    let sent = match state.wechat() {
        Ok(wechat) => wechat
            .call("/cgi-bin/message/custom/send", &body)
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    let kept = serde_json::json!({ "msgtype": "text", "content": text, "auto": true });
    let recorded = match (&sent, state.messages()) {
        (Ok(_), Ok(messages)) => messages
            .conversations()
            .record_reply(openid, &kept, now_unix())
            .await
            .map(drop)
            .map_err(ApiError::from),
        (Ok(_), Err(e)) => Err(e),
        (Err(_), _) => Ok(()),
    };
    match (sent, recorded) {
        (Ok(_), Ok(())) => tracing::info!("automatic customer-service reply sent"),
        (Ok(_), Err(e)) => tracing::warn!(error = %e, detail = e.detail(), "automatic reply sent but not recorded"),
        (Err(e), _) => tracing::warn!(error = %e, detail = e.detail(), "automatic customer-service reply not sent"),
    }
}

/// Whether this push is a user's customer-service message that the operator hands to the
/// console's agents (`CUSTOMER_SERVICE_HANDOVER=console`); never an event (WeChat would show the
/// agents a message nobody wrote).
fn hands_over(state: &AppState, message: &PushMessage) -> bool {
    state.config.customer_service_handover
        && customer_service::quota_of(message).is_some_and(|(_, user_message)| user_message)
}

/// `success`, or the passive reply `transfer_customer_service` in the push's own format, sealed
/// when the push came encrypted (WeChat takes a plain reply to an encrypted push only in
/// compatibility mode).
fn answer(message: &PushMessage, keys: Option<&PushKeys>, hand_over: bool) -> Response<Body> {
    if !hand_over {
        return success();
    }
    let now = now_unix();
    let reply = customer_service::transfer_reply(
        message.format(),
        message.from_user_name().unwrap_or_default(),
        message.get("ToUserName").unwrap_or_default(),
        now,
    );
    let body = match keys {
        Some(keys) => keys.seal_reply(&reply, message.format(), now, &crate::random::nonce()),
        None => reply,
    };
    let mut response = text(StatusCode::OK, body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type_of(message.format())),
    );
    response
}

fn content_type_of(format: BodyFormat) -> &'static str {
    match format {
        BodyFormat::Xml => "application/xml; charset=utf-8",
        BodyFormat::Json => "application/json",
    }
}

/// Whether applying the push changes what this server holds (see [`apply`]).
fn changes_state(message: &PushMessage) -> bool {
    matches!(
        message.get("Event").unwrap_or_default(),
        "subscribe_msg_popup_event"
            | "subscribe_msg_change_event"
            | "wxa_media_check"
            | "trade_manage_order_settlement"
            | "trade_manage_remind_shipping"
    )
}

/// What tells one push from another: its `MsgId`; an event has none, so its sender, time, event
/// and every other field (WeChat's retries repeat them; two events of one second that differ are
/// two pushes), hashed to a fixed length.
fn dedupe_key(message: &PushMessage) -> String {
    let identity = match message.get("MsgId").or_else(|| message.get("MsgID")) {
        Some(id) if !id.is_empty() => format!("msg\n{id}"),
        _ => {
            let mut identity = String::from("event");
            for name in ["FromUserName", "CreateTime", "Event"] {
                identity.push('\n');
                identity.push_str(message.get(name).unwrap_or_default());
            }
            // The fields in name order, each length-prefixed so that no two messages collide.
            for (name, value) in message.fields() {
                identity.push_str(&format!("\n{}:{name}={}:{value}", name.len(), value.len()));
            }
            identity
        }
    };
    hex::encode(Sha256::digest(identity.as_bytes()))
}

/// The items of a subscribe event: in XML `<Wrapper><List>…</List>…`, in JSON a top-level `List`;
/// one item or an array of them.
fn subscribe_items(message: &PushMessage, wrapper: &str) -> Vec<Value> {
    let list = match message.get(wrapper) {
        Some(text) => serde_json::from_str::<Value>(text).ok().map(|v| v["List"].clone()),
        None => message.get("List").and_then(|text| serde_json::from_str(text).ok()),
    };
    match list {
        Some(Value::Array(items)) => items,
        Some(item @ Value::Object(_)) => vec![item],
        _ => Vec::new(),
    }
}

/// A JSON value as text: a string as is, a number as written.
fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

async fn apply(state: &AppState, message: &PushMessage, key: &str) -> Result<(), ApiError> {
    let event = message.get("Event").unwrap_or_default();
    let openid = message.get("FromUserName").unwrap_or_default();
    let now = now_unix();
    if let Some(grant) = customer_service::quota_of(message) {
        if openid.is_empty() {
            tracing::warn!("a customer-service message without FromUserName");
            return Ok(());
        }
        let kept = customer_service::kept_of(message);
        // WeChat's time, not ours: the window is counted from it.
        let at = message.create_time().filter(|&t| t > 0).unwrap_or(now);
        let hand_over = hands_over(state, message);
        let recorded = state
            .messages()?
            .conversations()
            .record_from_user(openid, key, &kept, grant, at, now, hand_over)
            .await?;
        if recorded.opened
            && let Some(text) = &state.config.customer_service_auto_reply
        {
            auto_reply(state, openid, text).await;
        }
        tracing::info!(
            msgtype = kept["msgtype"].as_str(),
            handed_over = hand_over,
            "customer-service message recorded"
        );
        return Ok(());
    }
    match event {
        "subscribe_msg_popup_event" | "subscribe_msg_change_event" => {
            let wrapper = if event == "subscribe_msg_popup_event" {
                "SubscribeMsgPopupEvent"
            } else {
                "SubscribeMsgChangeEvent"
            };
            let messages = state.messages()?;
            for item in subscribe_items(message, wrapper) {
                let (Some(template_id), Some(status)) =
                    (item["TemplateId"].as_str(), item["SubscribeStatusString"].as_str())
                else {
                    tracing::warn!(event, "a subscribe event item without TemplateId or status");
                    continue;
                };
                if openid.is_empty() {
                    continue;
                }
                if event == "subscribe_msg_popup_event" {
                    messages.record_subscription(openid, template_id, status, now).await?;
                } else {
                    messages.record_status_change(openid, template_id, status, now).await?;
                }
                tracing::info!(event, template_id, status, "subscription recorded");
            }
        }
        "subscribe_msg_sent_event" => {
            for item in subscribe_items(message, "SubscribeMsgSentEvent") {
                let code = item.get("ErrorCode").and_then(as_text).unwrap_or_default();
                let template_id = item["TemplateId"].as_str().unwrap_or_default();
                if code == "0" {
                    tracing::info!(template_id, "subscribe message delivered");
                } else {
                    tracing::warn!(template_id, error_code = %code, status = item["ErrorStatus"].as_str(), "subscribe message not delivered");
                }
            }
        }
        "wxa_media_check" => {
            let trace_id = message.get("trace_id").unwrap_or_default();
            if trace_id.is_empty() {
                tracing::warn!("a wxa_media_check push without trace_id");
                return Ok(());
            }
            let result: Value = message
                .get("result")
                .and_then(|text| serde_json::from_str(text).ok())
                .unwrap_or(Value::Null);
            let (suggest, label) = match (as_text(&result["suggest"]), as_text(&result["label"])) {
                (Some(suggest), Some(label)) => (suggest, label),
                // WeChat could not check it: say so rather than leave it pending.
                _ => ("error".to_owned(), message.get("errcode").unwrap_or("-1").to_owned()),
            };
            state
                .messages()?
                .record_media_verdict(trace_id, &suggest, &label, now)
                .await?;
            tracing::info!(trace_id, suggest, label, "media check verdict recorded");
        }
        "trade_manage_order_settlement" | "trade_manage_remind_shipping" => {
            let out_trade_no = message.get("merchant_trade_no").unwrap_or_default();
            let transaction_id = message.get("transaction_id").unwrap_or_default();
            if out_trade_no.is_empty() || transaction_id.is_empty() {
                tracing::warn!(event, "an order event without merchant_trade_no or transaction_id");
                return Ok(());
            }
            let trade_event = if event == "trade_manage_order_settlement" {
                let at = message
                    .get("settlement_time")
                    .and_then(|t| t.parse().ok())
                    .filter(|&t: &u64| t > 0)
                    .unwrap_or(now);
                TradeEvent::Settled { at }
            } else {
                tracing::warn!(out_trade_no, "WeChat reminds: this paid order is not shipped yet");
                TradeEvent::ShippingReminder { at: now }
            };
            let recorded = state
                .orders()?
                .record_trade_event(out_trade_no, transaction_id, trade_event)
                .await?;
            if recorded {
                tracing::info!(event, out_trade_no, "order updated");
            } else {
                tracing::warn!(
                    event,
                    out_trade_no,
                    transaction_id,
                    "no paid order of ours has this transaction"
                );
            }
        }
        "trade_manage_remind_access_api" => {
            tracing::warn!(
                msg = message.get("msg"),
                "WeChat reminds: upload shipping info for paid orders"
            );
        }
        _ => {
            tracing::info!(
                event,
                msg_type = message.get("MsgType"),
                "a push with nothing to do here: acknowledged"
            );
        }
    }
    Ok(())
}
