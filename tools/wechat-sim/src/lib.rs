//! A local simulator of the WeChat server APIs a mini-program backend calls, behaving as
//! `../shared/reference/wechat-server-api.md` describes the real ones: errors are HTTP 200 with
//! an `errcode`, login codes live 5 minutes and work once, each new code rotates the user's
//! session_key, `cgi-bin/token` invalidates the previous token while `stable_token` shares one.
//!
//! Admin endpoints under `/__sim/` play the mini-program side (mint codes, encrypt open data)
//! and let tests inject faults, move the clock and count the calls made.

mod admin;
mod api;
pub mod api_security;
pub mod crypto;
mod customer_service;
mod ledger;
mod links;
mod messages;
mod notify;
pub mod pay;
pub mod pay_faults;
pub mod png;
pub mod push;
mod refund;
pub mod security;
mod shipping;
mod state;
mod transfer;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

pub use state::{Fault, SimState};

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub app_id: String,
    pub app_secret: String,
}

pub type Shared = Arc<Mutex<SimState>>;

pub fn router(config: SimConfig) -> Router {
    let state: Shared = Arc::new(Mutex::new(SimState::new(config)));
    Router::new()
        .route("/sns/jscode2session", get(api::jscode2session))
        .route("/cgi-bin/token", get(api::token))
        .route("/cgi-bin/stable_token", post(api::stable_token))
        .route("/wxa/checksession", get(api::checksession))
        .route("/wxa/business/getuserphonenumber", post(api::getuserphonenumber))
        .route("/wxa/resetusersessionkey", get(api::resetusersessionkey))
        .route("/wxa/getwxacodeunlimit", post(api::getwxacodeunlimit))
        .route("/cgi-bin/ticket/getticket", get(api::getticket))
        .route("/__sim/verify-card-ext", post(admin::verify_card_ext))
        .route("/v3/pay/transactions/jsapi", post(pay::jsapi))
        .route("/v3/pay/transactions/out-trade-no/{out_trade_no}", get(pay::query))
        .route("/v3/pay/transactions/id/{transaction_id}", get(pay::query))
        .route(
            "/v3/pay/transactions/out-trade-no/{out_trade_no}/close",
            post(pay::close),
        )
        .route("/v3/refund/domestic/refunds", post(refund::apply))
        .route("/v3/refund/domestic/refunds/{out_refund_no}", get(refund::query))
        .route("/v3/fund-app/mch-transfer/transfer-bills", post(transfer::create))
        .route(
            "/v3/fund-app/mch-transfer/transfer-bills/out-bill-no/{out_bill_no}",
            get(transfer::query_by_out_bill_no),
        )
        .route(
            "/v3/fund-app/mch-transfer/transfer-bills/transfer-bill-no/{transfer_bill_no}",
            get(transfer::query_by_transfer_bill_no),
        )
        .route(
            "/v3/fund-app/mch-transfer/transfer-bills/out-bill-no/{out_bill_no}/cancel",
            post(transfer::cancel),
        )
        .route("/pay/unifiedorder", post(pay::unifiedorder))
        .route(
            "/wxa/sec/order/upload_shipping_info",
            post(shipping::upload_shipping_info),
        )
        .route("/wxa/sec/order/get_order", post(shipping::get_order))
        .route(
            "/wxa/sec/order/notify_confirm_receive",
            post(shipping::notify_confirm_receive),
        )
        .route("/cgi-bin/message/subscribe/send", post(messages::send))
        .route("/cgi-bin/message/custom/send", post(customer_service::send))
        .route("/cgi-bin/message/custom/typing", post(customer_service::typing))
        .route(
            "/cgi-bin/media/upload",
            post(customer_service::upload).layer(DefaultBodyLimit::max(customer_service::UPLOAD_BODY_LIMIT)),
        )
        .route("/wxa/msg_sec_check", post(security::msg_sec_check))
        .route("/wxa/media_check_async", post(security::media_check_async))
        .route("/wxa/getuserriskrank", post(security::getuserriskrank))
        .route("/wxa/generatescheme", post(links::generatescheme))
        .route("/wxa/generate_urllink", post(links::generate_urllink))
        .route("/wxa/genwxashortlink", post(links::genwxashortlink))
        .route("/__sim/push/config", post(push::set_config))
        .route("/__sim/push/send", post(push::send))
        .route("/__sim/push/sent", get(push::sent))
        .route("/__sim/push/verify-url", post(push::verify_url))
        .route("/__sim/subscribe/popup", post(messages::popup))
        .route("/__sim/subscribe/change", post(messages::change))
        .route("/__sim/subscribe/templates", post(messages::add_templates))
        .route("/__sim/customer-service/write", post(customer_service::write))
        .route(
            "/__sim/customer-service/conversation",
            get(customer_service::conversation),
        )
        .route("/__sim/customer-service/media/{media_id}", get(customer_service::media))
        .route("/__sim/media-check/deliver", post(security::deliver_now))
        .route("/__sim/risk", post(security::set_risk))
        .route("/__sim/links", post(links::configure))
        .route("/__sim/pay/merchant", post(pay::set_merchant))
        .route("/__sim/pay/platform", get(pay::platform))
        .route("/__sim/pay/signer", post(pay::set_signer))
        .route("/__sim/pay/complete", post(pay::complete))
        .route("/__sim/pay/refund/settle", post(refund::settle))
        .route("/__sim/pay/transfer/confirm", post(transfer::confirm))
        .route("/__sim/pay/transfer/fail", post(transfer::fail))
        .route("/__sim/pay/ledger", get(ledger::ledger))
        .route("/__sim/pay/notifications", get(notify::held))
        .route("/__sim/pay/notifications/hold", post(notify::hold))
        .route("/__sim/pay/notifications/take", post(notify::take))
        .route("/__sim/shipping/confirm-receive", post(shipping::confirm_receive))
        .route("/__sim/login", post(admin::login))
        .route("/__sim/encrypt", post(admin::encrypt))
        .route("/__sim/phone-code", post(admin::phone_code))
        .route("/__sim/user", get(admin::user))
        .route("/__sim/faults", post(admin::add_fault).delete(admin::clear_faults))
        .route("/__sim/requests", get(admin::requests).delete(admin::clear_requests))
        .route("/__sim/time", post(admin::advance_time))
        .route("/__sim/app", post(admin::set_app_secret))
        .route("/__sim/invalidate-tokens", post(admin::invalidate_tokens))
        .route(
            "/__sim/api-security",
            post(api_security::configure)
                .get(api_security::counts)
                .delete(api_security::turn_off),
        )
        .route("/__sim/api-security/rotate", post(api_security::rotate))
        .route("/__sim/api-security/fault", post(api_security::add_fault))
        .layer(axum::middleware::from_fn_with_state(state.clone(), api_security::layer))
        .layer(axum::middleware::from_fn(pay_faults::aftermath))
        .with_state(state)
}

