//! The app's secrets, read from one Secrets Manager JSON secret and cached in memory.
//!
//! The secret is a JSON object: `{"app_secret": "..."}` (pay keys join it later). It is read on
//! first use, not at init, so a cold start never waits on Secrets Manager; a failure is not
//! cached, so the next invocation tries again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::SdkError;
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
use lambda_http::http::StatusCode;
use std::sync::OnceLock;

use serde::Deserialize;
use tokio::sync::Mutex;

use crate::pay::{Merchant, PaySecrets};

use crate::ApiError;
use crate::secret::Secret;

#[derive(Deserialize)]
pub struct AppSecrets {
    /// The mini-program's AppSecret, used for jscode2session and access tokens.
    pub app_secret: Secret,
    /// WeChat Pay merchant keys, for `pay-sign` and `pay-notify`.
    #[serde(default)]
    pub wechatpay: Option<PaySecrets>,
    /// The pay keys parsed once per secret read, not per request.
    #[serde(skip)]
    merchant: OnceLock<Result<Merchant, String>>,
}

impl PartialEq for AppSecrets {
    fn eq(&self, other: &Self) -> bool {
        self.app_secret == other.app_secret && self.wechatpay == other.wechatpay
    }
}

impl std::fmt::Debug for AppSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pay = if self.wechatpay.is_some() { "configured" } else { "none" };
        write!(f, "AppSecrets {{ app_secret: ***, wechatpay: {pay} }}")
    }
}

impl AppSecrets {
    /// The merchant's parsed keys, or why WeChat Pay cannot be used.
    pub fn merchant(&self) -> Result<&Merchant, String> {
        self.merchant
            .get_or_init(|| match &self.wechatpay {
                Some(pay) => Merchant::parse(pay),
                None => Err("the secret has no wechatpay object".into()),
            })
            .as_ref()
            .map_err(String::clone)
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
            SecretsError::NotFound(_) | SecretsError::Malformed { .. } => ApiError::misconfigured(e.to_string()),
            SecretsError::Unavailable(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "secrets_unavailable",
                "the secret store is unavailable; try again",
            ),
        }
    }
}

struct Cached {
    secrets: Arc<AppSecrets>,
    fetched_at: Instant,
}

pub struct SecretCache {
    client: Client,
    secret_id: String,
    ttl: Duration,
    cached: Mutex<Option<Cached>>,
}

impl SecretCache {
    pub fn new(client: Client, secret_id: &str, ttl: Duration) -> Self {
        Self {
            client,
            secret_id: secret_id.to_owned(),
            ttl,
            cached: Mutex::new(None),
        }
    }

    /// The cached secrets, read again once the TTL has passed. Concurrent callers wait for one
    /// read rather than each calling Secrets Manager.
    pub async fn get(&self) -> Result<Arc<AppSecrets>, SecretsError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref().filter(|c| c.fetched_at.elapsed() < self.ttl) {
            return Ok(c.secrets.clone());
        }
        let secrets = Arc::new(self.fetch().await?);
        *cached = Some(Cached {
            secrets: secrets.clone(),
            fetched_at: Instant::now(),
        });
        Ok(secrets)
    }

    /// Called when WeChat rejected `stale` as a credential: reads the secret again (once, however
    /// many callers report the same stale value) and returns the new value if it changed, i.e. the
    /// secret was rotated and a retry with it is worth making.
    pub async fn refresh_after_rejection(
        &self,
        stale: &Arc<AppSecrets>,
    ) -> Result<Option<Arc<AppSecrets>>, SecretsError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref().filter(|c| !Arc::ptr_eq(&c.secrets, stale)) {
            // Another caller already re-read it.
            return Ok((c.secrets != *stale).then(|| c.secrets.clone()));
        }
        let fresh = Arc::new(self.fetch().await?);
        *cached = Some(Cached {
            secrets: fresh.clone(),
            fetched_at: Instant::now(),
        });
        Ok((fresh != *stale).then_some(fresh))
    }

    async fn fetch(&self) -> Result<AppSecrets, SecretsError> {
        let output = self
            .client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .send()
            .await
            .map_err(|e| match e {
                SdkError::ServiceError(ref service) => match service.err() {
                    GetSecretValueError::ResourceNotFoundException(_) => SecretsError::NotFound(self.secret_id.clone()),
                    other if other.meta().code() == Some("AccessDeniedException") => {
                        SecretsError::NotFound(self.secret_id.clone())
                    }
                    other => SecretsError::Unavailable(other.to_string()),
                },
                other => SecretsError::Unavailable(other.to_string()),
            })?;
        let text = output.secret_string().ok_or_else(|| SecretsError::Malformed {
            id: self.secret_id.clone(),
            reason: "it has no SecretString".into(),
        })?;
        serde_json::from_str(text).map_err(|e| SecretsError::Malformed {
            id: self.secret_id.clone(),
            reason: describe_json_error(&e),
        })
    }
}

/// Describes a parse failure without quoting the secret: serde's messages can echo a value.
fn describe_json_error(e: &serde_json::Error) -> String {
    let message = e.to_string();
    if message.starts_with("missing field") {
        message
    } else {
        format!("{:?} error at line {} column {}", e.classify(), e.line(), e.column())
    }
}
