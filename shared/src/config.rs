//! Settings read once from the environment at container init.

use std::time::Duration;

pub use crate::net::TlsRoots;

pub const DEFAULT_WECHAT_API_BASE: &str = "https://api.weixin.qq.com";
pub const DEFAULT_SESSION_TTL_SECS: u64 = 7 * 24 * 3600;
pub const DEFAULT_SECRET_CACHE_TTL_SECS: u64 = 300;
pub const DEFAULT_WECHAT_TIMEOUT_MS: u64 = 5000;
pub const DEFAULT_WATERMARK_MAX_AGE_SECS: u64 = 300;
pub const DEFAULT_QRCODE_CACHE_TTL_SECS: u64 = 600;
pub const DEFAULT_WECHATPAY_API_BASE: &str = "https://api.mch.weixin.qq.com";

/// Which WeChat Pay API places orders (`PAY_API`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayApi {
    V3,
    /// The legacy XML API, with the sign type of `PAY_V2_SIGN_TYPE`.
    V2(crate::pay::v2::SignType),
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The mini-program's AppID (`wx…`), sent to WeChat with every call.
    pub app_id: String,
    /// DynamoDB table holding login sessions (`SESSIONS_TABLE`).
    pub sessions_table: String,
    /// Secrets Manager secret id or ARN of the JSON secret (`SECRET_ID`).
    pub secret_id: String,
    /// WeChat API base URL without a trailing slash; the simulator's URL locally.
    pub wechat_api_base: String,
    /// How long a login token stays valid.
    pub session_ttl: Duration,
    /// How long the secret is trusted before it is read again.
    pub secret_cache_ttl: Duration,
    /// Whole-request timeout of every WeChat call.
    pub wechat_timeout: Duration,
    /// Oldest open data accepted, by its watermark (`WATERMARK_MAX_AGE_SECS`; `0` = no limit).
    pub watermark_max_age_secs: Option<u64>,
    /// How long a generated mini-program code is served from memory (`QRCODE_CACHE_TTL_SECS`; `0` = off).
    pub qrcode_cache_ttl: Duration,
    /// DynamoDB table of orders (`ORDERS_TABLE`).
    pub orders_table: String,
    pub pay_api: PayApi,
    /// WeChat Pay base URL (`WECHATPAY_API_BASE`); the simulator's URL locally.
    pub wechatpay_api_base: String,
    /// Where WeChat Pay sends payment notifications (`PAY_NOTIFY_URL`); by default
    /// `https://<the API's domain>/pay/notify`, taken from the request.
    pub pay_notify_url: Option<String>,
    /// Trusted TLS roots (`TLS_ROOTS`: `bundled`, the default, or `system`).
    pub tls_roots: TlsRoots,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid configuration: {}", .problems.join("; "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup`, reporting every missing or malformed one at once so
    /// that an operator fixes the deployment in one go.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let mut required = |name: &str| match lookup(name).map(|v| v.trim().to_owned()) {
            Some(v) if !v.is_empty() => v,
            _ => {
                problems.push(format!("{name} is not set"));
                String::new()
            }
        };
        let app_id = required("APP_ID");
        let sessions_table = required("SESSIONS_TABLE");
        let secret_id = required("SECRET_ID");
        let orders_table = required("ORDERS_TABLE");

        let mut number = |name: &str, default: u64, min: u64| match lookup(name) {
            None => default,
            Some(v) if v.trim().is_empty() => default,
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if n >= min => n,
                _ => {
                    problems.push(format!("{name} must be a whole number >= {min}, got {v:?}"));
                    default
                }
            },
        };
        let session_ttl = Duration::from_secs(number("SESSION_TTL_SECS", DEFAULT_SESSION_TTL_SECS, 60));
        let secret_cache_ttl = Duration::from_secs(number("SECRET_CACHE_TTL_SECS", DEFAULT_SECRET_CACHE_TTL_SECS, 0));
        let wechat_timeout = Duration::from_millis(number("WECHAT_TIMEOUT_MS", DEFAULT_WECHAT_TIMEOUT_MS, 100));
        let watermark_max_age_secs =
            Some(number("WATERMARK_MAX_AGE_SECS", DEFAULT_WATERMARK_MAX_AGE_SECS, 0)).filter(|&n| n > 0);
        let qrcode_cache_ttl = Duration::from_secs(number("QRCODE_CACHE_TTL_SECS", DEFAULT_QRCODE_CACHE_TTL_SECS, 0));

        let wechat_api_base = lookup("WECHAT_API_BASE")
            .map(|v| v.trim().trim_end_matches('/').to_owned())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| DEFAULT_WECHAT_API_BASE.to_owned());
        if !(wechat_api_base.starts_with("https://") || wechat_api_base.starts_with("http://")) {
            problems.push(format!(
                "WECHAT_API_BASE must be an http(s) URL, got {wechat_api_base:?}"
            ));
        }
        let text = |name: &str| lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let pay_api = match (text("PAY_API").as_deref(), text("PAY_V2_SIGN_TYPE").as_deref()) {
            (None | Some("v3"), _) => PayApi::V3,
            (Some("v2"), sign_type) => match crate::pay::v2::SignType::parse(sign_type.unwrap_or("HMAC-SHA256")) {
                Some(t) => PayApi::V2(t),
                None => {
                    problems.push(format!(
                        "PAY_V2_SIGN_TYPE must be MD5 or HMAC-SHA256, got {sign_type:?}"
                    ));
                    PayApi::V3
                }
            },
            (Some(other), _) => {
                problems.push(format!("PAY_API must be v3 or v2, got {other:?}"));
                PayApi::V3
            }
        };
        let wechatpay_api_base = text("WECHATPAY_API_BASE")
            .map(|v| v.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| DEFAULT_WECHATPAY_API_BASE.to_owned());
        let pay_notify_url = text("PAY_NOTIFY_URL");
        let tls_roots = match text("TLS_ROOTS") {
            None => TlsRoots::default(),
            Some(v) => TlsRoots::parse(&v).unwrap_or_else(|| {
                problems.push(format!("TLS_ROOTS must be bundled or system, got {v:?}"));
                TlsRoots::default()
            }),
        };
        for (name, url) in [
            ("WECHATPAY_API_BASE", Some(&wechatpay_api_base)),
            ("PAY_NOTIFY_URL", pay_notify_url.as_ref()),
        ] {
            if let Some(url) = url
                && !(url.starts_with("https://") || url.starts_with("http://"))
            {
                problems.push(format!("{name} must be an http(s) URL, got {url:?}"));
            }
        }
        if !app_id.is_empty() && !is_app_id(&app_id) {
            problems.push(format!(
                "APP_ID must look like wx followed by 16 hex digits, got {app_id:?}"
            ));
        }

        if problems.is_empty() {
            Ok(Self {
                app_id,
                sessions_table,
                secret_id,
                wechat_api_base,
                session_ttl,
                secret_cache_ttl,
                wechat_timeout,
                watermark_max_age_secs,
                qrcode_cache_ttl,
                orders_table,
                pay_api,
                wechatpay_api_base,
                pay_notify_url,
                tls_roots,
            })
        } else {
            Err(ConfigError { problems })
        }
    }
}

