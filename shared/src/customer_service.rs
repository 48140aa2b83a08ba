//! Customer service messages (客服消息): the rules, without I/O.
//!
//! - A user writes to the mini program's customer service (text, an image, a mini-program card)
//!   or enters the chat (`user_enter_tempsession`); WeChat pushes each to `/wechat/push`.
//! - That opens WeChat's reply window: a message allows [`USER_MESSAGE`] (5 replies within 48 h),
//!   entering [`ENTERED`] (2 within 1 min). Quotas do not add up: each action sets the replies
//!   left to the larger of what is left and its own quota, and the window's end to the later of
//!   the two. Outside it WeChat answers 45015; past the quota 45047. WeChat's answer is the
//!   truth: ours ([`Window`]) is what the back office is shown, corrected by those answers.
//! - The push may be answered `transfer_customer_service` (hand the message to the console's
//!   agents; only for a user's message, never an event), otherwise `success`; replies are sent by
//!   `POST /cgi-bin/message/custom/send` (text, an image by `media_id`, a link, a mini-program
//!   card), typing by `/cgi-bin/message/custom/typing`, images uploaded by `/cgi-bin/media/upload`.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::push::{BodyFormat, PushMessage};

/// A reply quota and how long it lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub replies: u64,
    pub secs: u64,
}

/// What a user's message allows.
pub const USER_MESSAGE: Quota = Quota {
    replies: 5,
    secs: 48 * 3600,
};
/// What entering the chat allows.
pub const ENTERED: Quota = Quota { replies: 2, secs: 60 };

/// The most characters of a user's text kept.
pub const MAX_KEPT_TEXT: usize = 2000;
/// The most bytes WeChat sends in one text reply.
pub const MAX_REPLY_TEXT_BYTES: usize = 2048;
/// The largest image `media/upload` takes for customer service.
pub const MAX_IMAGE_BYTES: usize = 2 << 20;
/// How long WeChat keeps a temporary media.
pub const MEDIA_LIFETIME_SECS: u64 = 3 * 24 * 3600;

/// WeChat's reply window for one user, as far as we know it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Window {
    /// Unix seconds; 0: never opened.
    pub until: u64,
    pub left: u64,
}

impl Window {
    pub fn is_open(&self, now: u64) -> bool {
        now < self.until && self.left > 0
    }

    /// The window after an action at `at` that grants `quota`.
    pub fn after(self, quota: Quota, at: u64) -> Self {
        let open = at < self.until;
        Self {
            until: self.until.max(at + quota.secs),
            left: if open {
                self.left.max(quota.replies)
            } else {
                quota.replies
            },
        }
    }

    /// The window after one reply was sent.
    pub fn after_reply(self) -> Self {
        Self {
            left: self.left.saturating_sub(1),
            ..self
        }
    }
}

/// Whether a push is the customer service's: the quota it grants and whether it is a user's
/// message (which may be handed to the console's agents) rather than an event.
pub fn quota_of(message: &PushMessage) -> Option<(Quota, bool)> {
    match (message.msg_type()?, message.event()) {
        ("text" | "image" | "miniprogrampage", _) => Some((USER_MESSAGE, true)),
        ("event", Some("user_enter_tempsession")) => Some((ENTERED, false)),
        _ => None,
    }
}

/// What is kept of a user's message: its kind and the fields that say what it was (a text cut
/// to [`MAX_KEPT_TEXT`] characters).
pub fn kept_of(message: &PushMessage) -> Value {
    let field = |name: &str| message.get(name).unwrap_or_default();
    match (message.msg_type().unwrap_or_default(), message.event()) {
        ("text", _) => json!({
            "msgtype": "text",
            "content": field("Content").chars().take(MAX_KEPT_TEXT).collect::<String>(),
        }),
        ("image", _) => json!({
            "msgtype": "image", "pic_url": field("PicUrl"), "media_id": field("MediaId"),
        }),
        ("miniprogrampage", _) => json!({
            "msgtype": "miniprogrampage",
            "title": field("Title"),
            "appid": field("AppId"),
            "pagepath": field("PagePath"),
            "thumb_url": field("ThumbUrl"),
            "thumb_media_id": field("ThumbMediaId"),
        }),
        _ => json!({ "msgtype": "enter", "session_from": field("SessionFrom") }),
    }
}

