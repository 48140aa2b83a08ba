//! Customer-service conversations, in the messages table: one item per user, `cs#<openid>`, with
//! its last [`MAX_KEPT_MESSAGES`] messages (theirs and ours), WeChat's reply window as we know it
//! ([`Window`]), whether the user waits for an answer, and when a message was last handed to the
//! console's agents. Each change reads the item and writes it back on the condition that its
//! `version` did not move meanwhile (two deliveries, a push and a reply at once: each applied
//! once, none lost); a push's message is kept once, by its key, whatever WeChat repeats.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Value, json};

use super::{StoreError, Table, applied, n, s, send, store_error};
use crate::customer_service::{Quota, Window};

pub mod attr {
    pub const PK: &str = "pk";
    pub const OPENID: &str = "openid";
    /// The kept messages, as a JSON array.
    pub const MESSAGES: &str = "messages";
    pub const WINDOW_UNTIL: &str = "window_until";
    pub const REPLIES_LEFT: &str = "replies_left";
    pub const AWAITING_REPLY: &str = "awaiting_reply";
    pub const LAST_USER_AT: &str = "last_user_at";
    pub const HANDED_OVER_AT: &str = "handed_over_at";
    pub const VERSION: &str = "version";
    pub const UPDATED_AT: &str = "updated_at";
    pub const EXPIRES_AT: &str = "expires_at";
}

/// The most messages kept per conversation (older ones drop off).
pub const MAX_KEPT_MESSAGES: usize = 50;
/// The most bytes of kept messages (their JSON), well inside DynamoDB's 400 KB item.
pub const MAX_KEPT_BYTES: usize = 200_000;
/// How long a conversation is kept after its last message.
pub const CONVERSATION_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
/// How often a change is tried again when another one moved the item meanwhile.
const ATTEMPTS: u32 = 8;

/// One user's conversation with the customer service.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Conversation {
    pub openid: String,
    /// Oldest first: `{"from": "user"|"app", "msgtype", …, "at", "key"}`.
    pub messages: Vec<Value>,
    pub window: Window,
    /// The user wrote after our last reply.
    pub awaiting_reply: bool,
    pub last_user_at: Option<u64>,
    /// When a message was last handed to the console's agents.
    pub handed_over_at: Option<u64>,
    #[serde(skip)]
    version: u64,
}

impl Conversation {
    /// A user's conversation before they ever wrote.
    pub fn empty(openid: &str) -> Self {
        Self {
            openid: openid.to_owned(),
            ..Self::default()
        }
    }

    fn push_message(&mut self, message: Value) {
        self.messages.push(message);
        let over = self.messages.len().saturating_sub(MAX_KEPT_MESSAGES);
        self.messages.drain(..over);
        // 50 long texts in CJK could near DynamoDB's 400 KB item: the oldest go first.
        while self.messages.len() > 1 && serde_json::to_string(&self.messages).map_or(0, |t| t.len()) > MAX_KEPT_BYTES {
            self.messages.remove(0);
        }
    }

    fn holds(&self, key: &str) -> bool {
        self.messages.iter().any(|m| m["key"] == key)
    }
}

/// What recording a user's message did.
#[derive(Debug)]
pub struct FromUser {
    pub conversation: Conversation,
    /// It opened WeChat's reply window (none was open): a conversation begins. False for a
    /// message kept before (WeChat's repeat).
    pub opened: bool,
}

#[derive(Clone)]
pub struct ConversationStore {
    client: Client,
    table: String,
}

