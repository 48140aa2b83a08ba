//! Customer service messages (客服消息): a user writes to the mini program from its chat (客服会话)
//! and WeChat pushes each message (text, an image, a mini-program page card) and the user's entering
//! the chat (`user_enter_tempsession`) to the developer's server. The server answers with
//! `POST /cgi-bin/message/custom/send` while the user's reply window is open: a message allows 5
//! replies within 48 hours, entering the chat 2 within 60 seconds, and the two do not add up (each
//! sets the replies left to the larger of what is left and its own, and the window's end to the
//! later of the two). It may show the user it is typing (`/cgi-bin/message/custom/typing`, when the
//! user wrote in the last 30 s; the state lasts 15 s), send images it uploaded as temporary media
//! (`/cgi-bin/media/upload`, kept 3 days), or hand the conversation to the console's agents by
//! answering a message's push with a `transfer_customer_service` passive reply: for 30 minutes
//! WeChat then forwards the user's messages to the agents instead of pushing them.
//!
//! The send checks run in this order: 47001 (`touser` or `msgtype` not text), 40003 (a user who
//! never wrote), 40008, 47001 (the message's fields), 44004 / 45002 (text empty / over 2048
//! bytes), 40007 (media), then the window: 45015, 45047; a refused message uses no reply.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Extension, Multipart, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::Shared;
use crate::api::{begin, begin_json, token_error, wx_error};
use crate::api_security::Scheme;
use crate::pay::admin_error;
use crate::push::{ConversationPush, event};
use crate::state::{PAGES, random_text};

/// A user's message allows this many replies within this long.
const MESSAGE_REPLIES: u32 = 5;
const MESSAGE_WINDOW_SECS: i64 = 48 * 3600;
/// Entering the chat allows this many within this long.
const ENTER_REPLIES: u32 = 2;
const ENTER_WINDOW_SECS: i64 = 60;
/// A conversation handed to the agents stays with them this long after the transfer.
const HANDOVER_SECS: i64 = 30 * 60;
/// Typing may be shown to a user who wrote this recently, and shows this long.
const TYPING_AFTER_USER_SECS: i64 = 30;
const TYPING_SECS: i64 = 15;
/// Temporary media live 3 days.
const MEDIA_TTL_SECS: i64 = 3 * 86_400;
const MAX_IMAGE_BYTES: usize = 2 << 20;
const MAX_TEXT_BYTES: usize = 2048;
/// The body limit of `/cgi-bin/media/upload`: above the image limit, so that an image too large
/// is answered 40009 rather than cut off by axum's default (2 MB).
pub const UPLOAD_BODY_LIMIT: usize = 4 << 20;

#[derive(Default)]
pub struct CustomerServiceState {
    conversations: HashMap<String, Conversation>,
    media: HashMap<String, Media>,
}

#[derive(Default)]
struct Conversation {
    /// Both sides' messages, in order, as `/__sim/customer-service/conversation` lists them.
    messages: Vec<Value>,
    /// The reply window: open before `until`, with `left` replies.
    until: i64,
    left: u32,
    /// When the user last wrote or entered the chat.
    last_user_at: i64,
    /// When the developer's server last handed the conversation to the agents.
    handed_over_at: Option<i64>,
    typing_since: Option<i64>,
}

impl Conversation {
    fn open(&self, now: i64) -> bool {
        now < self.until
    }

    fn left(&self, now: i64) -> u32 {
        if self.open(now) { self.left } else { 0 }
    }

    /// What a user's action allows: not added to what is left, the larger of the two.
    fn allow(&mut self, now: i64, replies: u32, secs: i64) {
        self.left = self.left(now).max(replies);
        self.until = self.until.max(now + secs);
    }

    fn handed_over(&self, now: i64) -> bool {
        self.handed_over_at.is_some_and(|at| now - at < HANDOVER_SECS)
    }

    fn typing(&self, now: i64) -> bool {
        self.typing_since.is_some_and(|at| now - at < TYPING_SECS)
    }
}

/// An uploaded image (or one a user sent, which the developer may send back).
struct Media {
    bytes: Vec<u8>,
    content_type: &'static str,
    created_at: i64,
}

impl CustomerServiceState {
    fn add_media(&mut self, bytes: Vec<u8>, content_type: &'static str, now: i64) -> String {
        let media_id = random_text(64);
        let media = Media {
            bytes,
            content_type,
            created_at: now,
        };
        self.media.insert(media_id.clone(), media);
        media_id
    }

