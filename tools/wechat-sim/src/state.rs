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
    /// When the user last used the mini program (`wx.login`, a subscribe popup): the content and
    /// risk APIs want a user active in the last 2 hours (61010 otherwise).
    pub active_at: i64,
}

/// The content and risk APIs answer 61010 for a user who has not used the mini program for this long.
pub const ACTIVE_WITHIN_SECS: i64 = 2 * 3600;

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
    /// Wait this long before processing and answering (a slow or hung WeChat).
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
    /// WeChat Pay (APIv3): answer this signed error without processing the request.
    #[serde(default)]
    pub pay_error: Option<crate::pay_faults::PayError>,
    /// WeChat Pay (APIv3): drop the connection without an answer, before or after processing.
    #[serde(default)]
    pub cut: Option<crate::pay_faults::Cut>,
    /// WeChat Pay (APIv3): process the request, then wait this long before answering (a timeout
    /// after the request landed).
    #[serde(default)]
    pub delay_after_ms: u64,
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
    pub refunds: crate::refund::RefundState,
    pub transfers: crate::transfer::TransferState,
    /// WeChat Pay notifications held for a test to deliver.
    pub notifications: crate::notify::HoldState,
    pub shipping: crate::shipping::ShippingState,
    pub push: crate::push::PushState,
    pub subscribe: crate::messages::SubscribeState,
    pub customer_service: crate::customer_service::CustomerServiceState,
    pub security: crate::security::SecurityState,
    pub api_security: crate::api_security::ApiSecurityState,
    pub links: crate::links::LinkState,
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
            refunds: Default::default(),
            transfers: Default::default(),
            notifications: Default::default(),
            shipping: Default::default(),
            push: Default::default(),
            subscribe: Default::default(),
            customer_service: Default::default(),
            security: Default::default(),
            api_security: Default::default(),
            links: Default::default(),
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

    /// The user `openid` names, if WeChat knows them and they used the mini program in the last 2
    /// hours; else the errcode and errmsg of the content and risk APIs (40003, 61010).
    pub fn active_user(&self, openid: Option<&str>) -> Result<&User, (i64, &'static str)> {
        let user = openid
            .filter(|o| !o.is_empty())
            .and_then(|o| self.users.get(o))
            .ok_or((40003, "invalid openid"))?;
        if self.now() - user.active_at > ACTIVE_WITHIN_SECS {
            return Err((61010, "code is expired"));
        }
        Ok(user)
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

/// `secs` as RFC 3339 in China Standard Time, the way WeChat Pay writes its times
/// (`2026-11-25T12:00:00+08:00`).
pub fn rfc3339_cst(secs: i64) -> String {
    let local = secs + 8 * 3600;
    let (days, rest) = (local.div_euclid(86_400), local.rem_euclid(86_400));
    // Days since 1970-01-01 to a civil date (Howard Hinnant's days_from_civil, inverted).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}+08:00",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Whether `text` is an RFC 3339 date-time: `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`.
pub fn is_rfc3339(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| b.get(range).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let number = |range: std::ops::Range<usize>| text[range].parse::<u32>().unwrap_or(99);
    let shape = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && matches!(b[10], b'T' | b't')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !shape || !(1..=12).contains(&number(5..7)) || !(1..=31).contains(&number(8..10)) {
        return false;
    }
    if number(11..13) > 23 || number(14..16) > 59 || number(17..19) > 60 {
        return false;
    }
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let len = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if len == 0 {
            return false;
        }
        rest = &fraction[len..];
    }
    match rest.as_bytes() {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => {
            [h1, h2, m1, m2].iter().all(|d| d.is_ascii_digit())
                && rest[1..3].parse::<u32>().unwrap_or(99) <= 23
                && rest[4..6].parse::<u32>().unwrap_or(99) <= 59
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_in_china_standard_time() {
        // date -d @1795579200 -> 2026-11-25 04:00:00 UTC, 12:00 in UTC+8.
        assert_eq!(rfc3339_cst(1_795_579_200), "2026-11-25T12:00:00+08:00");
        assert_eq!(rfc3339_cst(0), "1970-01-01T08:00:00+08:00");
        // 2024-02-29 23:59:59 +08:00 (a leap day) is 1709222399.
        assert_eq!(rfc3339_cst(1_709_222_399), "2024-02-29T23:59:59+08:00");
    }

    #[test]
    fn rfc3339_is_recognised() {
        for good in [
            "2022-12-15T13:29:35.120+08:00",
            "2026-11-26T12:00:00+08:00",
            "2026-11-26T04:00:00Z",
            &rfc3339_cst(1_795_579_200),
        ] {
            assert!(is_rfc3339(good), "{good}");
        }
        for bad in [
            "2026-11-26 12:00:00",
            "2026-11-26T12:00:00",
            "2026-13-26T12:00:00+08:00",
            "2026-11-26T12:00:00.+08:00",
            "2026-11-26T12:00:00+0800",
            "1764129600",
            "",
        ] {
            assert!(!is_rfc3339(bad), "{bad}");
        }
    }
}