fn number(item: &std::collections::HashMap<String, AttributeValue>, name: &str) -> u64 {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl ConversationStore {
    pub fn new(client: Client, table: &str) -> Self {
        Self {
            client,
            table: table.to_owned(),
        }
    }

    fn key(openid: &str) -> AttributeValue {
        s(&format!("cs#{openid}"))
    }

    /// The conversation as it stands (a consistent read).
    pub async fn get(&self, openid: &str) -> Result<Option<Conversation>, StoreError> {
        let request = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::PK, Self::key(openid))
            .consistent_read(true);
        let output = send(&self.client, Table::Messages, &self.table, request.send())
            .await?
            .map_err(|e| store_error(Table::Messages, &self.table, e))?;
        let Some(item) = output.item else {
            return Ok(None);
        };
        let messages = match item.get(attr::MESSAGES).and_then(|v| v.as_s().ok()) {
            Some(text) => serde_json::from_str(text).map_err(|_| StoreError::Malformed {
                table: Table::Messages,
                attribute: attr::MESSAGES,
            })?,
            None => Vec::new(),
        };
        let optional = |name| Some(number(&item, name)).filter(|&at| at > 0);
        Ok(Some(Conversation {
            openid: openid.to_owned(),
            messages,
            window: Window {
                until: number(&item, attr::WINDOW_UNTIL),
                left: number(&item, attr::REPLIES_LEFT),
            },
            awaiting_reply: item
                .get(attr::AWAITING_REPLY)
                .and_then(|v| v.as_bool().ok())
                .copied()
                .unwrap_or(false),
            last_user_at: optional(attr::LAST_USER_AT),
            handed_over_at: optional(attr::HANDED_OVER_AT),
            version: number(&item, attr::VERSION),
        }))
    }

    /// Applies `change` to the conversation (a new one if there is none) and writes it back if
    /// nobody wrote it meanwhile, trying again on the fresh item otherwise. `change` answers
    /// whether it changed anything (nothing is written if not).
    async fn change(
        &self,
        openid: &str,
        now: u64,
        change: impl Fn(&mut Conversation) -> bool,
    ) -> Result<Conversation, StoreError> {
        for _ in 0..ATTEMPTS {
            let current = self.get(openid).await?;
            let existed = current.is_some();
            let mut conversation = current.unwrap_or_else(|| Conversation::empty(openid));
            if !change(&mut conversation) {
                return Ok(conversation);
            }
            let messages = serde_json::to_string(&conversation.messages).expect("JSON values serialise");
            let mut request = self
                .client
                .update_item()
                .table_name(&self.table)
                .key(attr::PK, Self::key(openid))
                .update_expression(
                    "SET #openid = :openid, #messages = :messages, #until = :until, #left = :left, \
                     #awaiting = :awaiting, #user_at = :user_at, #handed = :handed, #version = :next, \
                     #updated = :now, #expires = :expires",
                )
                .expression_attribute_names("#openid", attr::OPENID)
                .expression_attribute_names("#messages", attr::MESSAGES)
                .expression_attribute_names("#until", attr::WINDOW_UNTIL)
                .expression_attribute_names("#left", attr::REPLIES_LEFT)
                .expression_attribute_names("#awaiting", attr::AWAITING_REPLY)
                .expression_attribute_names("#user_at", attr::LAST_USER_AT)
                .expression_attribute_names("#handed", attr::HANDED_OVER_AT)
                .expression_attribute_names("#version", attr::VERSION)
                .expression_attribute_names("#updated", attr::UPDATED_AT)
                .expression_attribute_names("#expires", attr::EXPIRES_AT)
                .expression_attribute_values(":openid", s(openid))
                .expression_attribute_values(":messages", s(&messages))
                .expression_attribute_values(":until", n(conversation.window.until))
                .expression_attribute_values(":left", n(conversation.window.left))
                .expression_attribute_values(":awaiting", AttributeValue::Bool(conversation.awaiting_reply))
                .expression_attribute_values(":user_at", n(conversation.last_user_at.unwrap_or(0)))
                .expression_attribute_values(":handed", n(conversation.handed_over_at.unwrap_or(0)))
                .expression_attribute_values(":next", n(conversation.version + 1))
                .expression_attribute_values(":now", n(now))
                .expression_attribute_values(":expires", n(now + CONVERSATION_LIFETIME.as_secs()));
            request = if existed {
                request
                    .condition_expression("#version = :version")
                    .expression_attribute_values(":version", n(conversation.version))
            } else {
                request
                    .condition_expression("attribute_not_exists(#pk)")
                    .expression_attribute_names("#pk", attr::PK)
            };
            if applied(
                Table::Messages,
                &self.table,
                send(&self.client, Table::Messages, &self.table, request.send()).await?,
            )? {
                conversation.version += 1;
                return Ok(conversation);
            }
        }
        Err(StoreError::Unavailable {
            table: Table::Messages,
            detail: format!(
                "{}: conversation changed by others {ATTEMPTS} times in a row",
                self.table
            ),
        })
    }

    /// A user's message or their entering the chat (`kept`, WeChat's push `key`), at `at`: kept
    /// once, and the reply window opened as `quota` says. `user_message`: the user waits for an
    /// answer (entering alone does not); `hand_over`: it goes to the console's agents, who answer
    /// it (in the same write).
    #[allow(clippy::too_many_arguments)]
    pub async fn record_from_user(
        &self,
        openid: &str,
        key: &str,
        kept: &Value,
        (quota, user_message): (Quota, bool),
        at: u64,
        now: u64,
        hand_over: bool,
    ) -> Result<FromUser, StoreError> {
        let opened = std::sync::atomic::AtomicBool::new(false);
        let conversation = self
            .change(openid, now, |c| {
                opened.store(false, Relaxed);
                if c.holds(key) {
                    return false;
                }
                opened.store(!c.window.is_open(at), Relaxed);
                let mut message = kept.clone();
                message["from"] = json!("user");
                message["at"] = json!(at);
                message["key"] = json!(key);
                c.push_message(message);
                c.window = c.window.after(quota, at);
                c.last_user_at = Some(c.last_user_at.unwrap_or(0).max(at));
                c.awaiting_reply |= user_message;
                if hand_over {
                    c.handed_over_at = Some(now);
                    c.awaiting_reply = false;
                }
                true
            })
            .await?;
        Ok(FromUser {
            conversation,
            opened: opened.load(Relaxed),
        })
    }

    /// A reply WeChat accepted: kept, one fewer left in the window.
    pub async fn record_reply(&self, openid: &str, kept: &Value, now: u64) -> Result<Conversation, StoreError> {
        let key = crate::random::nonce();
        self.change(openid, now, |c| {
            let mut message = kept.clone();
            message["from"] = json!("app");
            message["at"] = json!(now);
            message["key"] = json!(key);
            c.push_message(message);
            c.window = c.window.after_reply();
            c.awaiting_reply = false;
            true
        })
        .await
    }

    /// What WeChat's refusal of a reply says of the window: closed (45015) or used up (45047).
    pub async fn record_window_refusal(&self, openid: &str, closed: bool, now: u64) -> Result<(), StoreError> {
        self.change(openid, now, |c| {
            let before = c.window;
            c.window.left = 0;
            if closed {
                c.window.until = c.window.until.min(now);
            }
            c.window != before
        })
        .await
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kept_messages_stay_within_their_count_and_bytes() {
        let mut conversation = Conversation::empty("o1");
        for i in 0..60 {
            conversation.push_message(json!({"msgtype": "text", "content": format!("{i}"), "from": "user"}));
        }
        assert_eq!(conversation.messages.len(), MAX_KEPT_MESSAGES);
        assert_eq!(conversation.messages[0]["content"], "10", "the oldest went first");
        for _ in 0..60 {
            conversation.push_message(json!({"msgtype": "text", "content": "茶".repeat(2000), "from": "user"}));
        }
        let bytes = serde_json::to_string(&conversation.messages).unwrap().len();
        assert!(bytes <= MAX_KEPT_BYTES, "{bytes}");
        assert!(conversation.messages.len() > 20, "{}", conversation.messages.len());
    }
}
