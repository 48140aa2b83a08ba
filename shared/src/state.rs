//! What a container builds once at init and every invocation reuses: only the parts its
//! function declares ([`Parts`]). A function that does not pay has no pay secret reader at all.

use std::sync::Arc;

use aws_config::SdkConfig;
use lambda_http::Request;

use crate::api::error::ApiError;
use crate::api::request::bearer_token;
use crate::cache::ImageCache;
use crate::config::{Config, Parts, PayOrderSettings, PaySettings};
use crate::pay::Merchant;
use crate::pay::client::PayClient;
use crate::redacted::Secret;
use crate::secret_store::{AppSecrets, PushSecrets, SecretCache};
use crate::store::budgets::{Budget, BudgetStore, Spent};
use crate::store::messages::MessageStore;
use crate::store::orders::OrderStore;
use crate::store::refunds::RefundStore;
use crate::store::sessions::{Session, SessionStore};
use crate::store::tokens::TokenStore;
use crate::store::transfers::TransferStore;
use crate::token::{AccessTokenCache, TokenError};
use crate::wechat::WechatClient;

/// The WeChat server API: its client, the app secret and (part `access_token`) the fleet's
/// shared access token.
pub struct Wechat {
    pub client: WechatClient,
    pub secrets: Arc<SecretCache<AppSecrets>>,
    tokens: Option<AccessTokenCache>,
}

impl Wechat {
    /// The access token and card ticket (part `access_token`).
    pub fn tokens(&self) -> Result<&AccessTokenCache, TokenError> {
        let declared = DECLARED.try_with(|p| p.access_token).unwrap_or(true);
        self.tokens.as_ref().filter(|_| declared).ok_or(TokenError::Undeclared)
    }

    /// `wxa/checksession` for `session` with the access token: whether its key is still the
    /// one WeChat holds.
    pub async fn check_session(&self, session: &Session) -> Result<bool, TokenError> {
        self.tokens()?
            .with_token(|token: Secret| async move {
                self.client
                    .check_session(&token, &session.openid, &session.session_key)
                    .await
            })
            .await
    }

    /// A JSON API that takes the access token in its query, with the token cache's one retry
    /// after a rejected token; in API security mode when the app secret holds its keys and the
    /// API supports it.
    pub async fn call(&self, path: &str, body: &serde_json::Value) -> Result<serde_json::Value, TokenError> {
        let tokens = self.tokens()?;
        let secrets = self.secrets.get().await?;
        let security = secrets.api_security_keys.as_ref();
        tokens
            .with_token(|token: Secret| async move { self.client.post_with_token(path, &token, body, security).await })
            .await
    }

    /// `getuserphonenumber` for a button code (in API security mode when configured).
    pub async fn phone_number(&self, code: &str) -> Result<crate::wechat::PhoneInfo, TokenError> {
        let tokens = self.tokens()?;
        let secrets = self.secrets.get().await?;
        let security = secrets.api_security_keys.as_ref();
        tokens
            .with_token(|token: Secret| async move { self.client.get_user_phone_number(&token, code, security).await })
            .await
    }

    /// `media/upload` of a temporary image for customer-service replies.
    pub async fn upload_temp_image(
        &self,
        image: &[u8],
        content_type: &str,
        filename: &str,
    ) -> Result<crate::wechat::UploadedMedia, TokenError> {
        self.tokens()?
            .with_token(|token: Secret| async move {
                self.client
                    .upload_temp_image(&token, image.to_vec(), content_type, filename)
                    .await
            })
            .await
    }

    /// `wxa/resetusersessionkey` for `session`: a new key, signed for with the one it holds.
    pub async fn reset_session_key(&self, session: &Session) -> Result<Secret, TokenError> {
        self.tokens()?
            .with_token(|token: Secret| async move {
                self.client
                    .reset_user_session_key(&token, &session.openid, &session.session_key)
                    .await
            })
            .await
    }
}

/// WeChat Pay: the merchant's keys (the pay secret), the orders table, and the client that
/// places orders (only where orders are placed).
pub struct Payments {
    pub settings: PaySettings,
    pub merchant: SecretCache<Merchant>,
    pub orders: OrderStore,
    pub client: Option<(PayClient, PayOrderSettings)>,
    /// Refunds (only where refunds are applied for or recorded).
    pub refunds: Option<RefundStore>,
    /// Merchant transfers (only where they are made, confirmed or recorded).
    pub transfers: Option<TransferStore>,
}

impl Payments {
    /// The client that talks to WeChat Pay, and where it says notifications go.
    pub fn client(&self) -> Result<(&PayClient, &PayOrderSettings), ApiError> {
        part(self.client.as_ref(), "pay_orders", |p| p.pay_orders).map(|(c, s)| (c, s))
    }

