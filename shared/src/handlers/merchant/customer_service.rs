//! The back office's customer service (客服消息): read a user's conversation, reply within
//! WeChat's window, show typing, upload the images replies carry. The rules are
//! `crate::customer_service`'s; the conversation is the one `wechat-push` records.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use lambda_http::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{check_openid, command, invalid};
use crate::clock::now_unix;
use crate::customer_service::{self, MAX_IMAGE_BYTES, MEDIA_LIFETIME_SECS, Reply};
use crate::function::Outcome;
use crate::store::conversations::Conversation;
use crate::token::TokenError;
use crate::wechat::WechatError;
use crate::{ApiError, AppState};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ByOpenid {
    openid: String,
}

/// A conversation as the back office sees it: the window said plainly.
fn shown(conversation: &Conversation, now: u64) -> Value {
    let mut shown = json!(conversation);
    shown["window"]["open"] = json!(conversation.window.is_open(now));
    // Each message's key only tells repeats apart: not the back office's concern.
    if let Some(messages) = shown["messages"].as_array_mut() {
        for message in messages {
            if let Some(fields) = message.as_object_mut() {
                fields.remove("key");
            }
        }
    }
    shown
}

/// `get_conversation {openid}`: the user's last messages and ours, WeChat's reply window as we
/// know it (`{until, left, open}`), whether they wait for an answer; an empty one if they never
/// wrote.
pub(super) async fn get_conversation(state: &AppState, event: &Value) -> Outcome {
    let c: ByOpenid = command(event)?;
    check_openid(&c.openid)?;
    let conversation = state.messages()?.conversations().get(&c.openid).await?;
    let conversation = conversation.unwrap_or_else(|| Conversation::empty(&c.openid));
    Ok(shown(&conversation, now_unix()))
}

fn window_closed() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "reply_window_closed",
        "WeChat takes replies only within 48 hours of the user's last message (1 minute after they only entered the chat) (45015)",
    )
}

fn reply_limit() -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "reply_limit_reached",
        "WeChat takes 5 replies per user message (2 after they only entered the chat); wait for the user to write again (45047)",
    )
}

/// WeChat's refusals of a customer-service call, said as the back office can act on them.
fn refusal(errcode: i64, errmsg: String) -> ApiError {
    match errcode {
        45015 => window_closed(),
        45047 => reply_limit(),
        40003 => invalid("WeChat does not know this openid (40003)"),
        40007 => invalid(
            "WeChat does not know this media_id (40007): upload it again with upload_temp_media (WeChat keeps one 3 days)",
        ),
        40008 => invalid("WeChat refused the msgtype (40008)"),
        45002 => invalid("WeChat refused the text as too long (45002)"),
        47001 => invalid("WeChat refused the message's format (47001)"),
        _ => WechatError::Other { errcode, errmsg }.into(),
    }
}

/// `send_customer_message {openid, msgtype, text | image | link | miniprogrampage}` (WeChat's
/// shape, `openid` for `touser`): sent by `custom/send` (in API security mode when configured),
/// then kept in the conversation. Not repeated when its outcome is unknown (a timeout): a repeat
/// could reach the user twice; the error says so.
pub(super) async fn send_customer_message(state: &AppState, event: &Value) -> Outcome {
    let reply: Reply = command(event)?;
    check_openid(&reply.openid)?;
    let body = reply.body().map_err(invalid)?;
    let conversations = state.messages()?.conversations();
    match state.wechat()?.call("/cgi-bin/message/custom/send", &body).await {
        Ok(_) => {
            let conversation = conversations
                .record_reply(&reply.openid, &reply.kept(), now_unix())
                .await?;
            tracing::info!(msgtype = %reply.msgtype, left = conversation.window.left, "customer-service reply sent");
            Ok(json!({ "sent": true, "window": shown(&conversation, now_unix())["window"] }))
        }
        Err(TokenError::Wechat(WechatError::Other { errcode, errmsg })) => {
            if matches!(errcode, 45015 | 45047) {
                conversations
                    .record_window_refusal(&reply.openid, errcode == 45015, now_unix())
                    .await?;
            }
            Err(refusal(errcode, errmsg))
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Typing {
    openid: String,
    typing: bool,
}

/// `set_typing {openid, typing}`: "typing…" shown to the user (or no longer). WeChat takes it
/// only within 30 s of the user's last message (45080 → `409 typing_needs_recent_message`);
/// asking for what is already shown (45081) is not an error.
pub(super) async fn set_typing(state: &AppState, event: &Value) -> Outcome {
    let c: Typing = command(event)?;
    check_openid(&c.openid)?;
    let command = if c.typing { "Typing" } else { "CancelTyping" };
    let body = json!({ "touser": c.openid, "command": command });
    match state.wechat()?.call("/cgi-bin/message/custom/typing", &body).await {
        Ok(_) => Ok(json!({ "typing": c.typing })),
        Err(TokenError::Wechat(WechatError::Other { errcode: 45081, .. })) => Ok(json!({ "typing": c.typing })),
        Err(TokenError::Wechat(WechatError::Other { errcode: 45080, .. })) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "typing_needs_recent_message",
            "WeChat shows typing only within 30 seconds of the user's last message (45080)",
        )),
        Err(TokenError::Wechat(WechatError::Other { errcode, errmsg })) => Err(refusal(errcode, errmsg)),
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Upload {
    /// The image, base64 (a Lambda Invoke payload is JSON).
    content_base64: String,
    #[serde(default)]
    filename: Option<String>,
}

/// `upload_temp_media {content_base64, filename?}`: a PNG, JPEG or GIF of at most 2 MiB uploaded
/// as a temporary image for replies → `{media_id, created_at, expires_at}` (WeChat keeps it 3
/// days).
pub(super) async fn upload_temp_media(state: &AppState, event: &Value) -> Outcome {
    let c: Upload = command(event)?;
    // Base64 of 2 MiB is under 2.8 MB: anything longer is refused before it is decoded.
    if c.content_base64.len() > MAX_IMAGE_BYTES / 3 * 4 + 8 {
        return Err(invalid("the image must be at most 2 MiB"));
    }
    let image = STANDARD
        .decode(c.content_base64.trim())
        .map_err(|_| invalid("content_base64 must be base64"))?;
    if image.is_empty() || image.len() > MAX_IMAGE_BYTES {
        return Err(invalid("the image must be 1 byte to 2 MiB"));
    }
    let Some(content_type) = customer_service::image_type(&image) else {
        return Err(invalid("the image must be a PNG, JPEG or GIF"));
    };
    let filename = c.filename.unwrap_or_else(|| {
        let extension = content_type.trim_start_matches("image/");
        format!("image.{extension}")
    });
    if filename.is_empty()
        || filename.len() > 128
        || !filename
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(invalid("filename must be 1 to 128 of [A-Za-z0-9._-]"));
    }
    match state.wechat()?.upload_temp_image(&image, content_type, &filename).await {
        Ok(media) => Ok(json!({
            "media_id": media.media_id,
            "created_at": media.created_at,
            "expires_at": media.created_at + MEDIA_LIFETIME_SECS,
        })),
        Err(TokenError::Wechat(WechatError::Other { errcode, errmsg })) => Err(match errcode {
            40004 | 40005 | 40009 | 41005 => invalid(format!("WeChat refused the image ({errcode})")),
            _ => refusal(errcode, errmsg),
        }),
        Err(e) => Err(e.into()),
    }
}
