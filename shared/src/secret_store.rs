//! The app's secrets in Secrets Manager, read on first use and cached in memory.
//!
//! Two JSON secrets, each readable only by the functions that use it (IAM, per function):
//! - the **app secret** ([`AppSecrets`], `APP_SECRET_ID`): `{"app_secret": "...",
//!   "api_security"?: {...}}`, what the WeChat API needs (jscode2session, access tokens, and the
//!   API security mode's keys, [`crate::api_security`]);
//! - the **push secret** ([`PushSecrets`], `PUSH_SECRET_ID`): `{"push_token", "push_aes_key"?}`,
//!   the message push's Token and EncodingAESKey, read only by `wechat-push` (which never reads
//!   the AppSecret);
//! - the **pay secret** ([`Merchant`](crate::pay::Merchant), `PAY_SECRET_ID`): the merchant's
//!   WeChat Pay keys, read only by the functions that pay.
//!
//! A secret is read on first use, not at init, so a cold start never waits on Secrets Manager;
//! a failure is not cached, so the next invocation tries again. Each read is parsed once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::SdkError;
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
use lambda_http::http::StatusCode;
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::ApiError;
use crate::api_security::{ApiSecurity, ApiSecurityDocument};
use crate::redacted::Secret;

/// The app secret: what the WeChat server API needs. Nothing else may be in it (the merchant's
/// keys belong in the pay secret, which fewer functions may read).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSecrets {
    /// The mini-program's AppSecret, used for jscode2session and access tokens.
    pub app_secret: Secret,
    /// The API security mode's keys (console: 开发设置 → API 安全); with them the APIs that
    /// support the mode are called in it ([`crate::api_security`]).
    #[serde(default)]
    pub api_security: Option<ApiSecurityDocument>,
    /// The same keys, parsed (once per read of the secret).
    #[serde(skip)]
    pub api_security_keys: Option<ApiSecurity>,
    /// Where the message push's Token and EncodingAESKey were kept before they got a secret of
    /// their own ([`PushSecrets`]): still accepted, so that an app secret written then parses,
    /// and never used.
    #[serde(default, rename = "push_token")]
    pub legacy_push_token: Option<Secret>,
    #[serde(default, rename = "push_aes_key")]
    pub legacy_push_aes_key: Option<Secret>,
}

impl PartialEq for AppSecrets {
    fn eq(&self, other: &Self) -> bool {
        self.app_secret == other.app_secret
            && self.api_security == other.api_security
            && self.legacy_push_token == other.legacy_push_token
            && self.legacy_push_aes_key == other.legacy_push_aes_key
    }
}

impl std::fmt::Debug for AppSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppSecrets { app_secret: ***")?;
        if let Some(keys) = &self.api_security_keys {
            write!(f, ", api_security: {keys:?}")?;
        }
        f.write_str(" }")
    }
}

/// The push secret: the message push's Token and EncodingAESKey, read only by `wechat-push`.
#[derive(Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PushSecrets {
    /// The message push's Token (WeChat console → development settings → message push).
    pub push_token: Secret,
    /// The message push's EncodingAESKey (43 characters), for safe and compat modes.
    #[serde(default)]
    pub push_aes_key: Option<Secret>,
}

impl std::fmt::Debug for PushSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PushSecrets { push_token: ***, push_aes_key: *** }")
    }
}

impl SecretDocument for PushSecrets {
    fn parse(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| describe_json_error(&e))
    }
}

/// A secret's JSON document, parsed once per read.
pub trait SecretDocument: Sized + Send + Sync + 'static {
    /// Parses the SecretString. The error names what is wrong, never a value.
    fn parse(text: &str) -> Result<Self, String>;
}

impl SecretDocument for AppSecrets {
    fn parse(text: &str) -> Result<Self, String> {
        let mut secrets: Self = serde_json::from_str(text).map_err(|e| describe_json_error(&e))?;
        secrets.api_security_keys = secrets
            .api_security
            .as_ref()
            .map(ApiSecurity::from_document)
            .transpose()?;
        Ok(secrets)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("secret {0} does not exist or is not readable")]
    NotFound(String),
    #[error("secret {id} is not the expected JSON ({reason})")]
    Malformed { id: String, reason: String },
    #[error("Secrets Manager is unavailable: {0}")]
    Unavailable(String),
}

impl From<SecretsError> for ApiError {
    fn from(e: SecretsError) -> Self {
        match e {
            SecretsError::NotFound(_) | SecretsError::Malformed { .. } => ApiError::misconfigured(e),
            SecretsError::Unavailable(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "secrets_unavailable",
                "the secret store is unavailable; try again",
            )
            .with_detail(e),
        }
    }
}