/// A reply as the back office gives it (WeChat's own shape, `openid` for `touser`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    pub openid: String,
    pub msgtype: String,
    #[serde(default)]
    pub text: Option<TextReply>,
    #[serde(default)]
    pub image: Option<ImageReply>,
    #[serde(default)]
    pub link: Option<LinkReply>,
    #[serde(default)]
    pub miniprogrampage: Option<PageReply>,
}

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TextReply {
    pub content: String,
}

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ImageReply {
    pub media_id: String,
}

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct LinkReply {
    pub title: String,
    pub description: String,
    pub url: String,
    pub thumb_url: String,
}

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PageReply {
    pub title: String,
    pub pagepath: String,
    pub thumb_media_id: String,
}

fn media_id_ok(media_id: &str) -> bool {
    (1..=128).contains(&media_id.len())
        && media_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-@.".contains(&b))
}

fn https_url(url: &str) -> bool {
    url.len() <= 1024 && reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
}

impl Reply {
    /// The body of `custom/send`, or what is wrong with the reply (named by its field).
    pub fn body(&self) -> Result<Value, String> {
        let one = |present: usize| {
            if present == 1 {
                Ok(())
            } else {
                Err(format!(
                    "give exactly one of text, image, link, miniprogrampage, the one msgtype {} names",
                    self.msgtype
                ))
            }
        };
        let given = [
            self.text.is_some(),
            self.image.is_some(),
            self.link.is_some(),
            self.miniprogrampage.is_some(),
        ];
        one(given.iter().filter(|g| **g).count())?;
        let content = match (
            self.msgtype.as_str(),
            &self.text,
            &self.image,
            &self.link,
            &self.miniprogrampage,
        ) {
            ("text", Some(text), ..) => {
                if text.content.trim().is_empty() || text.content.len() > MAX_REPLY_TEXT_BYTES {
                    return Err(format!("text.content must be 1 to {MAX_REPLY_TEXT_BYTES} bytes"));
                }
                json!(text)
            }
            ("image", _, Some(image), ..) => {
                if !media_id_ok(&image.media_id) {
                    return Err("image.media_id must be a media_id from upload_temp_media".into());
                }
                json!(image)
            }
            ("link", _, _, Some(link), _) => {
                if link.title.trim().is_empty() || link.title.chars().count() > 64 {
                    return Err("link.title must be 1 to 64 characters".into());
                }
                if link.description.chars().count() > 256 {
                    return Err("link.description must be at most 256 characters".into());
                }
                if !https_url(&link.url) || !https_url(&link.thumb_url) {
                    return Err("link.url and link.thumb_url must be http(s) URLs".into());
                }
                json!(link)
            }
            ("miniprogrampage", _, _, _, Some(page)) => {
                if page.title.trim().is_empty() || page.title.chars().count() > 64 {
                    return Err("miniprogrampage.title must be 1 to 64 characters".into());
                }
                if page.pagepath.is_empty() || page.pagepath.starts_with('/') || page.pagepath.len() > 256 {
                    return Err("miniprogrampage.pagepath must be a page path such as pages/index/index?id=1".into());
                }
                if !media_id_ok(&page.thumb_media_id) {
                    return Err("miniprogrampage.thumb_media_id must be a media_id from upload_temp_media".into());
                }
                json!(page)
            }
            ("text" | "image" | "link" | "miniprogrampage", ..) => {
                return Err(format!("msgtype {} needs its {} field", self.msgtype, self.msgtype));
            }
            _ => return Err("msgtype must be text, image, link or miniprogrampage".into()),
        };
        let mut body = json!({ "touser": self.openid, "msgtype": self.msgtype });
        body[self.msgtype.as_str()] = content;
        Ok(body)
    }

    /// What is kept of it in the conversation.
    pub fn kept(&self) -> Value {
        let mut kept = json!({ "msgtype": self.msgtype });
        let fields = match self.msgtype.as_str() {
            "text" => json!(self.text),
            "image" => json!(self.image),
            "link" => json!(self.link),
            _ => json!(self.miniprogrampage),
        };
        if let Value::Object(fields) = fields {
            for (k, v) in fields {
                kept[k] = v;
            }
        }
        kept
    }
}

