//! AWS SDK configuration: bounded timeouts and retries for DynamoDB and Secrets Manager, sent
//! through the container's reqwest client (see [`crate::net`]) instead of the SDK's own
//! hyper/rustls stack, so a cold start builds one TLS configuration, not two.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{ConfigLoader, SdkConfig};
use aws_smithy_runtime_api::client::http::{
    HttpConnector, HttpConnectorFuture, SharedHttpClient, SharedHttpConnector, http_client_fn,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_types::body::SdkBody;

/// A TCP + TLS connect to an AWS endpoint in the same region takes milliseconds.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The longest one SDK operation may take, retries included.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);

/// Loads the SDK config from `loader` with our HTTP client, timeouts and retry policy. In Lambda
/// the loader is `aws_config::defaults(..)` (role credentials, region, and `AWS_ENDPOINT_URL`
/// locally).
pub async fn load_sdk_config(loader: ConfigLoader, tls: &rustls::ClientConfig) -> SdkConfig {
    loader
        .http_client(sdk_http_client(crate::net::http_client(tls, CONNECT_TIMEOUT, None)))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(Duration::from_secs(2))
                .operation_timeout(OPERATION_TIMEOUT)
                .build(),
        )
        // Standard mode: 3 attempts with jittered backoff, throttling included.
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .load()
        .await
}

/// The SDK config of a Lambda container. Lambda sets `AWS_REGION` and hands the role's
/// credentials over in environment variables: when they are there, they are used directly, which
/// skips building the rest of the default chains (profile files, web identity with its STS
/// client, ECS, IMDS) at every cold start.
pub async fn sdk_config_from_env(tls: &rustls::ClientConfig) -> SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Ok(region) = std::env::var("AWS_REGION")
        && !region.is_empty()
    {
        loader = loader.region(aws_config::Region::new(region));
    }
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_some() && std::env::var_os("AWS_SECRET_ACCESS_KEY").is_some() {
        loader = loader.credentials_provider(aws_config::environment::EnvironmentVariableCredentialsProvider::new());
    }
    load_sdk_config(loader, tls).await
}

/// Wraps a reqwest client as the SDK's HTTP client. The SDK times attempts and retries itself;
/// this only moves bytes and says which failures are worth another attempt.
pub fn sdk_http_client(http: reqwest::Client) -> SharedHttpClient {
    let connector = SharedHttpConnector::new(ReqwestConnector(http));
    http_client_fn(move |_settings, _components| connector.clone())
}

#[derive(Debug)]
struct ReqwestConnector(reqwest::Client);

impl HttpConnector for ReqwestConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let http = self.0.clone();
        HttpConnectorFuture::new(async move {
            let request = request.try_into_http1x().map_err(|e| ConnectorError::user(e.into()))?;
            let (parts, body) = request.into_parts();
            // DynamoDB and Secrets Manager requests are small and already in memory.
            let body = body
                .bytes()
                .ok_or_else(|| ConnectorError::user("streaming request bodies are not supported".into()))?
                .to_vec();
            let response = http
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .map_err(connector_error)?;
            let mut answer = lambda_http::http::Response::builder().status(response.status());
            if let Some(headers) = answer.headers_mut() {
                *headers = response.headers().clone();
            }
            let body = response.bytes().await.map_err(connector_error)?;
            let answer = answer
                .body(SdkBody::from(body))
                .map_err(|e| ConnectorError::other(e.into(), None))?;
            HttpResponse::try_from(answer).map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

/// Connection failures and cut-off answers are I/O errors, which the SDK retries.
fn connector_error(error: reqwest::Error) -> ConnectorError {
    if error.is_timeout() {
        ConnectorError::timeout(error.into())
    } else if error.is_connect() || error.is_request() || error.is_body() {
        ConnectorError::io(error.into())
    } else {
        ConnectorError::other(error.into(), None)
    }
}