/// A running simulator; dropping it stops the server.
pub struct SimServer {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    /// Served over HTTPS ([`SimServer::start_tls`]).
    tls: bool,
}

impl SimServer {
    /// Binds `addr` (port 0 picks a free port) and serves on the current tokio runtime.
    pub async fn start(config: SimConfig, addr: SocketAddr) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let app = router(config);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, task, tls: false })
    }

    /// [`SimServer::start`] over HTTPS: serves the same API with the certificate chain and key
    /// given as PEM (the leaf first), as the real hosts do. Its base URL is
    /// `https://localhost:PORT`, so that the leaf is checked for the name `localhost`.
    pub async fn start_tls(
        config: SimConfig,
        addr: SocketAddr,
        cert_chain_pem: &str,
        key_pem: &str,
    ) -> std::io::Result<Self> {
        let acceptor = tls_acceptor(cert_chain_pem, key_pem)?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let app = router(config).layer(axum::Extension(api_security::Scheme("https")));
        let task = tokio::spawn(async move {
            let _ = axum::serve(TlsListener::new(listener, acceptor), app).await;
        });
        Ok(Self { addr, task, tls: true })
    }

    pub fn base_url(&self) -> String {
        if self.tls {
            format!("https://localhost:{}", self.addr.port())
        } else {
            format!("http://{}", self.addr)
        }
    }
}

/// A TLS server configuration (aws-lc-rs, TLS 1.2 and 1.3, HTTP/1.1) from PEM: the chain (leaf
/// first) and its private key.
pub fn tls_acceptor(cert_chain_pem: &str, key_pem: &str) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let invalid = |e: &dyn std::fmt::Display| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string());
    let chain = CertificateDer::pem_slice_iter(cert_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(&e))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| invalid(&e))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(&e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| invalid(&e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Accepts TCP connections and hands axum the ones whose TLS handshake completed. Handshakes run
/// concurrently, so a client that stalls or refuses the certificate holds up no one else.
struct TlsListener {
    accepted: tokio::sync::mpsc::Receiver<(tokio_rustls::server::TlsStream<tokio::net::TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    fn new(listener: tokio::net::TcpListener, acceptor: tokio_rustls::TlsAcceptor) -> Self {
        let local_addr = listener.local_addr().expect("a bound listener has an address");
        let (sender, accepted) = tokio::sync::mpsc::channel(64);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, peer)) = listener.accept().await else {
                    continue;
                };
                // As servers do: without it a TLS flight's later records wait on a delayed ACK (40 ms).
                let _ = tcp.set_nodelay(true);
                let (acceptor, sender) = (acceptor.clone(), sender.clone());
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp));
                    if let Ok(Ok(tls)) = handshake.await {
                        let _ = sender.send((tls, peer)).await;
                    }
                });
            }
        });
        Self {
            accepted,
            local_addr,
            task,
        }
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The accepting task ended (it never does while this listener lives).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
