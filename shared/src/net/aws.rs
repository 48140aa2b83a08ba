//! AWS SDK configuration: bounded timeouts and retries for DynamoDB and Secrets Manager, sent
//! through reqwest on the container's TLS configuration (see [`crate::net`]) instead of the SDK's
//! own hyper/rustls stack, so a cold start builds one TLS configuration, not two. The reqwest
//! client honours the SDK's connector settings (connect and read timeouts), follows no redirect
//! and retries nothing itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{ConfigLoader, SdkConfig};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;

/// A TCP + TLS connect to an AWS endpoint in the same region takes milliseconds.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The longest one SDK operation may take, retries included.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);

/// The operation timeout an SDK client was configured with ([`OPERATION_TIMEOUT`] under
/// [`load_sdk_config`]): our own bound around its calls follows it rather than guessing.
pub fn operation_timeout(config: Option<&TimeoutConfig>) -> Duration {
    config
        .and_then(TimeoutConfig::operation_timeout)
        .unwrap_or(OPERATION_TIMEOUT)
}

/// Loads the SDK config from `loader` with our HTTP client, timeouts and retry policy. In Lambda
/// the loader is `aws_config::defaults(..)` (role credentials, region, and `AWS_ENDPOINT_URL`
/// locally).
pub async fn load_sdk_config(loader: ConfigLoader, tls: &rustls::ClientConfig) -> SdkConfig {
    configure(loader, sdk_http_client(tls)).load().await
}

/// The connector settings the SDK asks for under [`load_sdk_config`]'s timeouts.
fn configured_settings() -> HttpConnectorSettings {
    HttpConnectorSettings::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
}

fn configure(loader: ConfigLoader, http: SharedHttpClient) -> ConfigLoader {
    loader
        .http_client(http)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(Duration::from_secs(2))
                .operation_timeout(OPERATION_TIMEOUT)
                .build(),
        )
        // Standard mode: 3 attempts with jittered backoff, throttling included.
        .retry_config(RetryConfig::standard().with_max_attempts(3))
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

/// The SDK's HTTP client: reqwest on `tls` ([`crate::net::sdk_client`]: no redirects, no retries
/// of its own), one client per distinct connector settings the SDK asks for, so that its connect
/// and read timeouts apply. The SDK times attempts and retries itself; this only moves bytes and
/// says which failures are worth another attempt. The client for [`load_sdk_config`]'s settings
/// is built now (at init), the others when first asked for.
pub fn sdk_http_client(tls: &rustls::ClientConfig) -> SharedHttpClient {
    let client = ReqwestHttpClient::new(tls);
    client.connector(&configured_settings());
    SharedHttpClient::new(client)
}

/// (connect timeout, read timeout)
type Timeouts = (Option<Duration>, Option<Duration>);

#[derive(Debug, Clone)]
struct ReqwestHttpClient {
    tls: rustls::ClientConfig,
    connectors: Arc<Mutex<HashMap<Timeouts, SharedHttpConnector>>>,
}

impl ReqwestHttpClient {
    fn new(tls: &rustls::ClientConfig) -> Self {
        Self {
            tls: tls.clone(),
            connectors: Arc::default(),
        }
    }

    fn connector(&self, settings: &HttpConnectorSettings) -> SharedHttpConnector {
        let timeouts = (settings.connect_timeout(), settings.read_timeout());
        let mut connectors = self.connectors.lock().unwrap_or_else(PoisonError::into_inner);
        connectors
            .entry(timeouts)
            .or_insert_with(|| {
                let http = crate::net::sdk_client(&self.tls, timeouts.0, timeouts.1);
                SharedHttpConnector::new(ReqwestConnector(http))
            })
            .clone()
    }
}