    fn live_media(&self, media_id: &str, now: i64) -> Option<&Media> {
        self.media.get(media_id).filter(|m| now - m.created_at < MEDIA_TTL_SECS)
    }
}

/// The image type of `bytes` by its magic number, as WeChat accepts images: PNG, JPEG or GIF.
fn image_type(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(b"\xff\xd8\xff") {
        Some("image/jpeg")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("image/gif")
    } else {
        None
    }
}

#[derive(Clone, Copy, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Text,
    Image,
    Miniprogrampage,
    Enter,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteBody {
    openid: String,
    msgtype: Kind,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    pagepath: Option<String>,
    #[serde(default)]
    session_from: Option<String>,
}

impl WriteBody {
    fn check(&self) -> Result<(), &'static str> {
        if self.openid.is_empty() {
            return Err("openid must not be empty");
        }
        let text = self.msgtype == Kind::Text;
        let page = self.msgtype == Kind::Miniprogrampage;
        if text && self.content.as_deref().is_none_or(str::is_empty) {
            return Err("a text message needs a content");
        }
        if !text && self.content.is_some() {
            return Err("content is for text messages");
        }
        if !page && (self.title.is_some() || self.pagepath.is_some()) {
            return Err("title and pagepath are for miniprogrampage messages");
        }
        if self.msgtype != Kind::Enter && self.session_from.is_some() {
            return Err("session_from is for enter");
        }
        Ok(())
    }
}

/// The conversation entry's fields of a pushed message's fields, by message type.
fn entry_fields(kind: Kind) -> &'static [(&'static str, &'static str)] {
    match kind {
        Kind::Text => &[("Content", "content"), ("MsgId", "msgid")],
        Kind::Image => &[("PicUrl", "pic_url"), ("MediaId", "media_id"), ("MsgId", "msgid")],
        Kind::Miniprogrampage => &[
            ("Title", "title"),
            ("AppId", "appid"),
            ("PagePath", "pagepath"),
            ("ThumbUrl", "thumb_url"),
            ("ThumbMediaId", "thumb_media_id"),
            ("MsgId", "msgid"),
        ],
        Kind::Enter => &[("SessionFrom", "session_from")],
    }
}

const KIND_NAMES: [(Kind, &str); 4] = [
    (Kind::Text, "text"),
    (Kind::Image, "image"),
    (Kind::Miniprogrampage, "miniprogrampage"),
    (Kind::Enter, "enter"),
];

fn kind_name(kind: Kind) -> &'static str {
    KIND_NAMES
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or("text", |(_, name)| name)
}

