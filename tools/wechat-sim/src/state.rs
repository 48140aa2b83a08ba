//! The simulator's world: users and their session keys, login codes, access tokens, the clock,
//! injected faults and the log of calls received.

use std::collections::{HashMap, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::SimConfig;
use crate::crypto::random_bytes;

/// Login codes from `wx.login` are valid this long.
pub const CODE_TTL_SECS: i64 = 300;
/// Access tokens live this long; stable_token rotates in the last 5 minutes.
pub const TOKEN_TTL_SECS: i64 = 7200;
pub const TOKEN_ROTATE_BEFORE_SECS: i64 = 300;

pub struct User {
    pub unionid: Option<String>,
    pub session_key: String,
    /// Keys this user had before; `resetusersessionkey` accepts a signature by one of them.
    pub previous_keys: Vec<String>,
}

/// Pages of the released version: `getwxacodeunlimit` with `check_path` refuses others (41030).
pub const PAGES: [&str; 3] = ["pages/index/index", "pages/share/share", "pages/detail/detail"];

pub struct Code {
    pub openid: String,
    pub issued_at: i64,
    pub used: bool,
}

/// A code from the `getPhoneNumber` button, exchanged by `getuserphonenumber`.
pub struct PhoneCode {
    pub phone_number: String,
    pub country_code: String,
    pub issued_at: i64,
    pub used: bool,
}

#[derive(Clone)]
pub struct Token {
    pub value: String,
    pub expires_at: i64,
}

/// What the next `count` calls of `api` do instead of (or before) answering normally.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub api: String,
    #[serde(default = "one")]
    pub count: u32,
    /// Wait this long before answering (a slow or hung WeChat).
    #[serde(default)]
    pub delay_ms: u64,
    /// Answer HTTP 200 with this errcode (-1 busy, 45011 rate limit, ...).
    #[serde(default)]
    pub errcode: Option<i64>,
    /// Answer with this HTTP status and a non-JSON body (a gateway failure).
    #[serde(default)]
    pub http_status: Option<u16>,
    /// WeChat Pay: answer normally but with a signature that does not match.
    #[serde(default)]
    pub bad_signature: bool,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Serialize)]
pub struct LoggedRequest {
    pub api: String,
    pub at: i64,
}

pub struct SimState {
    pub config: SimConfig,
    pub clock_offset_secs: i64,
    pub users: HashMap<String, User>,
    pub codes: HashMap<String, Code>,
    pub phone_codes: HashMap<String, PhoneCode>,
    pub stable_current: Option<Token>,
    pub stable_previous: Option<Token>,
    pub cgi_token: Option<Token>,
    pub card_ticket: Option<Token>,
    pub faults: VecDeque<Fault>,
    pub log: Vec<LoggedRequest>,
    pub pay: crate::pay::PayState,
}

pub enum TokenCheck {
    Valid,
    Expired,
    Unknown,
}

impl SimState {
    pub fn new(config: SimConfig) -> Self {
        Self {
            config,
            clock_offset_secs: 0,
            users: HashMap::new(),
            codes: HashMap::new(),
            phone_codes: HashMap::new(),
            stable_current: None,
            stable_previous: None,
            cgi_token: None,
            card_ticket: None,
            faults: VecDeque::new(),
            log: Vec::new(),
            pay: Default::default(),
        }
    }

    pub fn now(&self) -> i64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        real + self.clock_offset_secs
    }

    /// Logs a call of `api` and takes the first fault queued for it.
    pub fn begin(&mut self, api: &str) -> Option<Fault> {
        let at = self.now();
        self.log.push(LoggedRequest {
            api: api.to_owned(),
            at,
        });
        let index = self.faults.iter().position(|f| f.api == api)?;
        let fault = self.faults[index].clone();
        if fault.count <= 1 {
            self.faults.remove(index);
        } else {
            self.faults[index].count -= 1;
        }
        Some(fault)
    }

    pub fn new_token(&self) -> Token {
        Token {
            value: random_text(64),
            expires_at: self.now() + TOKEN_TTL_SECS,
        }
    }

    pub fn check_token(&self, value: &str) -> TokenCheck {
        let now = self.now();
        let known = [&self.stable_current, &self.stable_previous, &self.cgi_token]
            .into_iter()
            .flatten()
            .find(|t| t.value == value);
        match known {
            Some(t) if t.expires_at > now => TokenCheck::Valid,
            Some(_) => TokenCheck::Expired,
            None => TokenCheck::Unknown,
        }
    }
}

/// Random text of `len` characters from `[0-9A-Za-z]`, like WeChat's codes and tokens.
pub fn random_text(len: usize) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let bytes = random_bytes::<128>();
    bytes
        .iter()
        .take(len)
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

/// A request id like the ones WeChat appends to its messages.
pub fn rid() -> String {
    hex::encode(random_bytes::<12>())
}
