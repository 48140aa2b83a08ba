//! Settings read once from the environment at container init: only those of the parts the
//! function declares ([`Parts`]), so no function fails init over a setting it never reads.

use std::time::Duration;

pub use crate::net::TlsRoots;
use crate::pay::v2::SignType;

pub const DEFAULT_WECHAT_API_BASE: &str = "https://api.weixin.qq.com";
pub const DEFAULT_SESSION_TTL_SECS: u64 = 7 * 24 * 3600;
pub const DEFAULT_SECRET_CACHE_TTL_SECS: u64 = 300;
pub const DEFAULT_WECHAT_TIMEOUT_MS: u64 = 5000;
pub const DEFAULT_WATERMARK_MAX_AGE_SECS: u64 = 300;
pub const DEFAULT_QRCODE_CACHE_TTL_SECS: u64 = 600;
pub const DEFAULT_WECHATPAY_API_BASE: &str = "https://api.mch.weixin.qq.com";
/// A caller's budget on a route that spends app-wide quotas (see `store::budgets`).
pub const DEFAULT_CALLER_BUDGET_PER_MINUTE: u64 = 10;
pub const DEFAULT_CALLER_BUDGET_BURST: u64 = 5;

/// Longest accepted settings: beyond these a value is a typo, and adding it to a clock would
/// overflow.
const MAX_TTL_SECS: u64 = 366 * 24 * 3600;
const MAX_TIMEOUT_MS: u64 = 60_000;

/// What a function uses of the shared crate. Its settings, its state and its IAM policy in
/// `template.yaml` (checked by a test) follow from these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Parts {
    /// The sessions table (`SESSIONS_TABLE`).
    pub sessions: bool,
    /// Issues sessions (`SESSION_TTL_SECS`).
    pub login: bool,
    /// The WeChat server API with the app secret (`jscode2session` needs no more).
    pub wechat: bool,
    /// Token-protected WeChat APIs: the fleet's shared access token and card ticket in the
    /// tokens table (`TOKENS_TABLE`); needs `wechat`.
    pub access_token: bool,
    /// Open data: decryption and its watermark (`WATERMARK_MAX_AGE_SECS`).
    pub open_data: bool,
    /// The in-memory cache of mini-program code images (`QRCODE_CACHE_TTL_SECS`).
    pub qrcode_cache: bool,
    /// The orders table (`ORDERS_TABLE`).
    pub orders: bool,
    /// WeChat Pay's keys (the pay secret); needs `orders`.
    pub pay: bool,
    /// Places orders with WeChat Pay (`WECHATPAY_API_BASE`, `PAY_NOTIFY_URL`).
    pub pay_orders: bool,
    /// The refunds table (`REFUNDS_TABLE`).
    pub refunds: bool,
    /// The merchant transfers table (`TRANSFERS_TABLE`).
    pub transfers: bool,
    /// The messages table (`MESSAGES_TABLE`): pushes handled, subscriptions, media checks.
    pub messages: bool,
    /// The message push's token and EncodingAESKey, kept in a secret of their own
    /// (`PUSH_SECRET_ID`); no WeChat API call.
    pub push: bool,
    /// Per-caller budgets on the routes that spend app-wide quotas or money for a caller
    /// (`CALLER_BUDGET_PER_MINUTE`, `CALLER_BUDGET_BURST`), kept in the sessions table; needs
    /// `sessions`.
    pub budget: bool,
    /// Asynchronous media checks, of URLs on the hosts the operator lists (`MEDIA_URL_HOSTS`).
    pub media_check: bool,
    /// An automatic customer-service reply, when the operator sets one
    /// (`CUSTOMER_SERVICE_AUTO_REPLY`): with it the function also has `wechat` and
    /// `access_token` (the reply is a WeChat API call), without it neither.
    pub auto_reply: bool,
}

impl Parts {
    pub const NONE: Self = Self {
        sessions: false,
        login: false,
        wechat: false,
        access_token: false,
        open_data: false,
        qrcode_cache: false,
        orders: false,
        pay: false,
        pay_orders: false,
        refunds: false,
        transfers: false,
        messages: false,
        push: false,
        budget: false,
        media_check: false,
        auto_reply: false,
    };