/// `POST /__sim/customer-service/write {"openid", "msgtype": "text"|"image"|"miniprogrampage"|
/// "enter", "content"?, "title"?, "pagepath"?, "session_from"?}`: the user writes in the chat (or
/// enters it). Opens the reply window, records the message and pushes it to the developer's
/// server, or, while the conversation is with the agents, forwards it to them (`to_agent`, no
/// push). Answers `{push_id, message, deliveries, handed_over, to_agent}`: `push_id` null and
/// `deliveries` empty when nothing was pushed, `handed_over` whether the conversation is with the
/// agents after this message (a transfer reply to it included).
pub async fn write(
    State(state): State<Shared>,
    scheme: Option<Extension<Scheme>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: WriteBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(e) => return admin_error(StatusCode::BAD_REQUEST, &format!("invalid body: {e}")),
    };
    if let Err(message) = body.check() {
        return admin_error(StatusCode::BAD_REQUEST, message);
    }
    let no_push = || admin_error(StatusCode::CONFLICT, "no push URL: POST /__sim/push/config first");
    // Where the simulator is reached, for the URLs of the images it serves.
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let base = format!("{}://{host}", scheme.map_or("http", |Extension(s)| s.0));
    let message = {
        let mut sim = state.lock().unwrap();
        if !sim.push.configured() {
            return no_push();
        }
        let (now, app_id) = (sim.now(), sim.config.app_id.clone());
        let mut image = || {
            let png = crate::png::code_image(&[("from", &body.openid)]);
            let media_id = sim.customer_service.add_media(png, "image/png", now);
            let url = format!("{base}/__sim/customer-service/media/{media_id}");
            (media_id, url)
        };
        let mut message = Map::new();
        message.insert("FromUserName".into(), json!(body.openid));
        message.insert("MsgType".into(), json!(kind_name(body.msgtype)));
        match body.msgtype {
            Kind::Text => {
                message.insert("Content".into(), json!(body.content));
            }
            Kind::Image => {
                let (media_id, url) = image();
                message.insert("PicUrl".into(), json!(url));
                message.insert("MediaId".into(), json!(media_id));
            }
            Kind::Miniprogrampage => {
                let (media_id, url) = image();
                let title = body
                    .title
                    .clone()
                    .unwrap_or_else(|| "A page of the mini program".into());
                let pagepath = body.pagepath.clone().unwrap_or_else(|| PAGES[0].into());
                message.insert("Title".into(), json!(title));
                message.insert("AppId".into(), json!(app_id));
                message.insert("PagePath".into(), json!(pagepath));
                message.insert("ThumbUrl".into(), json!(url));
                message.insert("ThumbMediaId".into(), json!(media_id));
            }
            Kind::Enter => {
                message = event(&body.openid, "user_enter_tempsession");
                message.insert(
                    "SessionFrom".into(),
                    json!(body.session_from.clone().unwrap_or_default()),
                );
            }
        }
        message
    };
    let Some(push) = ConversationPush::new(&state, &body.openid, message) else {
        return no_push();
    };
    let to_agent = {
        let mut sim = state.lock().unwrap();
        let now = sim.now();
        let conversation = sim
            .customer_service
            .conversations
            .entry(body.openid.clone())
            .or_default();
        match body.msgtype {
            Kind::Enter => conversation.allow(now, ENTER_REPLIES, ENTER_WINDOW_SECS),
            _ => conversation.allow(now, MESSAGE_REPLIES, MESSAGE_WINDOW_SECS),
        }
        conversation.last_user_at = now;
        // Events are always pushed; the user's messages go to the agents while they have them.
        let to_agent = body.msgtype != Kind::Enter && conversation.handed_over(now);
        let mut entry = json!({ "from": "user", "msgtype": kind_name(body.msgtype) });
        for (field, name) in entry_fields(body.msgtype) {
            entry[*name] = push.message().get(*field).cloned().unwrap_or(Value::Null);
        }
        entry["at"] = json!(now);
        entry["to_agent"] = json!(to_agent);
        conversation.messages.push(entry);
        to_agent
    };
    if to_agent {
        let answer = json!({
            "push_id": null, "message": push.message(), "deliveries": [], "handed_over": true, "to_agent": true,
        });
        return Json(answer).into_response();
    }
    let (mut answer, transferred) = push.send(&state).await;
    let handed_over = {
        let mut sim = state.lock().unwrap();
        let now = sim.now();
        let conversation = sim.customer_service.conversations.entry(body.openid).or_default();
        // WeChat ignores a transfer in answer to an event: only a message can be handed over.
        if transferred && body.msgtype != Kind::Enter {
            conversation.handed_over_at = Some(now);
        }
        conversation.handed_over(now)
    };
    answer["handed_over"] = json!(handed_over);
    answer["to_agent"] = json!(false);
    Json(answer).into_response()
}

type Params = Query<HashMap<String, String>>;

/// A send's checks (see the module's doc for their order); the user and the conversation's entry.
fn check_send(cs: &CustomerServiceState, req: &Value, now: i64) -> Result<(String, Value), (i64, &'static str)> {
    let format_error = (47001, "data format error");
    let (Some(touser), Some(msgtype)) = (req["touser"].as_str(), req["msgtype"].as_str()) else {
        return Err(format_error);
    };
    let Some(conversation) = cs.conversations.get(touser) else {
        return Err((40003, "invalid openid"));
    };
    let fields: &[&str] = match msgtype {
        "text" => &["content"],
        "image" => &["media_id"],
        "link" => &["title", "description", "url", "thumb_url"],
        "miniprogrampage" => &["title", "pagepath", "thumb_media_id"],
        _ => return Err((40008, "invalid message type")),
    };
    let mut entry = json!({ "from": "app", "msgtype": msgtype });
    for field in fields {
        let value = req[msgtype][*field].as_str().ok_or(format_error)?;
        entry[*field] = json!(value);
    }
    let text = |field: &str| entry[field].as_str().unwrap_or_default();
    match msgtype {
        "text" if text("content").is_empty() => return Err((44004, "empty content")),
        "text" if text("content").len() > MAX_TEXT_BYTES => return Err((45002, "content size out of limit")),
        "image" | "miniprogrampage" => {
            let media_id = text(if msgtype == "image" {
                "media_id"
            } else {
                "thumb_media_id"
            });
            if cs.live_media(media_id, now).is_none() {
                return Err((40007, "invalid media_id"));
            }
        }
        _ => {}
    }
    if !conversation.open(now) {
        return Err((45015, "response out of time limit or subscription is canceled"));
    }
    if conversation.left == 0 {
        return Err((45047, "out of response count limit"));
    }
    entry["at"] = json!(now);
    Ok((touser.to_owned(), entry))
}