    pub fn refunds(&self) -> Result<&RefundStore, ApiError> {
        part(self.refunds.as_ref(), "refunds", |p| p.refunds)
    }

    pub fn transfers(&self) -> Result<&TransferStore, ApiError> {
        part(self.transfers.as_ref(), "transfers", |p| p.transfers)
    }
}

pub struct AppState {
    pub config: Config,
    /// The container's DynamoDB client (each store holds a clone).
    dynamodb: aws_sdk_dynamodb::Client,
    sessions: Option<SessionStore>,
    orders: Option<OrderStore>,
    messages: Option<MessageStore>,
    /// Per-caller budgets (part `budget`).
    budgets: Option<(BudgetStore, Budget)>,
    wechat: Option<Wechat>,
    /// The push secret: the message push's token and EncodingAESKey (part `push`).
    push: Option<SecretCache<PushSecrets>>,
    pay: Option<Payments>,
    /// Mini-program code images by request (empty unless `qrcode` uses it).
    pub qrcodes: ImageCache,
}

/// Memory the qrcode cache may use: a code image is 30–150 KB, so this holds a hundred or more.
const QRCODE_CACHE_MAX_BYTES: usize = 16 * 1024 * 1024;

/// A part a handler uses but its function did not declare: a programming error, which the
/// function's own tests catch.
fn undeclared(part: &str) -> ApiError {
    ApiError::misconfigured(format!("this function does not declare the part {part}"))
}

tokio::task_local! {
    /// The parts the function being run declares (set by `Function::handle` / `invoke`).
    static DECLARED: Parts;
}

/// Runs `work` as the function that declares `parts`: a part it did not declare is refused
/// even by a state that holds it (a test's state serves every function), so a forgotten part
/// fails the function's tests as it would fail in production, where the state has only those.
pub async fn as_declared<T>(parts: Parts, work: impl Future<Output = T>) -> T {
    DECLARED.scope(parts, work).await
}

/// `value` if the running function declared its part (`declares`); outside a function's run
/// (a test reading back) every part the state holds is there.
fn part<'a, T>(value: Option<&'a T>, name: &str, declares: fn(&Parts) -> bool) -> Result<&'a T, ApiError> {
    let declared = DECLARED.try_with(declares).unwrap_or(true);
    value.filter(|_| declared).ok_or_else(|| undeclared(name))
}

impl AppState {
    /// Builds the clients of the parts `config` was read for. Nothing here touches the network:
    /// secrets and tokens are fetched on first use, so init stays fast and a Secrets Manager
    /// outage is not cached by a cold start. `tls` is the container's one TLS configuration (the
    /// SDK config's HTTP client uses it too).
    pub fn new(config: Config, sdk: &SdkConfig, tls: &rustls::ClientConfig) -> Self {
        Self::from_clients(
            config,
            aws_sdk_dynamodb::Client::new(sdk),
            aws_sdk_secretsmanager::Client::new(sdk),
            tls,
        )
    }

    /// Builds the state around given AWS clients (tests add a call-counting interceptor).
    pub fn from_clients(
        config: Config,
        dynamodb: aws_sdk_dynamodb::Client,
        secretsmanager: aws_sdk_secretsmanager::Client,
        tls: &rustls::ClientConfig,
    ) -> Self {
        let http = crate::net::wechat_client(tls, config.wechat_timeout);
        let sessions = config
            .sessions_table
            .as_deref()
            .map(|table| SessionStore::new(dynamodb.clone(), table));
        let budgets = config
            .sessions_table
            .as_deref()
            .zip(config.caller_budget)
            .map(|(table, budget)| (BudgetStore::new(dynamodb.clone(), table), budget));
        let app_secrets = config.app_secret_id.as_deref().map(|secret_id| {
            Arc::new(SecretCache::new(
                secretsmanager.clone(),
                secret_id,
                config.secret_cache_ttl,
            ))
        });
        let wechat = app_secrets.clone().filter(|_| config.parts.wechat).map(|secrets| {
            let client = WechatClient::new(&config.wechat_api_base, &config.app_id, http.clone())
                .with_timeout(config.wechat_timeout);
            let tokens = config.tokens_table.as_deref().map(|table| {
                AccessTokenCache::new(
                    client.clone(),
                    secrets.clone(),
                    TokenStore::new(dynamodb.clone(), table),
                    &config.app_id,
                    config.token_lease,
                )
            });
            Wechat {
                tokens,
                client,
                secrets,
            }
        });
        let push = config
            .push_secret_id
            .as_deref()
            .map(|secret_id| SecretCache::new(secretsmanager.clone(), secret_id, config.secret_cache_ttl));
        let messages = config
            .messages_table
            .as_deref()
            .map(|table| MessageStore::new(dynamodb.clone(), table));
        let orders = config
            .orders_table
            .as_deref()
            .map(|table| OrderStore::new(dynamodb.clone(), table));
        let pay = config
            .pay
            .as_ref()
            .zip(orders.clone())
            .map(|(settings, orders)| Payments {
                merchant: SecretCache::new(secretsmanager, &settings.secret_id, config.secret_cache_ttl),
                refunds: config
                    .refunds_table
                    .as_deref()
                    .map(|table| RefundStore::new(dynamodb.clone(), table, orders.table())),
                transfers: config
                    .transfers_table
                    .as_deref()
                    .map(|table| TransferStore::new(dynamodb.clone(), table)),
                orders,
                client: config.pay_orders.as_ref().map(|orders| {
                    (
                        PayClient::new(&orders.api_base, http, config.wechat_timeout),
                        orders.clone(),
                    )
                }),
                settings: settings.clone(),
            });
        let qrcodes = ImageCache::new(config.qrcode_cache_ttl, QRCODE_CACHE_MAX_BYTES);
        Self {
            config,
            dynamodb,
            sessions,
            orders,
            messages,
            budgets,
            wechat,
            push,
            pay,
            qrcodes,
        }
    }

