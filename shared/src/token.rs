//! The access token and the card `api_ticket`, one of each for the whole fleet.
//!
//! Every container reads the shared item of the tokens table ([`TokenStore`]) and keeps what it
//! read in memory until the item's refresh is due, so a warm request makes no extra call. When
//! the item is missing, due, or holds a token WeChat just rejected, **one** container refreshes
//! it: the one whose conditional write takes the refresh lease. The others keep using the current
//! value while it is still valid, or wait briefly and read again; a lease holder that dies blocks
//! nobody longer than the lease ([`Config::token_lease`](crate::config::Config)).
//!
//! Tokens come from `cgi-bin/stable_token` in normal mode (the same current token for every
//! caller, unlike `cgi-bin/token`), never with `force_refresh` (20 a day, and it invalidates the
//! token every other container holds). Values are sealed with AES-256-GCM under a key derived
//! from the app secret: reading the table alone yields no usable token.
//!
//! When the table cannot be reached, a container fetches for itself (as every container did
//! before the table existed) rather than failing the request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::Mutex;

use crate::cache::usable_for;
use crate::clock::now_unix_ms as now_ms;
use crate::redacted::Secret;
use crate::secret_store::{AppSecrets, SecretCache, SecretsError};
use crate::store::StoreError;
use crate::store::tokens::{SealedValue, TokenStore};
use crate::wechat::{WechatClient, WechatError};

/// Attempts at fetching a token when WeChat is busy or unreachable (the call is idempotent).
const FETCH_ATTEMPTS: u32 = 3;

/// The longest lifetime WeChat gives a token or ticket (7200 s) with room to spare; anything
/// beyond is a broken answer, not a reason to cache a value for centuries.
const MAX_LIFETIME_SECS: u64 = 24 * 3600;

/// A value is used only while at least this far from its expiry (clocks of containers differ).
const EXPIRY_GUARD_MS: u64 = 30_000;

/// While another container refreshes, the current value is used from memory this long before
/// the item is read again.
const RECHECK_MS: u64 = 1_000;

/// Pauses between reads while another container refreshes and nothing usable is left: a refresh
/// takes one WeChat round trip and one write, and a thousand containers polling one item must stay
/// well under a DynamoDB partition's 3,000 reads a second. Each pause is stretched by up to half
/// at random so that waiting containers do not read in step.
const FIRST_PAUSE: Duration = Duration::from_millis(50);
const LONGEST_PAUSE: Duration = Duration::from_millis(1000);

/// Reads of the item one request makes at most before it fetches for itself.
const MAX_ROUNDS: u32 = 64;

/// The item names in the tokens table.
pub const ACCESS_TOKEN: &str = "access_token";
pub const CARD_TICKET: &str = "ticket#wx_card";

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

/// `pause` plus up to half of it, at random.
fn jittered(pause: Duration) -> Duration {
    let mut byte = [0u8; 1];
    getrandom::fill(&mut byte).expect("the OS random source is available");
    pause + pause.mul_f64(f64::from(byte[0]) / 510.0)
}

fn millis(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Wechat(#[from] WechatError),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// A token-protected call from a function that does not declare the part `access_token`:
    /// a programming error, which the function's own tests catch.
    #[error("this function does not declare the part access_token")]
    Undeclared,
}

/// The key that seals shared values: HMAC-SHA256 of a fixed label under the app secret, so it
/// changes when the app secret is rotated (old items then read as absent and are replaced).
fn sealing_key(app_secret: &Secret) -> LessSafeKey {
    let mut mac = Hmac::<Sha256>::new_from_slice(app_secret.expose().as_bytes()).expect("any key length");
    mac.update(b"wxa-serverless shared credential key v1");
    let key = UnboundKey::new(&AES_256_GCM, &mac.finalize().into_bytes()).expect("32 bytes");
    LessSafeKey::new(key)
}

/// What a sealed value is bound to: the app, the item, and the item's own fields, so that no
/// ciphertext can be moved to another item or given another lifetime.
fn binding(app_id: &str, name: &str, generation: &str, expires_at_ms: u64, refresh_at_ms: u64) -> String {
    format!("{app_id}\n{name}\n{generation}\n{expires_at_ms}\n{refresh_at_ms}")
}

fn seal(key: &LessSafeKey, aad: &str, value: &Secret) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).expect("the OS random source is available");
    let mut data = value.expose().as_bytes().to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad.as_bytes()),
        &mut data,
    )
    .expect("a value of any length seals");
    [nonce.as_slice(), &data].concat()
}