struct Cached<T> {
    value: Arc<T>,
    fetched_at: Instant,
}

pub struct SecretCache<T> {
    client: Client,
    secret_id: String,
    ttl: Duration,
    cached: Mutex<Option<Cached<T>>>,
}

impl<T: SecretDocument> SecretCache<T> {
    pub fn new(client: Client, secret_id: &str, ttl: Duration) -> Self {
        Self {
            client,
            secret_id: secret_id.to_owned(),
            ttl,
            cached: Mutex::new(None),
        }
    }

    /// The cached secret, read again once the TTL has passed. Concurrent callers wait for one
    /// read rather than each calling Secrets Manager.
    pub async fn get(&self) -> Result<Arc<T>, SecretsError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref().filter(|c| c.fetched_at.elapsed() < self.ttl) {
            return Ok(c.value.clone());
        }
        let value = Arc::new(self.fetch().await?);
        *cached = Some(Cached {
            value: value.clone(),
            fetched_at: Instant::now(),
        });
        Ok(value)
    }
}

impl<T: SecretDocument + PartialEq> SecretCache<T> {
    /// Called when WeChat rejected `stale` as a credential: reads the secret again (once, however
    /// many callers report the same stale value) and returns the new value if it changed, i.e. the
    /// secret was rotated and a retry with it is worth making.
    pub async fn refresh_after_rejection(&self, stale: &Arc<T>) -> Result<Option<Arc<T>>, SecretsError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref().filter(|c| !Arc::ptr_eq(&c.value, stale)) {
            // Another caller already re-read it.
            return Ok((*c.value != **stale).then(|| c.value.clone()));
        }
        let fresh = Arc::new(self.fetch().await?);
        *cached = Some(Cached {
            value: fresh.clone(),
            fetched_at: Instant::now(),
        });
        Ok((*fresh != **stale).then_some(fresh))
    }
}

impl<T: SecretDocument> SecretCache<T> {
    async fn fetch(&self) -> Result<T, SecretsError> {
        let request = self.client.get_secret_value().secret_id(&self.secret_id).send();
        let timeout = crate::net::aws::operation_timeout(self.client.config().timeout_config());
        let output = crate::deadline::within(timeout, request)
            .await
            .ok_or_else(|| SecretsError::Unavailable("no answer within the invocation's time budget".into()))?
            .map_err(|e| match e {
                SdkError::ServiceError(ref service) => match service.err() {
                    GetSecretValueError::ResourceNotFoundException(_) => SecretsError::NotFound(self.secret_id.clone()),
                    other if other.meta().code() == Some("AccessDeniedException") => {
                        SecretsError::NotFound(self.secret_id.clone())
                    }
                    other => SecretsError::Unavailable(other.to_string()),
                },
                // The whole chain (a dispatch failure says why: refused, reset, TLS...), for the log.
                other => {
                    SecretsError::Unavailable(aws_smithy_types::error::display::DisplayErrorContext(&other).to_string())
                }
            })?;
        let text = output.secret_string().ok_or_else(|| SecretsError::Malformed {
            id: self.secret_id.clone(),
            reason: "it has no SecretString".into(),
        })?;
        T::parse(text).map_err(|reason| SecretsError::Malformed {
            id: self.secret_id.clone(),
            reason,
        })
    }
}

/// Describes a parse failure without quoting the secret: serde's messages can echo a value, but
/// its "missing field" and "unknown field" messages name only fields.
pub fn describe_json_error(e: &serde_json::Error) -> String {
    let message = e.to_string();
    if message.starts_with("missing field") || message.starts_with("unknown field") {
        message
    } else {
        format!("{:?} error at line {} column {}", e.classify(), e.line(), e.column())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_secret_holds_the_app_secret_and_nothing_else() {
        let ok = AppSecrets::parse(r#"{"app_secret":"s3cr3t-value"}"#).unwrap();
        assert_eq!(ok.app_secret.expose(), "s3cr3t-value");
        assert_eq!(format!("{ok:?}"), "AppSecrets { app_secret: *** }");
        let err = AppSecrets::parse(r#"{"app_secret":"s3cr3t-value","wechatpay":{"mchid":"1"}}"#).unwrap_err();
        assert!(err.contains("unknown field `wechatpay`"), "{err}");
        let err = AppSecrets::parse(r#"{"app_secret":42}"#).unwrap_err();
        assert!(!err.contains("42"), "{err}");
        let err = AppSecrets::parse(r#"{"app_secret":"s3cr3t-value""#).unwrap_err();
        assert!(!err.contains("s3cr3t"), "{err}");
    }
}