    /// Reads the settings of `parts` from the environment and the AWS settings the Lambda
    /// runtime provides.
    pub async fn from_env(parts: Parts) -> Result<Self, crate::config::ConfigError> {
        let config = Config::from_env(parts)?;
        let tls = crate::net::tls_config(config.tls_roots);
        let sdk = crate::net::aws::sdk_config_from_env(&tls).await;
        Ok(Self::new(config, &sdk, &tls))
    }

    pub fn dynamodb(&self) -> &aws_sdk_dynamodb::Client {
        &self.dynamodb
    }

    /// A table of this function (the first its config names), if it has one.
    pub fn any_table(&self) -> Option<&str> {
        let c = &self.config;
        [
            &c.sessions_table,
            &c.orders_table,
            &c.tokens_table,
            &c.messages_table,
            &c.refunds_table,
            &c.transfers_table,
        ]
        .into_iter()
        .find_map(|table| table.as_deref())
    }

    pub fn sessions(&self) -> Result<&SessionStore, ApiError> {
        part(self.sessions.as_ref(), "sessions", |p| p.sessions)
    }

    pub fn wechat(&self) -> Result<&Wechat, ApiError> {
        part(self.wechat.as_ref(), "wechat", |p| p.wechat)
    }

    /// The orders table (also `pay()?.orders` where the function pays).
    pub fn orders(&self) -> Result<&OrderStore, ApiError> {
        part(self.orders.as_ref(), "orders", |p| p.orders)
    }

    pub fn messages(&self) -> Result<&MessageStore, ApiError> {
        part(self.messages.as_ref(), "messages", |p| p.messages)
    }

    /// The push secret (the message push's token and EncodingAESKey).
    pub fn push_secrets(&self) -> Result<&SecretCache<PushSecrets>, ApiError> {
        part(self.push.as_ref(), "push", |p| p.push)
    }

    pub fn pay(&self) -> Result<&Payments, ApiError> {
        part(self.pay.as_ref(), "pay", |p| p.pay)
    }

    /// Spends one call of `openid`'s budget on `route` (a route that spends app-wide WeChat
    /// quotas or money for its caller), before that call: `429 too_many_requests` with
    /// `Retry-After` when it is spent.
    pub async fn spend_budget(&self, route: &str, openid: &str) -> Result<(), ApiError> {
        let (store, budget) = part(self.budgets.as_ref(), "budget", |p| p.budget)?;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        match store.spend(route, openid, *budget, now_ms).await? {
            Spent::Allowed => Ok(()),
            Spent::RetryAfter(secs) => {
                crate::metrics::count(crate::metrics::Metric::CallersThrottled);
                tracing::warn!(route, retry_after = secs, "a caller spent their budget");
                Err(ApiError::too_many_requests(secs))
            }
        }
    }

    /// The session of the request's `Authorization: Bearer` token: one DynamoDB read.
    pub async fn authenticate(&self, req: &Request) -> Result<Session, ApiError> {
        let token = bearer_token(req)?;
        self.sessions()?.get(token).await?.ok_or_else(|| {
            ApiError::unauthorized("invalid_token", "the login token is unknown or expired: log in again")
        })
    }
}
