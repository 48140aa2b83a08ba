//! The container's TLS configuration and HTTP clients. WeChat, WeChat Pay, DynamoDB and Secrets
//! Manager all go through reqwest on one rustls configuration. Its roots are compiled in by
//! default (Mozilla's set, `webpki-roots`): loading the system store instead parses every
//! certificate of the CA bundle, which was most of a cold start's init. `TLS_ROOTS=system` picks
//! the system store (for a proxy with its own CA, or a root Mozilla dropped).

pub mod aws;
pub mod open_ahead;

use std::sync::Arc;
use std::time::Duration;

/// Where the trusted root certificates come from (`TLS_ROOTS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsRoots {
    /// Mozilla's roots as of the build (`webpki-roots`): no file to read or parse at start-up.
    #[default]
    Bundled,
    /// The system's CA bundle (`SSL_CERT_FILE` / `SSL_CERT_DIR` are honoured), read at start-up.
    System,
}

impl TlsRoots {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "bundled" => Some(Self::Bundled),
            "system" => Some(Self::System),
            _ => None,
        }
    }
}

/// The TLS client configuration: build it once per process and hand clones to every client.
pub fn tls_config(roots: TlsRoots) -> rustls::ClientConfig {
    tls_config_trusting(root_store(roots))
}

/// The TLS client configuration with the given roots. TLS 1.3 (1.2 where a server has no
/// more), and rustls' in-memory session cache, which the clones share: a container's later
/// connection to a host it has met resumes the session (an abbreviated handshake, no certificate
/// chain to check). No 0-RTT early data: a request sent in it can be replayed by the network, and
/// neither WeChat's calls (single-use codes, payments) nor AWS's endpoints allow for that.
pub fn tls_config_trusting(roots: rustls::RootCertStore) -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// The trusted roots; the system's when asked for and found, else the bundled ones.
pub fn root_store(roots: TlsRoots) -> rustls::RootCertStore {
    let mut store = rustls::RootCertStore::empty();
    if roots == TlsRoots::System {
        let native = rustls_native_certs::load_native_certs();
        let (added, _unparsable) = store.add_parsable_certificates(native.certs);
        if added == 0 {
            tracing::warn!(errors = ?native.errors, "TLS_ROOTS=system found no certificate; using the bundled roots");
        }
    }
    if store.is_empty() {
        store.roots = webpki_roots::TLS_SERVER_ROOTS.to_vec();
    }
    store
}

/// `error` and its chain of sources, `: `-separated, for the log: a failed call's own message
/// ("error sending request") says little; the reason is further down (connection refused, or the
/// TLS failure: `invalid peer certificate: UnknownIssuer`). A source whose text its parent already
/// ends with is not repeated.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !line.is_empty() && !text.ends_with(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

/// What every client shares: `tls` (from [`tls_config`]), pooled connections dropped while idle,
/// and connections that init may open ahead of the first request ([`open_ahead`]). HTTP/1.1
/// with keep-alive: every call after the first reuses the pooled connection.
fn client_builder(tls: &rustls::ClientConfig) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls.clone())
        // Below the ~60 s after which NAT gateways and load balancers drop idle connections.
        .pool_idle_timeout(Duration::from_secs(50))
        .connector_layer(open_ahead::OpenAhead::default())
}

/// The HTTP client for WeChat and WeChat Pay, built once per container: every call is bounded by
/// `timeout` (`WECHAT_TIMEOUT_MS`), the connect by at most 2 s.
pub fn wechat_client(tls: &rustls::ClientConfig, timeout: Duration) -> reqwest::Client {
    http_client(tls, timeout.min(Duration::from_secs(2)), Some(timeout))
}

/// An HTTP client on `tls` (from [`tls_config`]). `timeout` bounds a whole call (connect, send,
/// read the answer); `None` leaves that to the caller.
pub fn http_client(
    tls: &rustls::ClientConfig,
    connect_timeout: Duration,
    timeout: Option<Duration>,
) -> reqwest::Client {
    let mut builder = client_builder(tls).connect_timeout(connect_timeout);
    if let Some(timeout) = timeout {
        builder = builder.timeout(timeout);
    }
    builder
        .build()
        .expect("reqwest client builds on a preconfigured rustls config")
}