fn open(key: &LessSafeKey, aad: &str, sealed: &[u8]) -> Option<Secret> {
    let (nonce, data) = sealed.split_at_checked(NONCE_LEN)?;
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut data = data.to_vec();
    let plain = key.open_in_place(nonce, Aad::from(aad.as_bytes()), &mut data).ok()?;
    String::from_utf8(plain.to_vec()).ok().map(Secret::new)
}

/// A value this container uses, and until when without reading the item again.
#[derive(Clone)]
struct Held {
    value: Secret,
    generation: String,
    use_until_ms: u64,
}

/// One shared credential as this container knows it.
struct Slot {
    name: &'static str,
    local: Mutex<Local>,
}

#[derive(Default)]
struct Local {
    held: Option<Held>,
    /// The generation WeChat last rejected here: never used again, whatever the item says.
    rejected: Option<String>,
}

impl Local {
    fn keep(&mut self, value: Secret, generation: &str, use_until_ms: u64) -> Held {
        let held = Held {
            value,
            generation: generation.to_owned(),
            use_until_ms,
        };
        self.held = Some(held.clone());
        held
    }
}

impl Slot {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            local: Mutex::default(),
        }
    }
}

pub struct AccessTokenCache {
    wechat: WechatClient,
    secrets: Arc<SecretCache<AppSecrets>>,
    store: TokenStore,
    app_id: String,
    /// This container's name when it holds a lease.
    owner: String,
    lease: Duration,
    token: Slot,
    card_ticket: Slot,
}

impl AccessTokenCache {
    pub fn new(
        wechat: WechatClient,
        secrets: Arc<SecretCache<AppSecrets>>,
        store: TokenStore,
        app_id: &str,
        lease: Duration,
    ) -> Self {
        Self {
            wechat,
            secrets,
            store,
            app_id: app_id.to_owned(),
            owner: crate::random::nonce(),
            lease,
            token: Slot::new(ACCESS_TOKEN),
            card_ticket: Slot::new(CARD_TICKET),
        }
    }

    /// The current token. Concurrent callers in this container share one read or refresh.
    pub async fn get(&self) -> Result<Secret, TokenError> {
        Ok(self.token_held().await?.value)
    }

    async fn token_held(&self) -> Result<Held, TokenError> {
        self.current(&self.token, || self.fetch_token()).await
    }

    /// The card `api_ticket` (`ticket/getticket?type=wx_card`) that signs `cardExt`, shared like
    /// the token it is fetched with.
    pub async fn card_api_ticket(&self) -> Result<Secret, TokenError> {
        let held = self
            .current(&self.card_ticket, || async {
                let ticket = self
                    .with_token(|token: Secret| async move { self.wechat.get_ticket(&token, "wx_card").await })
                    .await?;
                Ok((ticket.ticket, lifetime(ticket.expires_in)?))
            })
            .await?;
        Ok(held.value)
    }

    /// Runs `call` with the current token; when WeChat rejects the token (40001/40014/42001),
    /// the fleet replaces it (once: whoever takes the lease on the rejected generation) and
    /// `call` runs once more with the replacement. Bounded: at most two calls.
    pub async fn with_token<T, F, Fut>(&self, call: F) -> Result<T, TokenError>
    where
        F: Fn(Secret) -> Fut,
        Fut: Future<Output = Result<T, WechatError>>,
    {
        let held = self.token_held().await?;
        match call(held.value.clone()).await {
            Err(WechatError::InvalidAccessToken(code)) => {
                tracing::warn!(errcode = code, "WeChat rejected the access token; replacing it");
                self.reject(&self.token, &held.generation).await;
                let fresh = self.token_held().await?;
                Ok(call(fresh.value).await?)
            }
            other => Ok(other?),
        }
    }

    /// Never uses `generation` again here; the next read treats an item still holding it as due.
    async fn reject(&self, slot: &Slot, generation: &str) {
        let mut local = slot.local.lock().await;
        if local.held.as_ref().is_some_and(|h| h.generation == generation) {
            local.held = None;
        }
        local.rejected = Some(generation.to_owned());
    }