/// The image type of `bytes` by its magic number: what `media/upload` takes for customer service.
pub fn image_type(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("image/jpeg")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("image/gif")
    } else {
        None
    }
}

/// The passive reply that hands a user's message to the console's agents, in the push's
/// format: to the user (`ToUserName` = the push's sender), from the mini program (its original
/// id, the push's `ToUserName`).
pub fn transfer_reply(format: BodyFormat, openid: &str, original_id: &str, now: u64) -> String {
    match format {
        BodyFormat::Json => json!({
            "ToUserName": openid,
            "FromUserName": original_id,
            "CreateTime": now,
            "MsgType": "transfer_customer_service",
        })
        .to_string(),
        BodyFormat::Xml => format!(
            "<xml><ToUserName>{}</ToUserName><FromUserName>{}</FromUserName><CreateTime>{now}</CreateTime>\
             <MsgType>transfer_customer_service</MsgType></xml>",
            quick_xml::escape::escape(openid),
            quick_xml::escape::escape(original_id),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_do_not_add_up() {
        let now = 1_000_000;
        let window = Window::default().after(USER_MESSAGE, now);
        assert_eq!(
            window,
            Window {
                until: now + 48 * 3600,
                left: 5
            }
        );
        // Two replies sent, then the user enters the chat: 3 left stays 3, the end stays.
        let window = window.after_reply().after_reply().after(ENTERED, now + 10);
        assert_eq!(
            window,
            Window {
                until: now + 48 * 3600,
                left: 3
            }
        );
        // Four sent: entering lifts 1 to 2.
        let window = window.after_reply().after_reply().after(ENTERED, now + 20);
        assert_eq!(window.left, 2);
        // Closed: entering alone opens 2 for a minute.
        let later = now + 49 * 3600;
        assert!(!window.is_open(later));
        assert_eq!(
            window.after(ENTERED, later),
            Window {
                until: later + 60,
                left: 2
            }
        );
    }

    #[test]
    fn a_reply_is_checked_field_by_field() {
        let reply = |v: Value| serde_json::from_value::<Reply>(v).unwrap().body();
        let ok = reply(json!({"openid": "o1", "msgtype": "text", "text": {"content": "hi"}})).unwrap();
        assert_eq!(
            ok,
            json!({"touser": "o1", "msgtype": "text", "text": {"content": "hi"}})
        );
        let err = reply(json!({"openid": "o1", "msgtype": "image", "text": {"content": "hi"}})).unwrap_err();
        assert!(err.contains("image"), "{err}");
        let err = reply(json!({"openid": "o1", "msgtype": "text", "text": {"content": "x".repeat(2049)}})).unwrap_err();
        assert!(err.contains("2048"), "{err}");
        let err = reply(json!({"openid": "o1", "msgtype": "voice", "text": {"content": "x"}})).unwrap_err();
        assert!(err.contains("msgtype"), "{err}");
        let err = reply(json!({"openid": "o1", "msgtype": "miniprogrampage",
            "miniprogrampage": {"title": "t", "pagepath": "/pages/a", "thumb_media_id": "m1"}}))
        .unwrap_err();
        assert!(err.contains("pagepath"), "{err}");
        let err = reply(json!({"openid": "o1", "msgtype": "link",
            "link": {"title": "t", "description": "d", "url": "javascript:alert(1)", "thumb_url": "https://a/b.png"}}))
        .unwrap_err();
        assert!(err.contains("URL"), "{err}");
    }

    #[test]
    fn the_transfer_reply_names_the_user_and_the_mini_program() {
        let xml = transfer_reply(BodyFormat::Xml, "o<1>", "gh_abc", 7);
        assert_eq!(
            xml,
            "<xml><ToUserName>o&lt;1&gt;</ToUserName><FromUserName>gh_abc</FromUserName><CreateTime>7</CreateTime>\
             <MsgType>transfer_customer_service</MsgType></xml>"
        );
        let parsed = PushMessage::parse(&xml).unwrap();
        assert_eq!(parsed.get("ToUserName"), Some("o<1>"));
        let json: Value = serde_json::from_str(&transfer_reply(BodyFormat::Json, "o1", "gh_abc", 7)).unwrap();
        assert_eq!(json["MsgType"], "transfer_customer_service");
    }
}