/// The HTTP client under the AWS SDK, for the connector settings the SDK asks for: its connect
/// and read timeouts (`None`: not bounded here; the SDK times its attempts itself). It sends one
/// request and hands back the answer as it came: no redirect is followed (a 3xx is the SDK's to
/// read; following one would send a signed request to another host) and reqwest retries nothing
/// (the SDK's retry policy and budget are the only ones).
pub fn sdk_client(
    tls: &rustls::ClientConfig,
    connect_timeout: Option<Duration>,
    read_timeout: Option<Duration>,
) -> reqwest::Client {
    let mut builder = client_builder(tls)
        .redirect(reqwest::redirect::Policy::none())
        .retry(reqwest::retry::never());
    if let Some(timeout) = connect_timeout {
        builder = builder.connect_timeout(timeout);
    }
    if let Some(timeout) = read_timeout {
        builder = builder.read_timeout(timeout);
    }
    builder
        .build()
        .expect("reqwest client builds on a preconfigured rustls config")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_include_the_cas_wechat_and_aws_endpoints_chain_to() {
        let names: Vec<String> = webpki_roots::TLS_SERVER_ROOTS
            .iter()
            .map(|anchor| String::from_utf8_lossy(anchor.subject.as_ref()).into_owned())
            .collect();
        // api.weixin.qq.com and api.mch.weixin.qq.com: DigiCert; AWS endpoints: Amazon Trust Services.
        for root in ["DigiCert Global Root G2", "GlobalSign", "Amazon Root CA 1"] {
            assert!(
                names.iter().any(|n| n.contains(root)),
                "{root} is missing from the roots"
            );
        }
        assert_eq!(TlsRoots::parse("system"), Some(TlsRoots::System));
        assert_eq!(TlsRoots::parse("bundled"), Some(TlsRoots::Bundled));
        assert_eq!(TlsRoots::parse("mozilla"), None);
    }

    #[test]
    fn system_roots_are_read_from_the_ca_bundle() {
        // Debian's bundle still has DigiCert Global Root CA, which Mozilla's set no longer has.
        let has_old_digicert = |store: &rustls::RootCertStore| {
            store
                .roots
                .iter()
                .any(|a| String::from_utf8_lossy(a.subject.as_ref()).ends_with("DigiCert Global Root CA"))
        };
        let bundled = root_store(TlsRoots::Bundled);
        assert_eq!(bundled.len(), webpki_roots::TLS_SERVER_ROOTS.len());
        assert!(!has_old_digicert(&bundled));
        assert!(has_old_digicert(&root_store(TlsRoots::System)));
    }

    #[tokio::test]
    async fn a_client_refuses_a_certificate_outside_the_roots() {
        // A TLS server with a self-signed certificate: the handshake must fail, not be skipped.
        let tls = tls_config(TlsRoots::Bundled);
        let err = http_client(&tls, Duration::from_secs(1), Some(Duration::from_secs(5)))
            .get(format!("https://127.0.0.1:{}/", self_signed_server().await))
            .send()
            .await
            .expect_err("a self-signed certificate is not trusted");
        assert!(err.is_connect(), "{err:?}");
        let chain = format!("{:?}", std::error::Error::source(&err));
        assert!(chain.contains("InvalidCertificate"), "{chain}");
        // What the log is given names the reason, which the error's own message does not.
        let logged = error_chain(&err.without_url());
        assert!(logged.contains("invalid peer certificate"), "{logged}");
    }

    /// A TLS server on 127.0.0.1 presenting the simulator's self-signed test certificate.
    async fn self_signed_server() -> u16 {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/wechat-sim/src");
        let cert = CertificateDer::from_pem_file(root.join("platform_cert.pem")).unwrap();
        let key = PrivateKeyDer::from_pem_file(root.join("platform_key.pem")).unwrap();
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![cert], key)
                .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = acceptor.accept(tcp).await;
            }
        });
        port
    }
}