    /// The value of `slot`: from memory, else from the shared item, else refreshed by this
    /// container if it wins the lease (or the table is unreachable).
    async fn current<F, Fut>(&self, slot: &Slot, fetch: F) -> Result<Held, TokenError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(Secret, Duration), TokenError>>,
    {
        let mut local = slot.local.lock().await;
        if let Some(held) = local.held.as_ref().filter(|h| now_ms() < h.use_until_ms) {
            return Ok(held.clone());
        }
        let mut secrets = self.secrets.get().await?;
        let mut key = sealing_key(&secrets.app_secret);
        let mut secret_reread = false;
        let mut pause = FIRST_PAUSE;
        let mut waiting_since = Instant::now();
        let mut waited_on: Option<(String, u64)> = None;
        for _ in 0..MAX_ROUNDS {
            let stored = match self.store.read(slot.name).await {
                Ok(stored) => stored,
                Err(e) => return self.fetch_alone(&mut local, e, &fetch).await,
            };
            let now = now_ms();
            let value = stored.as_ref().and_then(|s| s.value.as_ref());
            let live = value.filter(|v| {
                local.rejected.as_deref() != Some(v.generation.as_str()) && now + EXPIRY_GUARD_MS < v.expires_at_ms
            });
            let opened = match live {
                Some(v) => match open(&key, &self.aad(slot.name, v), &v.sealed) {
                    Some(secret) => Some((v, secret)),
                    None if !secret_reread => {
                        // Sealed under another key: the app secret was rotated, here or there.
                        secret_reread = true;
                        if let Some(fresh) = self.secrets.refresh_after_rejection(&secrets).await? {
                            secrets = fresh;
                            key = sealing_key(&secrets.app_secret);
                            continue;
                        }
                        tracing::warn!(
                            item = slot.name,
                            "a shared credential does not open under this app secret"
                        );
                        None
                    }
                    None => None,
                },
                None => None,
            };
            if let Some((v, secret)) = &opened
                && now < v.refresh_at_ms
            {
                return Ok(local.keep(secret.clone(), &v.generation, v.refresh_at_ms));
            }
            let lease = stored
                .as_ref()
                .and_then(|s| s.lease.clone())
                .filter(|(_, until)| now <= *until);
            if let Some(lease) = lease {
                if let Some((v, secret)) = opened {
                    // Another container is fetching the next one; this one is still valid.
                    let until = (now + RECHECK_MS).min(v.expires_at_ms - EXPIRY_GUARD_MS);
                    return Ok(local.keep(secret, &v.generation, until));
                }
                // Each holder gets a lease's worth of waiting: a new one means progress.
                if waited_on.as_ref() != Some(&lease) {
                    waited_on = Some(lease);
                    waiting_since = Instant::now();
                }
                if waiting_since.elapsed() + pause > self.lease + Duration::from_secs(1)
                    || !crate::deadline::allows(pause, Duration::from_secs(1))
                {
                    break;
                }
                tokio::time::sleep(jittered(pause)).await;
                pause = (pause * 2).min(LONGEST_PAUSE);
                continue;
            }
            let seen = value.map(|v| v.generation.as_str());
            let until = now + millis(self.lease);
            match self.store.take_lease(slot.name, &self.owner, now, until, seen).await {
                Ok(true) => {
                    let refreshed = self.refresh(&mut local, slot.name, &key, &fetch).await;
                    return match (refreshed, opened) {
                        // Refreshing early failed (WeChat busy): the current one still works.
                        (Err(e), Some((v, secret))) => {
                            tracing::warn!(item = slot.name, error = %e, "refresh failed; using the current value meanwhile");
                            let until = (now_ms() + RECHECK_MS).min(v.expires_at_ms - EXPIRY_GUARD_MS);
                            Ok(local.keep(secret, &v.generation, until))
                        }
                        (refreshed, _) => refreshed,
                    };
                }
                // Someone refreshed or took the lease meanwhile: read what they did.
                Ok(false) => continue,
                Err(e) => return self.fetch_alone(&mut local, e, &fetch).await,
            }
        }
        tracing::warn!(
            item = slot.name,
            "no shared credential became usable in time; fetching one for this container"
        );
        Self::fetch_own(&mut local, &fetch).await
    }