    /// Every part (tests build one state that serves every function).
    pub const ALL: Self = Self {
        sessions: true,
        login: true,
        wechat: true,
        access_token: true,
        open_data: true,
        qrcode_cache: true,
        orders: true,
        pay: true,
        pay_orders: true,
        refunds: true,
        transfers: true,
        messages: true,
        push: true,
        budget: true,
        media_check: true,
        auto_reply: true,
    };

    /// These parts as `config` (read for them) puts them to work: an automatic reply, when the
    /// operator set one, brings `wechat` and `access_token`.
    pub fn in_effect(self, config: &Config) -> Self {
        self.with_auto_reply(config.customer_service_auto_reply.is_some())
    }

    fn with_auto_reply(self, set: bool) -> Self {
        if self.auto_reply && set {
            Self {
                wechat: true,
                access_token: true,
                ..self
            }
        } else {
            self
        }
    }

    /// Every setting these parts read: `(name, required)`.
    pub fn settings(&self) -> Vec<(&'static str, bool)> {
        let mut names = vec![("APP_ID", true), ("TLS_ROOTS", false), ("CONNECT_AT_INIT", false)];
        let mut add = |on: bool, list: &[(&'static str, bool)]| {
            if on {
                for item in list {
                    if !names.iter().any(|(n, _)| *n == item.0) {
                        names.push(*item);
                    }
                }
            }
        };
        add(self.sessions, &[("SESSIONS_TABLE", true)]);
        add(self.login, &[("SESSION_TTL_SECS", false)]);
        add(
            self.wechat,
            &[
                ("APP_SECRET_ID", true),
                ("WECHAT_API_BASE", false),
                ("WECHAT_TIMEOUT_MS", false),
                ("SECRET_CACHE_TTL_SECS", false),
            ],
        );
        add(self.access_token, &[("TOKENS_TABLE", true)]);
        add(
            self.push,
            &[
                ("PUSH_SECRET_ID", true),
                ("SECRET_CACHE_TTL_SECS", false),
                ("PUSH_PLAIN_EFFECTS", false),
                ("CUSTOMER_SERVICE_HANDOVER", false),
            ],
        );
        add(self.open_data, &[("WATERMARK_MAX_AGE_SECS", false)]);
        add(self.qrcode_cache, &[("QRCODE_CACHE_TTL_SECS", false)]);
        add(self.orders, &[("ORDERS_TABLE", true)]);
        add(
            self.pay,
            &[
                ("PAY_SECRET_ID", true),
                ("PAY_API", false),
                ("PAY_V2_SIGN_TYPE", false),
                ("SECRET_CACHE_TTL_SECS", false),
            ],
        );
        add(self.refunds, &[("REFUNDS_TABLE", true)]);
        add(self.transfers, &[("TRANSFERS_TABLE", true)]);
        add(self.messages, &[("MESSAGES_TABLE", true)]);
        add(
            self.budget,
            &[("CALLER_BUDGET_PER_MINUTE", false), ("CALLER_BUDGET_BURST", false)],
        );
        add(self.media_check, &[("MEDIA_URL_HOSTS", false)]);
        // Optional all: they are read only once CUSTOMER_SERVICE_AUTO_REPLY is set (and then
        // the parts they belong to make them required).
        add(
            self.auto_reply,
            &[
                ("CUSTOMER_SERVICE_AUTO_REPLY", false),
                ("APP_SECRET_ID", false),
                ("WECHAT_API_BASE", false),
                ("WECHAT_TIMEOUT_MS", false),
                ("SECRET_CACHE_TTL_SECS", false),
                ("TOKENS_TABLE", false),
            ],
        );
        add(
            self.pay_orders,
            &[
                ("WECHATPAY_API_BASE", false),
                ("PAY_NOTIFY_URL", true),
                ("WECHAT_TIMEOUT_MS", false),
            ],
        );
        names
    }
}

/// Which WeChat Pay API places orders (`PAY_API`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayApi {
    V3,
    /// The legacy XML API.
    V2,
}

impl PayApi {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V3 => "v3",
            Self::V2 => "v2",
        }
    }
}

/// WeChat Pay settings (part `pay`).
#[derive(Debug, Clone)]
pub struct PaySettings {
    /// Secrets Manager id/ARN of the pay secret (`PAY_SECRET_ID`).
    pub secret_id: String,
    pub api: PayApi,
    /// The sign type of APIv2 requests, answers and notifications (`PAY_V2_SIGN_TYPE`): a
    /// notification signed otherwise is refused.
    pub v2_sign_type: SignType,
}