fn is_app_id(s: &str) -> bool {
    s.len() == 18 && s.starts_with("wx") && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    const MINIMAL: &[(&str, &str)] = &[
        ("APP_ID", "wx4f4bc4dec97d474b"),
        ("SESSIONS_TABLE", "sessions"),
        ("SECRET_ID", "wxa/app"),
        ("ORDERS_TABLE", "orders"),
    ];

    #[test]
    fn defaults_apply_when_only_required_settings_are_given() {
        let c = load(MINIMAL).unwrap();
        assert_eq!(c.wechat_api_base, "https://api.weixin.qq.com");
        assert_eq!(c.session_ttl, Duration::from_secs(DEFAULT_SESSION_TTL_SECS));
        assert_eq!(c.secret_cache_ttl, Duration::from_secs(300));
        assert_eq!(c.wechat_timeout, Duration::from_millis(5000));
        assert_eq!(c.watermark_max_age_secs, Some(300));
        assert_eq!(c.qrcode_cache_ttl, Duration::from_secs(600));
        assert_eq!(c.pay_api, PayApi::V3);
        assert_eq!(c.wechatpay_api_base, "https://api.mch.weixin.qq.com");
        assert_eq!(c.pay_notify_url, None);
        assert_eq!(c.tls_roots, TlsRoots::Bundled);
    }

    #[test]
    fn every_missing_setting_is_named_in_one_error() {
        let err = load(&[]).unwrap_err();
        assert_eq!(err.problems.len(), 4, "{err}");
        let text = err.to_string();
        for name in ["APP_ID", "SESSIONS_TABLE", "SECRET_ID", "ORDERS_TABLE"] {
            assert!(text.contains(name), "{text}");
        }
    }

    #[test]
    fn overrides_are_parsed_and_bad_values_rejected() {
        let mut vars = MINIMAL.to_vec();
        vars.extend([
            ("WECHAT_API_BASE", "http://127.0.0.1:9100/"),
            ("SESSION_TTL_SECS", "3600"),
            ("TLS_ROOTS", "system"),
        ]);
        let c = load(&vars).unwrap();
        assert_eq!(c.tls_roots, TlsRoots::System);
        assert_eq!(c.wechat_api_base, "http://127.0.0.1:9100");
        assert_eq!(c.session_ttl, Duration::from_secs(3600));
        let mut off = MINIMAL.to_vec();
        off.push(("WATERMARK_MAX_AGE_SECS", "0"));
        assert_eq!(
            load(&off).unwrap().watermark_max_age_secs,
            None,
            "0 turns the age check off"
        );

        let mut bad = MINIMAL.to_vec();
        bad.extend([
            ("SESSION_TTL_SECS", "soon"),
            ("WECHAT_TIMEOUT_MS", "5"),
            ("TLS_ROOTS", "openssl"),
        ]);
        let err = load(&bad).unwrap_err();
        assert!(err.to_string().contains("TLS_ROOTS must be bundled or system"), "{err}");
        assert!(err.to_string().contains("SESSION_TTL_SECS"), "{err}");
        assert!(err.to_string().contains("WECHAT_TIMEOUT_MS"), "{err}");
    }

    #[test]
    fn malformed_app_id_is_rejected() {
        let err = load(&[
            ("APP_ID", "my-app"),
            ("SESSIONS_TABLE", "s"),
            ("SECRET_ID", "x"),
            ("ORDERS_TABLE", "o"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("APP_ID must look like"), "{err}");
    }
}
