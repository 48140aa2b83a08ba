//! What a container builds once at init and every invocation reuses.

use std::sync::Arc;

use aws_config::SdkConfig;
use lambda_http::Request;

use crate::cache::ImageCache;
use crate::config::Config;
use crate::error::ApiError;
use crate::http::bearer_token;
use crate::pay::client::PayClient;
use crate::pay::orders::OrderStore;
use crate::secrets::SecretCache;
use crate::session::{Session, SessionStore};
use crate::token::AccessTokenCache;
use crate::wechat::WechatClient;

pub struct AppState {
    pub config: Config,
    pub wechat: WechatClient,
    pub secrets: Arc<SecretCache>,
    pub tokens: AccessTokenCache,
    pub sessions: SessionStore,
    /// Mini-program code images by request (empty until `qrcode` uses it).
    pub qrcodes: ImageCache,
    pub orders: OrderStore,
    pub pay: PayClient,
}

/// Memory the qrcode cache may use: a code image is 30–150 KB, so this holds a hundred or more.
const QRCODE_CACHE_MAX_BYTES: usize = 16 * 1024 * 1024;

impl AppState {
    /// Builds the clients. Nothing here touches the network: secrets and tokens are fetched on
    /// first use, so init stays fast and a Secrets Manager outage is not cached by a cold start.
    /// `tls` is the container's one TLS configuration (the SDK config's HTTP client uses it too).
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
        let http = crate::wechat::http_client(tls, config.wechat_timeout);
        let wechat = WechatClient::new(&config.wechat_api_base, &config.app_id, http.clone());
        let secrets = Arc::new(SecretCache::new(
            secretsmanager,
            &config.secret_id,
            config.secret_cache_ttl,
        ));
        let tokens = AccessTokenCache::new(wechat.clone(), secrets.clone());
        let orders = OrderStore::new(dynamodb.clone(), &config.orders_table);
        let sessions = SessionStore::new(dynamodb, &config.sessions_table);
        let qrcodes = ImageCache::new(config.qrcode_cache_ttl, QRCODE_CACHE_MAX_BYTES);
        let pay = PayClient::new(&config.wechatpay_api_base, http);
        Self {
            config,
            wechat,
            secrets,
            tokens,
            sessions,
            qrcodes,
            orders,
            pay,
        }
    }

    /// Reads the config from the environment and the AWS settings the Lambda runtime provides.
    pub async fn from_env() -> Result<Self, crate::config::ConfigError> {
        let config = Config::from_env()?;
        let tls = crate::net::tls_config(config.tls_roots);
        let sdk = crate::aws::sdk_config_from_env(&tls).await;
        Ok(Self::new(config, &sdk, &tls))
    }

    /// The session of the request's `Authorization: Bearer` token: one DynamoDB read.
    pub async fn authenticate(&self, req: &Request) -> Result<Session, ApiError> {
        let token = bearer_token(req)?;
        self.sessions.get(token).await?.ok_or_else(|| {
            ApiError::unauthorized("invalid_token", "the login token is unknown or expired: log in again")
        })
    }
}