/// `POST /cgi-bin/message/custom/send?access_token=` `{touser, msgtype, text: {content} | image:
/// {media_id} | link: {title, description, url, thumb_url} | miniprogrampage: {title, pagepath,
/// thumb_media_id}}`: a reply in the user's window, which it uses one of; ends the typing state.
pub async fn send(State(state): State<Shared>, Query(params): Params, body: Bytes) -> Response {
    let req = match begin_json(&state, &params, "custom_send", &body).await {
        Ok(req) => req,
        Err(response) => return response,
    };
    let mut sim = state.lock().unwrap();
    let now = sim.now();
    let (touser, entry) = match check_send(&sim.customer_service, &req, now) {
        Ok(checked) => checked,
        Err((errcode, errmsg)) => return wx_error(errcode, errmsg),
    };
    let conversation = sim
        .customer_service
        .conversations
        .get_mut(&touser)
        .expect("checked above");
    conversation.left -= 1;
    conversation.typing_since = None;
    conversation.messages.push(entry);
    Json(json!({ "errcode": 0, "errmsg": "ok" })).into_response()
}

/// `POST /cgi-bin/message/custom/typing?access_token=` `{touser, command: "Typing" |
/// "CancelTyping"}`: shows (or stops showing) the user that the developer is typing.
pub async fn typing(State(state): State<Shared>, Query(params): Params, body: Bytes) -> Response {
    let req = match begin_json(&state, &params, "custom_typing", &body).await {
        Ok(req) => req,
        Err(response) => return response,
    };
    let mut sim = state.lock().unwrap();
    let now = sim.now();
    let (Some(touser), Some(command)) = (req["touser"].as_str(), req["command"].as_str()) else {
        return wx_error(47001, "data format error");
    };
    let Some(conversation) = sim.customer_service.conversations.get_mut(touser) else {
        return wx_error(40003, "invalid openid");
    };
    let typing = match command {
        "Typing" => true,
        "CancelTyping" => false,
        _ => return wx_error(45072, "command invalid"),
    };
    if now - conversation.last_user_at > TYPING_AFTER_USER_SECS {
        return wx_error(45080, "no message from the user in the last 30 seconds");
    }
    if typing && conversation.typing(now) {
        return wx_error(45081, "already typing");
    }
    conversation.typing_since = typing.then_some(now);
    Json(json!({ "errcode": 0, "errmsg": "ok" })).into_response()
}

/// Why an upload's `media` part could not be read.
enum Unread {
    Missing,
    TooLarge,
}

/// The bytes of the first part named `media`; past the image limit, the rest is read and dropped
/// (an answer before the whole request is read may reach the client as a reset connection).
async fn media_part(multipart: &mut Multipart) -> Result<Vec<u8>, Unread> {
    let unread = |e: axum::extract::multipart::MultipartError| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => Unread::TooLarge,
        _ => Unread::Missing,
    };
    while let Some(mut field) = multipart.next_field().await.map_err(unread)? {
        if field.name() != Some("media") {
            continue;
        }
        let (mut bytes, mut len) = (Vec::new(), 0);
        while let Some(chunk) = field.chunk().await.map_err(unread)? {
            len += chunk.len();
            if len <= MAX_IMAGE_BYTES {
                bytes.extend_from_slice(&chunk);
            }
        }
        return if len > MAX_IMAGE_BYTES {
            Err(Unread::TooLarge)
        } else {
            Ok(bytes)
        };
    }
    Err(Unread::Missing)
}