/// Placing orders (part `pay_orders`).
#[derive(Debug, Clone)]
pub struct PayOrderSettings {
    /// WeChat Pay base URL (`WECHATPAY_API_BASE`); the simulator's URL locally.
    pub api_base: String,
    /// Where WeChat Pay sends payment notifications (`PAY_NOTIFY_URL`): configured, never taken
    /// from a request.
    pub notify_url: String,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The parts these settings were read for.
    pub parts: Parts,
    /// The mini-program's AppID (`wx…`), sent to WeChat with every call.
    pub app_id: String,
    /// Trusted TLS roots (`TLS_ROOTS`: `bundled`, the default, or `system`).
    pub tls_roots: TlsRoots,
    /// Whether init opens the function's connections and reads its credentials before the first
    /// request (`CONNECT_AT_INIT`: `true`, the default, or `false`; see [`crate::at_init`]).
    pub connect_at_init: bool,
    /// DynamoDB table holding login sessions (`SESSIONS_TABLE`; part `sessions`).
    pub sessions_table: Option<String>,
    /// How long a login token stays valid.
    pub session_ttl: Duration,
    /// Secrets Manager id/ARN of the app secret (`APP_SECRET_ID`; part `wechat`).
    pub app_secret_id: Option<String>,
    /// Secrets Manager id/ARN of the push secret (`PUSH_SECRET_ID`; part `push`).
    pub push_secret_id: Option<String>,
    /// WeChat API base URL without a trailing slash; the simulator's URL locally.
    pub wechat_api_base: String,
    /// Whole-request timeout of every WeChat and WeChat Pay call (cut further by the deadline).
    pub wechat_timeout: Duration,
    /// How long a secret is trusted before it is read again.
    pub secret_cache_ttl: Duration,
    /// Oldest open data accepted, by its watermark (`WATERMARK_MAX_AGE_SECS`; `0` = no limit).
    pub watermark_max_age_secs: Option<u64>,
    /// How long a generated mini-program code is served from memory (`QRCODE_CACHE_TTL_SECS`; `0` = off).
    pub qrcode_cache_ttl: Duration,
    /// DynamoDB table of orders (`ORDERS_TABLE`; part `orders`).
    pub orders_table: Option<String>,
    pub pay: Option<PaySettings>,
    pub pay_orders: Option<PayOrderSettings>,
    /// DynamoDB table of refunds (`REFUNDS_TABLE`; part `refunds`).
    pub refunds_table: Option<String>,
    /// DynamoDB table of merchant transfers (`TRANSFERS_TABLE`; part `transfers`).
    pub transfers_table: Option<String>,
    /// DynamoDB table of pushes, subscriptions and media checks (`MESSAGES_TABLE`).
    pub messages_table: Option<String>,
    /// DynamoDB table of the fleet's shared access token and card ticket (`TOKENS_TABLE`; part
    /// `access_token`).
    pub tokens_table: Option<String>,
    /// How long a container may take to refresh a shared credential before another may take
    /// over (a container that dies mid-refresh blocks the others at most this long).
    pub token_lease: Duration,
    /// Each caller's budget on this function's quota-spending routes (part `budget`).
    pub caller_budget: Option<crate::store::budgets::Budget>,
    /// Hosts whose media may be sent to WeChat's media check (`MEDIA_URL_HOSTS`, comma-separated,
    /// lower case; `*.example.com` covers its subdomains). Empty: no media check is sent.
    pub media_url_hosts: Vec<String>,
    /// Whether a plain-mode push (no body signature) may change state: media-check verdicts,
    /// order settlement and shipping reminders, subscription grants (`PUSH_PLAIN_EFFECTS`,
    /// `false` by default: only safe mode's signed bodies may).
    pub push_plain_effects: bool,
    /// Whether a user's customer-service message is answered `transfer_customer_service`,
    /// handing it to the agents of WeChat's customer-service tool (`CUSTOMER_SERVICE_HANDOVER`:
    /// `none` by default, the back office replies; `console`).
    pub customer_service_handover: bool,
    /// The text sent to a user who opens a conversation (`CUSTOMER_SERVICE_AUTO_REPLY`, at most
    /// 2048 bytes; unset: none).
    pub customer_service_auto_reply: Option<String>,
}