    fn aad(&self, name: &str, v: &SealedValue) -> String {
        binding(&self.app_id, name, &v.generation, v.expires_at_ms, v.refresh_at_ms)
    }

    /// Holding the lease: fetches the next value from WeChat and publishes it for the fleet.
    async fn refresh<F, Fut>(
        &self,
        local: &mut Local,
        name: &str,
        key: &LessSafeKey,
        fetch: &F,
    ) -> Result<Held, TokenError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(Secret, Duration), TokenError>>,
    {
        let (value, lifetime) = match fetch().await {
            Ok(fetched) => fetched,
            Err(e) => {
                // Let the next container try now rather than when the lease expires.
                if let Err(release) = self.store.release_lease(name, &self.owner).await {
                    tracing::warn!(item = name, error = %release, "could not give the refresh lease back");
                }
                return Err(e);
            }
        };
        let now = now_ms();
        let mut next = SealedValue {
            generation: crate::random::nonce(),
            sealed: Vec::new(),
            expires_at_ms: now + millis(lifetime),
            refresh_at_ms: now + millis(usable_for(lifetime)),
        };
        next.sealed = seal(key, &self.aad(name, &next), &value);
        match self.store.publish(name, &self.owner, &next).await {
            Ok(true) => tracing::info!(item = name, "refreshed the shared credential"),
            Ok(false) => tracing::warn!(
                item = name,
                "the refresh lease expired before publishing; kept here only"
            ),
            Err(e) => tracing::warn!(item = name, error = %e, "could not publish the refreshed credential"),
        }
        local.rejected = None;
        Ok(local.keep(value, &next.generation, next.refresh_at_ms))
    }

    /// The table is unreachable: this container fetches for itself (and tries the table again
    /// when the value is due).
    async fn fetch_alone<F, Fut>(&self, local: &mut Local, cause: StoreError, fetch: &F) -> Result<Held, TokenError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(Secret, Duration), TokenError>>,
    {
        tracing::warn!(error = %cause, "the tokens table is unavailable; fetching a credential for this container");
        Self::fetch_own(local, fetch).await
    }

    /// A value for this container alone (not published), used until its own refresh is due.
    async fn fetch_own<F, Fut>(local: &mut Local, fetch: &F) -> Result<Held, TokenError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(Secret, Duration), TokenError>>,
    {
        let (value, lifetime) = fetch().await?;
        Ok(local.keep(value, "own", now_ms() + millis(usable_for(lifetime))))
    }

    /// `stable_token`, retried on a busy or unreachable WeChat while the deadline allows.
    async fn fetch_token(&self) -> Result<(Secret, Duration), TokenError> {
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

    #[test]
    fn a_sealed_value_opens_only_under_its_key_and_binding() {
        let key = sealing_key(&Secret::new("app-secret-1"));
        let aad = binding("wx0000000000000001", ACCESS_TOKEN, "g1", 2_000, 1_000);
        let sealed = seal(&key, &aad, &Secret::new("TOKEN"));
        assert!(
            !sealed.windows(5).any(|w| w == b"TOKEN"),
            "the token is not in the clear"
        );
        assert_eq!(open(&key, &aad, &sealed).unwrap().expose(), "TOKEN");
        let other_key = sealing_key(&Secret::new("app-secret-2"));
        assert!(open(&other_key, &aad, &sealed).is_none(), "another app secret");
        for moved in [
            binding("wx0000000000000002", ACCESS_TOKEN, "g1", 2_000, 1_000),
            binding("wx0000000000000001", CARD_TICKET, "g1", 2_000, 1_000),
            binding("wx0000000000000001", ACCESS_TOKEN, "g2", 2_000, 1_000),
            binding("wx0000000000000001", ACCESS_TOKEN, "g1", 9_000, 1_000),
            binding("wx0000000000000001", ACCESS_TOKEN, "g1", 2_000, 1_500),
        ] {
            assert!(open(&key, &moved, &sealed).is_none(), "{moved}");
        }
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(open(&key, &aad, &flipped).is_none());
        assert!(open(&key, &aad, &sealed[..NONCE_LEN]).is_none());
    }
}