/// `POST /cgi-bin/media/upload?access_token=&type=image` (multipart/form-data, the file in part
/// `media`): a temporary image, kept 3 days; answers `{errcode: 0, errmsg, type, media_id,
/// created_at}`. 40004 for another type, 41005 without a `media` part, 40009 over 2 MiB, 40005 for
/// bytes that are no PNG, JPEG or GIF.
pub async fn upload(
    State(state): State<Shared>,
    Query(params): Params,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    if let Some(response) = begin(&state, "media_upload").await {
        return response;
    }
    if let Some(response) = token_error(&state.lock().unwrap(), &params) {
        return response;
    }
    if params.get("type").map(String::as_str) != Some("image") {
        return wx_error(40004, "invalid media type");
    }
    let Ok(mut multipart) = multipart else {
        return wx_error(41005, "media data missing");
    };
    let bytes = match media_part(&mut multipart).await {
        Ok(bytes) => bytes,
        Err(Unread::Missing) => return wx_error(41005, "media data missing"),
        Err(Unread::TooLarge) => return wx_error(40009, "invalid image size"),
    };
    let Some(content_type) = image_type(&bytes) else {
        return wx_error(40005, "invalid file type");
    };
    let mut sim = state.lock().unwrap();
    let now = sim.now();
    let media_id = sim.customer_service.add_media(bytes, content_type, now);
    Json(json!({ "errcode": 0, "errmsg": "ok", "type": "image", "media_id": media_id, "created_at": now }))
        .into_response()
}

/// `GET /__sim/customer-service/media/{media_id}`: a live image's bytes (the `PicUrl` and
/// `ThumbUrl` of the users' messages); 404 for an unknown or expired one.
pub async fn media(State(state): State<Shared>, Path(media_id): Path<String>) -> Response {
    let sim = state.lock().unwrap();
    match sim.customer_service.live_media(&media_id, sim.now()) {
        Some(media) => ([(header::CONTENT_TYPE, media.content_type)], media.bytes.clone()).into_response(),
        None => admin_error(StatusCode::NOT_FOUND, "no such media (or older than 3 days)"),
    }
}

/// `GET /__sim/customer-service/conversation?openid=`: `{openid, messages: [{from: "user"|"app",
/// msgtype, …its fields, at, to_agent (the user's)}], window: {open, until, left}, handed_over,
/// typing}`; 404 for a user who never wrote.
pub async fn conversation(State(state): State<Shared>, Query(params): Params) -> Response {
    let sim = state.lock().unwrap();
    let now = sim.now();
    let openid = params.get("openid").cloned().unwrap_or_default();
    let Some(c) = sim.customer_service.conversations.get(&openid) else {
        return admin_error(StatusCode::NOT_FOUND, "this user never wrote");
    };
    Json(json!({
        "openid": openid,
        "messages": c.messages,
        "window": { "open": c.open(now), "until": c.until, "left": c.left(now) },
        "handed_over": c.handed_over(now),
        "typing": c.typing(now),
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_take_the_larger_and_do_not_add_up() {
        let mut c = Conversation::default();
        c.allow(1000, MESSAGE_REPLIES, MESSAGE_WINDOW_SECS);
        c.left -= 4;
        c.allow(1010, ENTER_REPLIES, ENTER_WINDOW_SECS);
        assert_eq!((c.left(1010), c.until), (2, 1000 + MESSAGE_WINDOW_SECS));
        c.allow(1020, MESSAGE_REPLIES, MESSAGE_WINDOW_SECS);
        assert_eq!((c.left(1020), c.until), (5, 1020 + MESSAGE_WINDOW_SECS));
        assert!(!c.open(1020 + MESSAGE_WINDOW_SECS));
        assert_eq!(c.left(1020 + MESSAGE_WINDOW_SECS), 0);
        // A closed window's replies are gone: entering later allows 2, not what was left.
        c.allow(1020 + MESSAGE_WINDOW_SECS, ENTER_REPLIES, ENTER_WINDOW_SECS);
        assert_eq!(c.left(1020 + MESSAGE_WINDOW_SECS), 2);
    }

    #[test]
    fn images_are_known_by_their_magic_numbers() {
        assert_eq!(image_type(b"\x89PNG\r\n\x1a\nrest"), Some("image/png"));
        assert_eq!(image_type(b"\xff\xd8\xff\xe0"), Some("image/jpeg"));
        assert_eq!(image_type(b"GIF89a..."), Some("image/gif"));
        assert_eq!(image_type(b"BM...."), None);
        assert_eq!(image_type(b""), None);
    }
}