/// [`Config::token_lease`]: above a WeChat call's timeout with its retries' pauses, short enough
/// that the fleet barely notices a holder that died.
pub const DEFAULT_TOKEN_LEASE: Duration = Duration::from_secs(8);

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid configuration: {}", .problems.join("; "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl Config {
    /// Reads the settings of `parts` from the process environment.
    pub fn from_env(parts: Parts) -> Result<Self, ConfigError> {
        Self::from_lookup(parts, |name| std::env::var(name).ok())
    }

    /// Reads the settings of `parts` through `lookup` (and no other), reporting every missing or
    /// malformed one at once so that an operator fixes the deployment in one go.
    pub fn from_lookup(parts: Parts, lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        // An automatic reply is a WeChat API call: the operator's opt-in brings the parts it needs.
        let auto_reply_text = parts
            .auto_reply
            .then(|| lookup("CUSTOMER_SERVICE_AUTO_REPLY"))
            .flatten()
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty());
        let wanted = parts.settings();
        let parts = parts.with_auto_reply(auto_reply_text.is_some());
        let lookup = |name: &str| {
            debug_assert!(
                wanted.iter().any(|(n, _)| *n == name),
                "{name} is read but not listed in Parts::settings"
            );
            lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
        };
        let mut problems = Vec::new();
        let mut required = |on: bool, name: &str| {
            if !on {
                return None;
            }
            let value = lookup(name);
            if value.is_none() {
                problems.push(format!("{name} is not set"));
            }
            value
        };
        let app_id = required(true, "APP_ID").unwrap_or_default();
        let sessions_table = required(parts.sessions, "SESSIONS_TABLE");
        let app_secret_id = required(parts.wechat, "APP_SECRET_ID");
        let push_secret_id = required(parts.push, "PUSH_SECRET_ID");
        let pay_secret_id = required(parts.pay, "PAY_SECRET_ID");
        let orders_table = required(parts.orders, "ORDERS_TABLE");
        let notify_url = required(parts.pay_orders, "PAY_NOTIFY_URL");
        let refunds_table = required(parts.refunds, "REFUNDS_TABLE");
        let transfers_table = required(parts.transfers, "TRANSFERS_TABLE");
        let messages_table = required(parts.messages, "MESSAGES_TABLE");
        let tokens_table = required(parts.access_token, "TOKENS_TABLE");
        if parts.access_token && !parts.wechat {
            problems.push("the part access_token needs the part wechat".into());
        }
        if parts.budget && !parts.sessions {
            problems.push("the part budget needs the part sessions".into());
        }

        let mut number = |on: bool, name: &str, default: u64, range: std::ops::RangeInclusive<u64>| {
            if !on {
                return default;
            }
            match lookup(name) {
                None => default,
                Some(v) => match v.parse::<u64>() {
                    Ok(n) if range.contains(&n) => n,
                    _ => {
                        problems.push(format!(
                            "{name} must be a whole number from {} to {}, got {v:?}",
                            range.start(),
                            range.end()
                        ));
                        default
                    }
                },
            }
        };
        let secret_reader = parts.wechat || parts.push || parts.pay;
        let caller = parts.wechat || parts.pay_orders;
        let session_ttl = Duration::from_secs(number(
            parts.login,
            "SESSION_TTL_SECS",
            DEFAULT_SESSION_TTL_SECS,
            60..=MAX_TTL_SECS,
        ));
        let secret_cache_ttl = Duration::from_secs(number(
            secret_reader,
            "SECRET_CACHE_TTL_SECS",
            DEFAULT_SECRET_CACHE_TTL_SECS,
            0..=MAX_TTL_SECS,
        ));
        let wechat_timeout = Duration::from_millis(number(
            caller,
            "WECHAT_TIMEOUT_MS",
            DEFAULT_WECHAT_TIMEOUT_MS,
            100..=MAX_TIMEOUT_MS,
        ));
        let watermark_max_age_secs = Some(number(
            parts.open_data,
            "WATERMARK_MAX_AGE_SECS",
            DEFAULT_WATERMARK_MAX_AGE_SECS,
            0..=MAX_TTL_SECS,
        ))
        .filter(|&n| n > 0);
        let qrcode_cache_ttl = Duration::from_secs(number(
            parts.qrcode_cache,
            "QRCODE_CACHE_TTL_SECS",
            DEFAULT_QRCODE_CACHE_TTL_SECS,
            0..=MAX_TTL_SECS,
        ));
        let caller_budget = parts.budget.then(|| crate::store::budgets::Budget {
            per_minute: number(
                true,
                "CALLER_BUDGET_PER_MINUTE",
                DEFAULT_CALLER_BUDGET_PER_MINUTE,
                1..=60_000,
            ),
            burst: number(true, "CALLER_BUDGET_BURST", DEFAULT_CALLER_BUDGET_BURST, 1..=10_000),
        });
        let media_url_hosts: Vec<String> = if parts.media_check {
            lookup("MEDIA_URL_HOSTS")
                .unwrap_or_default()
                .split(',')
                .map(|host| host.trim().to_ascii_lowercase())
                .filter(|host| !host.is_empty())
                .collect()
        } else {
            Vec::new()
        };
        for host in &media_url_hosts {
            let name = host.strip_prefix("*.").unwrap_or(host);
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !valid {
                problems.push(format!(
                    "MEDIA_URL_HOSTS must list host names (example.com, *.example.com) separated by commas, got {host:?}"
                ));
            }
        }

        let mut url = |on: bool, name: &str, default: &str| {
            if !on {
                return default.to_owned();
            }
            let value = lookup(name)
                .map(|v| v.trim_end_matches('/').to_owned())
                .unwrap_or_else(|| default.to_owned());
            if !(value.starts_with("https://") || value.starts_with("http://")) {
                problems.push(format!("{name} must be an http(s) URL, got {value:?}"));
            }
            value
        };
        let wechat_api_base = url(parts.wechat, "WECHAT_API_BASE", DEFAULT_WECHAT_API_BASE);
        let wechatpay_api_base = url(parts.pay_orders, "WECHATPAY_API_BASE", DEFAULT_WECHATPAY_API_BASE);
        if let Some(notify) = &notify_url
            && (!(notify.starts_with("https://") || notify.starts_with("http://")) || notify.contains('?'))
        {
            problems.push(format!(
                "PAY_NOTIFY_URL must be an http(s) URL without a query, got {notify:?}"
            ));
        }

        let (api, v2_sign_type) = if parts.pay {
            let api = match lookup("PAY_API").as_deref() {
                None | Some("v3") => PayApi::V3,
                Some("v2") => PayApi::V2,
                Some(other) => {
                    problems.push(format!("PAY_API must be v3 or v2, got {other:?}"));
                    PayApi::V3
                }
            };
            let sign_type = match lookup("PAY_V2_SIGN_TYPE").as_deref() {
                None => SignType::HmacSha256,
                Some(name @ ("MD5" | "HMAC-SHA256")) => SignType::parse(name).expect("a listed sign type"),
                Some(other) => {
                    problems.push(format!("PAY_V2_SIGN_TYPE must be MD5 or HMAC-SHA256, got {other:?}"));
                    SignType::HmacSha256
                }
            };
            (api, sign_type)
        } else {
            (PayApi::V3, SignType::HmacSha256)
        };
        let tls_roots = match lookup("TLS_ROOTS") {
            None => TlsRoots::default(),
            Some(v) => TlsRoots::parse(&v).unwrap_or_else(|| {
                problems.push(format!("TLS_ROOTS must be bundled or system, got {v:?}"));
                TlsRoots::default()
            }),
        };
        let connect_at_init = match lookup("CONNECT_AT_INIT").as_deref() {
            None | Some("true") => true,
            Some("false") => false,
            Some(v) => {
                problems.push(format!("CONNECT_AT_INIT must be true or false, got {v:?}"));
                true
            }
        };
        let push_plain_effects = parts.push
            && match lookup("PUSH_PLAIN_EFFECTS").as_deref() {
                None | Some("false") => false,
                Some("true") => true,
                Some(v) => {
                    problems.push(format!("PUSH_PLAIN_EFFECTS must be true or false, got {v:?}"));
                    false
                }
            };
        let customer_service_handover = parts.push
            && match lookup("CUSTOMER_SERVICE_HANDOVER").as_deref() {
                None | Some("none") => false,
                Some("console") => true,
                Some(v) => {
                    problems.push(format!("CUSTOMER_SERVICE_HANDOVER must be none or console, got {v:?}"));
                    false
                }
            };
        if auto_reply_text
            .as_ref()
            .is_some_and(|t| t.len() > crate::customer_service::MAX_REPLY_TEXT_BYTES)
        {
            problems.push("CUSTOMER_SERVICE_AUTO_REPLY must be at most 2048 bytes".to_owned());
        }
        if parts.pay && !parts.orders {
            problems.push("the pay part needs the orders part (a programming error)".to_owned());
        }
        if !app_id.is_empty() && !is_app_id(&app_id) {
            problems.push(format!(
                "APP_ID must look like wx followed by 16 hex digits, got {app_id:?}"
            ));
        }

        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
        Ok(Self {
            parts,
            app_id,
            tls_roots,
            connect_at_init,
            sessions_table,
            session_ttl,
            app_secret_id,
            push_secret_id,
            wechat_api_base,
            wechat_timeout,
            secret_cache_ttl,
            watermark_max_age_secs,
            qrcode_cache_ttl,
            orders_table,
            pay: parts.pay.then(|| PaySettings {
                secret_id: pay_secret_id.unwrap_or_default(),
                api,
                v2_sign_type,
            }),
            refunds_table,
            transfers_table,
            messages_table,
            tokens_table,
            token_lease: DEFAULT_TOKEN_LEASE,
            caller_budget,
            media_url_hosts,
            push_plain_effects,
            customer_service_handover,
            customer_service_auto_reply: auto_reply_text,
            pay_orders: parts.pay_orders.then(|| PayOrderSettings {
                api_base: wechatpay_api_base,
                notify_url: notify_url.unwrap_or_default(),
            }),
        })
    }
}

