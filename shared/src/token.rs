//! The access token cache, shared by every function that calls a token-protected WeChat API.
//!
//! It uses `cgi-bin/stable_token` in normal mode, so every container receives the same current
//! token instead of knocking the others' out as `cgi-bin/token` would, and it never asks for
//! `force_refresh` (20 a day, and it invalidates every other container's token).

use std::sync::Arc;
use std::time::Duration;

use crate::cache::Expiring;
use crate::redacted::Secret;
use crate::secret_store::{AppSecrets, SecretCache, SecretsError};
use crate::wechat::{WechatClient, WechatError};

/// Attempts at fetching a token when WeChat is busy or unreachable (the call is idempotent).
const FETCH_ATTEMPTS: u32 = 3;

/// The longest lifetime WeChat gives a token or ticket (7200 s) with room to spare; anything
/// beyond is a broken answer, not a reason to cache a value for centuries.
const MAX_LIFETIME_SECS: u64 = 24 * 3600;

/// `expires_in` as a lifetime, refused when absurd (zero, or over a day).
fn lifetime(expires_in: u64) -> Result<Duration, WechatError> {
    if (1..=MAX_LIFETIME_SECS).contains(&expires_in) {
        Ok(Duration::from_secs(expires_in))
    } else {
        Err(WechatError::BadResponse(format!(
            "expires_in {expires_in} is not a lifetime"
        )))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Wechat(#[from] WechatError),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
}

pub struct AccessTokenCache {
    wechat: WechatClient,
    secrets: Arc<SecretCache<AppSecrets>>,
    token: Expiring<Secret>,
    card_ticket: Expiring<Secret>,
}

impl AccessTokenCache {
    pub fn new(wechat: WechatClient, secrets: Arc<SecretCache<AppSecrets>>) -> Self {
        Self {
            wechat,
            secrets,
            token: Expiring::default(),
            card_ticket: Expiring::default(),
        }
    }

    /// The current token, fetched when missing or close to expiry. Concurrent callers share one
    /// fetch.
    pub async fn get(&self) -> Result<Secret, TokenError> {
        self.token.get_or_fetch(|| self.fetch()).await
    }

    /// Forgets `stale` after WeChat rejected it (40001/40014/42001), so the next [`get`] fetches
    /// the current one. A token another caller already replaced is left alone.
    ///
    /// [`get`]: Self::get
    pub async fn invalidate(&self, stale: &Secret) {
        self.token.forget(stale).await;
    }

    /// The card `api_ticket` (`ticket/getticket?type=wx_card`) that signs `cardExt`, cached like
    /// the token it is fetched with.
    pub async fn card_api_ticket(&self) -> Result<Secret, TokenError> {
        self.card_ticket
            .get_or_fetch(|| async {
                let ticket = self
                    .with_token(|token: Secret| async move { self.wechat.get_ticket(&token, "wx_card").await })
                    .await?;
                Ok((ticket.ticket, lifetime(ticket.expires_in)?))
            })
            .await
    }

    /// Runs `call` with the current token; when WeChat rejects the token, fetches the current
    /// one and runs `call` once more. Bounded: at most two calls.
    pub async fn with_token<T, F, Fut>(&self, call: F) -> Result<T, TokenError>
    where
        F: Fn(Secret) -> Fut,
        Fut: Future<Output = Result<T, WechatError>>,
    {
        let token = self.get().await?;
        match call(token.clone()).await {
            Err(WechatError::InvalidAccessToken(_)) => {
                self.invalidate(&token).await;
                let fresh = self.get().await?;
                Ok(call(fresh).await?)
            }
            other => Ok(other?),
        }
    }

    /// `stable_token`, retried on a busy or unreachable WeChat while the deadline allows.
    async fn fetch(&self) -> Result<(Secret, Duration), TokenError> {
        let mut secrets = self.secrets.get().await?;
        let mut rotated_once = false;
        let mut attempt = 1;
        loop {
            match self.wechat.stable_token(&secrets.app_secret).await {
                Ok(t) => return Ok((t.access_token, lifetime(t.expires_in)?)),
                Err(WechatError::InvalidAppSecret) if !rotated_once => {
                    rotated_once = true;
                    match self.secrets.refresh_after_rejection(&secrets).await? {
                        Some(fresh) => secrets = fresh,
                        None => return Err(WechatError::InvalidAppSecret.into()),
                    }
                }
                Err(e) if e.is_transient() && attempt < FETCH_ATTEMPTS => {
                    let pause = Duration::from_millis(100 * u64::from(attempt));
                    // Another attempt only if it can finish before the invocation's deadline.
                    if !crate::deadline::allows(pause, Duration::from_secs(1)) {
                        return Err(e.into());
                    }
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_lifetimes_are_refused() {
        assert_eq!(lifetime(7200).unwrap(), Duration::from_secs(7200));
        for absurd in [0, MAX_LIFETIME_SECS + 1, u64::MAX] {
            assert!(matches!(lifetime(absurd), Err(WechatError::BadResponse(_))), "{absurd}");
        }
    }
}