impl HttpClient for ReqwestHttpClient {
    fn http_connector(&self, settings: &HttpConnectorSettings, _components: &RuntimeComponents) -> SharedHttpConnector {
        self.connector(settings)
    }
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
/// A connection kept by [`crate::net::open_ahead`] ends its placeholder call, not retried.
fn connector_error(error: reqwest::Error) -> ConnectorError {
    if crate::net::open_ahead::is_opened_ahead(&error) {
        ConnectorError::other(error.into(), None)
    } else if error.is_timeout() {
        ConnectorError::timeout(error.into())
    } else if error.is_connect() || error.is_request() || error.is_body() {
        ConnectorError::io(error.into())
    } else {
        ConnectorError::other(error.into(), None)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    fn tls() -> rustls::ClientConfig {
        crate::net::tls_config(crate::net::TlsRoots::Bundled)
    }

    /// An HTTP/1.1 server on 127.0.0.1 that answers every request with `answer` (or never, for
    /// `None`) and counts the requests it read.
    async fn server(answer: Option<String>) -> (u16, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let (answer, counted) = (answer.clone(), counted.clone());
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    counted.fetch_add(1, Ordering::SeqCst);
                    match answer {
                        Some(answer) => {
                            let _ = tcp.write_all(answer.as_bytes()).await;
                        }
                        // Holds the connection open without a word until the client gives up.
                        None => while tcp.read(&mut buf).await.is_ok_and(|n| n > 0) {},
                    }
                });
            }
        });
        (port, hits)
    }

    fn get(port: u16) -> HttpRequest {
        let request = lambda_http::http::Request::get(format!("http://127.0.0.1:{port}/"))
            .body(SdkBody::empty())
            .unwrap();
        HttpRequest::try_from(request).unwrap()
    }

    fn settings(connect: Duration, read: Option<Duration>) -> HttpConnectorSettings {
        let mut builder = HttpConnectorSettings::builder();
        builder.set_connect_timeout(Some(connect));
        builder.set_read_timeout(read);
        builder.build()
    }

    #[tokio::test]
    async fn the_sdk_sees_a_redirect_and_nothing_follows_it() {
        let ok = "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: 17\r\n\r\n{\"TableNames\":[]}";
        let (target, target_hits) = server(Some(ok.to_owned())).await;
        let redirect = format!(
            "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:{target}/\r\ncontent-length: 0\r\n\r\n"
        );
        let (origin, origin_hits) = server(Some(redirect)).await;

        let client = ReqwestHttpClient::new(&tls());
        let loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(format!("http://127.0.0.1:{origin}"))
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                "test", "test", None, None, "test",
            ));
        let sdk = configure(loader, SharedHttpClient::new(client.clone())).load().await;
        let error = aws_sdk_dynamodb::Client::new(&sdk)
            .list_tables()
            .send()
            .await
            .expect_err("a redirect is no answer");
        let status = error.raw_response().map(|r| r.status().as_u16());
        assert_eq!(status, Some(307), "{error:?}");
        assert_eq!(
            origin_hits.load(Ordering::SeqCst),
            1,
            "neither reqwest nor the SDK sent it again"
        );
        assert_eq!(target_hits.load(Ordering::SeqCst), 0, "the redirect was not followed");
        // The SDK asked for the settings sdk_http_client builds a client for at init, and only those.
        let built: Vec<Timeouts> = client.connectors.lock().unwrap().keys().copied().collect();
        let configured = configured_settings();
        assert_eq!(built, [(configured.connect_timeout(), configured.read_timeout())]);
    }

    #[tokio::test]
    async fn the_read_timeout_of_the_settings_applies() {
        let (silent, hits) = server(None).await;
        let client = ReqwestHttpClient::new(&tls());
        let connector = client.connector(&settings(Duration::from_secs(1), Some(Duration::from_millis(300))));
        let started = Instant::now();
        let error = tokio::time::timeout(Duration::from_secs(5), connector.call(get(silent)))
            .await
            .expect("the read timeout ends the call")
            .expect_err("no answer comes");
        assert!(error.is_timeout(), "{error:?}");
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        // Without a read timeout in the settings, the same call is still waiting.
        let unbounded = client.connector(&settings(Duration::from_secs(1), None));
        let waiting = tokio::time::timeout(Duration::from_millis(800), unbounded.call(get(silent))).await;
        assert!(waiting.is_err(), "{waiting:?}");
    }

    #[tokio::test]
    async fn the_connect_timeout_of_the_settings_applies() {
        // A listener that accepts nothing, with its accept queue (backlog 0) filled: further
        // connection attempts get no answer at all, like an endpoint behind a dropping firewall.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(0).unwrap();
        let address = listener.local_addr().unwrap();
        let mut queued = Vec::new();
        let full = loop {
            let attempt = tokio::time::timeout(Duration::from_millis(200), tokio::net::TcpStream::connect(address));
            match attempt.await {
                Ok(Ok(tcp)) if queued.len() < 8 => queued.push(tcp),
                Ok(_) => break false,
                Err(_) => break true,
            }
        };
        assert!(full, "the accept queue did not fill");

        let client = ReqwestHttpClient::new(&tls());
        let connector = client.connector(&settings(Duration::from_millis(300), None));
        let started = Instant::now();
        let error = tokio::time::timeout(Duration::from_secs(5), connector.call(get(address.port())))
            .await
            .expect("the connect timeout ends the call")
            .expect_err("no connection is made");
        assert!(error.is_timeout(), "{error:?}");
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    }
}