fn is_app_id(s: &str) -> bool {
    s.len() == 18 && s.starts_with("wx") && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    const ALL: Parts = Parts::ALL;

    fn load(parts: Parts, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(parts, |k| map.get(k).cloned())
    }

    const MINIMAL: &[(&str, &str)] = &[
        ("APP_ID", "wx4f4bc4dec97d474b"),
        ("SESSIONS_TABLE", "sessions"),
        ("APP_SECRET_ID", "wxa/app"),
        ("PUSH_SECRET_ID", "wxa/push"),
        ("PAY_SECRET_ID", "wxa/pay"),
        ("ORDERS_TABLE", "orders"),
        ("PAY_NOTIFY_URL", "https://api.example.com/pay/notify"),
        ("REFUNDS_TABLE", "refunds"),
        ("TRANSFERS_TABLE", "transfers"),
        ("MESSAGES_TABLE", "messages"),
        ("TOKENS_TABLE", "tokens"),
    ];

    #[test]
    fn the_shared_token_needs_its_table_and_the_wechat_part() {
        let without_table: Vec<_> = MINIMAL.iter().copied().filter(|(k, _)| *k != "TOKENS_TABLE").collect();
        let e = load(ALL, &without_table).unwrap_err();
        assert!(e.problems.contains(&"TOKENS_TABLE is not set".to_owned()), "{e}");
        let alone = Parts {
            access_token: true,
            ..Parts::NONE
        };
        let e = load(alone, MINIMAL).unwrap_err();
        assert!(e.problems.iter().any(|p| p.contains("needs the part wechat")), "{e}");
        let c = load(ALL, MINIMAL).unwrap();
        assert_eq!(
            (c.tokens_table.as_deref(), c.token_lease),
            (Some("tokens"), DEFAULT_TOKEN_LEASE)
        );
    }

    #[test]
    fn defaults_apply_when_only_required_settings_are_given() {
        let c = load(ALL, MINIMAL).unwrap();
        assert_eq!(c.wechat_api_base, "https://api.weixin.qq.com");
        assert_eq!(c.session_ttl, Duration::from_secs(DEFAULT_SESSION_TTL_SECS));
        assert_eq!(c.secret_cache_ttl, Duration::from_secs(300));
        assert_eq!(c.wechat_timeout, Duration::from_millis(5000));
        assert_eq!(c.watermark_max_age_secs, Some(300));
        assert_eq!(c.qrcode_cache_ttl, Duration::from_secs(600));
        let pay = c.pay.unwrap();
        assert_eq!((pay.api, pay.v2_sign_type), (PayApi::V3, SignType::HmacSha256));
        assert_eq!(c.pay_orders.unwrap().api_base, "https://api.mch.weixin.qq.com");
        assert_eq!(c.tls_roots, TlsRoots::Bundled);
    }

    #[test]
    fn every_missing_setting_is_named_in_one_error() {
        let err = load(ALL, &[]).unwrap_err();
        let text = err.to_string();
        let required: Vec<&str> = ALL.settings().into_iter().filter(|s| s.1).map(|s| s.0).collect();
        assert_eq!(err.problems.len(), required.len(), "{err}");
        for name in required {
            assert!(text.contains(name), "{text}");
        }
    }

    #[test]
    fn a_function_reads_only_the_settings_of_its_parts() {
        let login = Parts {
            sessions: true,
            login: true,
            wechat: true,
            ..Parts::NONE
        };
        let read = RefCell::new(Vec::new());
        let vars: HashMap<&str, &str> = MINIMAL.iter().copied().collect();
        let config = Config::from_lookup(login, |name| {
            read.borrow_mut().push(name.to_owned());
            vars.get(name).map(|v| v.to_string())
        })
        .unwrap();
        assert!(config.pay.is_none() && config.pay_orders.is_none());
        let read = read.into_inner();
        for name in [
            "ORDERS_TABLE",
            "PAY_SECRET_ID",
            "PAY_NOTIFY_URL",
            "QRCODE_CACHE_TTL_SECS",
        ] {
            assert!(!read.iter().any(|n| n == name), "login read {name}");
        }
        // And it starts without them.
        assert!(load(login, &MINIMAL[..3]).is_ok());
    }

    #[test]
    fn overrides_are_parsed_and_bad_values_rejected() {
        let mut vars = MINIMAL.to_vec();
        vars.extend([
            ("WECHAT_API_BASE", "http://127.0.0.1:9100/"),
            ("SESSION_TTL_SECS", "3600"),
            ("TLS_ROOTS", "system"),
            ("PAY_API", "v2"),
            ("PAY_V2_SIGN_TYPE", "MD5"),
            ("CONNECT_AT_INIT", "false"),
        ]);
        let c = load(ALL, &vars).unwrap();
        assert_eq!(c.tls_roots, TlsRoots::System);
        assert!(!c.connect_at_init);
        assert!(load(ALL, MINIMAL).unwrap().connect_at_init, "on by default");
        assert_eq!(c.wechat_api_base, "http://127.0.0.1:9100");
        assert_eq!(c.session_ttl, Duration::from_secs(3600));
        let pay = c.pay.unwrap();
        assert_eq!((pay.api, pay.v2_sign_type), (PayApi::V2, SignType::Md5));
        let mut off = MINIMAL.to_vec();
        off.push(("WATERMARK_MAX_AGE_SECS", "0"));
        assert_eq!(
            load(ALL, &off).unwrap().watermark_max_age_secs,
            None,
            "0 turns the age check off"
        );

        let mut bad = MINIMAL.to_vec();
        bad.extend([
            ("SESSION_TTL_SECS", "soon"),
            ("WECHAT_TIMEOUT_MS", "5"),
            ("TLS_ROOTS", "openssl"),
            ("SECRET_CACHE_TTL_SECS", "18446744073709551615"),
            ("PAY_V2_SIGN_TYPE", ""),
            ("CONNECT_AT_INIT", "yes"),
        ]);
        let err = load(ALL, &bad).unwrap_err();
        for needle in [
            "TLS_ROOTS must be bundled or system",
            "SESSION_TTL_SECS",
            "WECHAT_TIMEOUT_MS",
            "SECRET_CACHE_TTL_SECS",
            "CONNECT_AT_INIT must be true or false",
        ] {
            assert!(err.to_string().contains(needle), "{err}");
        }
        let mut query = MINIMAL.to_vec();
        query.push(("PAY_NOTIFY_URL", "https://x.example/pay/notify?from=host"));
        let query: HashMap<&str, &str> = query.into_iter().collect();
        let err = Config::from_lookup(ALL, |k| query.get(k).map(|v| v.to_string())).unwrap_err();
        assert!(err.to_string().contains("PAY_NOTIFY_URL"), "{err}");
    }

    #[test]
    fn malformed_app_id_is_rejected() {
        let mut vars = MINIMAL.to_vec();
        vars[0] = ("APP_ID", "my-app");
        let err = load(ALL, &vars).unwrap_err();
        assert!(err.to_string().contains("APP_ID must look like"), "{err}");
    }
}
