//! TLS end to end, locally: the path production takes (rustls on aws-lc-rs, SNI, the AWS SDK
//! over our reqwest connector, `TLS_ROOTS=system`) carries a whole journey, and a bad
//! certificate — for another host name, expired, or from a CA nobody trusts — is refused with a
//! clear 502/503 and a log line naming the TLS failure, never the app secret.
//!
//! The CA is made when the tests run (`testkit::tls`) and is the only certificate of the bundle
//! `SSL_CERT_FILE` names, which `TLS_ROOTS=system` reads. The variable is set for the whole
//! process, so these tests are one binary of their own.

use std::sync::OnceLock;

use serde_json::{Value, json};
use testkit::logs::LogCapture;
use testkit::tls::{Leaf, TestPki, TlsProxy, plain_addr};
use testkit::{APP_SECRET, Stack, authed_event, event_with_body, moto, read};
use wxa_shared::handlers::*;
use wxa_shared::net::TlsRoots;

/// The test PKI, its CA written to a bundle that `SSL_CERT_FILE` points at before any TLS
/// configuration of this process is built (every test starts here).
fn pki() -> &'static TestPki {
    static PKI: OnceLock<TestPki> = OnceLock::new();
    PKI.get_or_init(|| {
        let pki = TestPki::new();
        let bundle =
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("wxa-test-ca-{}.pem", std::process::id()));
        std::fs::write(&bundle, pki.ca.pem()).expect("the CA bundle is written");
        // SAFETY: set once, under the OnceLock, by the first test to get here, before anything of
        // this process reads the TLS roots; the other tests wait on the OnceLock meanwhile, and
        // nothing else of the process reads or writes the environment concurrently.
        unsafe {
            std::env::set_var("SSL_CERT_FILE", &bundle);
            std::env::remove_var("SSL_CERT_DIR");
        }
        pki
    })
}

/// moto server behind a TLS proxy serving `leaf`.
async fn moto_over_tls(leaf: &Leaf) -> TlsProxy {
    TlsProxy::start(plain_addr(&moto().endpoint), leaf).await
}

/// The one `request failed` line with `code`, which must name the TLS failure `reason`;
/// and no line holds the app secret.
fn tls_failure_line(capture: &LogCapture, code: &str, reason: &str) -> String {
    let lines = capture.lines();
    assert!(
        lines.iter().all(|line| !line.contains(APP_SECRET)),
        "the app secret reached the log"
    );
    let failed: Vec<&String> = lines
        .iter()
        .filter(|line| line.contains("request failed") && line.contains(&format!("\"code\":\"{code}\"")))
        .collect();
    assert_eq!(
        failed.len(),
        1,
        "one `request failed` line for {code}:\n{}",
        lines.join("\n")
    );
    let line = failed[0];
    assert!(
        line.contains("certificate") && line.contains(reason),
        "the log line names the TLS failure ({reason}): {line}"
    );
    line.clone()
}

#[test]
fn the_system_roots_are_the_test_bundle() {
    let pki = pki();
    let store = wxa_shared::net::root_store(TlsRoots::System);
    assert_eq!(store.len(), 1, "only the test CA is trusted");
    let name = String::from_utf8_lossy(store.roots[0].subject.as_ref()).into_owned();
    assert!(name.ends_with("wxa test CA"), "{name}");
    assert!(pki.ca.pem().starts_with("-----BEGIN CERTIFICATE-----"));
}

#[tokio::test]
async fn the_journey_runs_over_tls() {
    let pki = pki();
    let aws = moto_over_tls(&pki.localhost).await;
    let stack = Stack::start_tls(&aws.endpoint(), &pki.localhost).await;
    assert_eq!(stack.state.config.tls_roots, TlsRoots::System);
    assert!(
        stack.sim.base_url().starts_with("https://localhost:"),
        "{}",
        stack.sim.base_url()
    );
    assert!(aws.endpoint().starts_with("https://localhost:"));

    // The pay secret is written and the merchant registered over TLS too.
    stack.enable_pay().await;
    let code = stack.mint_code("o_alice").await;
    let (status, body) = read(
        &login::FUNCTION
            .handle(
                &stack.state,
                event_with_body("login.json", &json!({"code": code}).to_string()),
            )
            .await,
    );
    assert_eq!(status, 200, "login: {body}");
    let token = body["token"].as_str().expect("a login token").to_owned();

    // checksession, with the access token through the tokens table.
    let (status, body) = read(
        &session::FUNCTION
            .handle(&stack.state, authed_event("session.json", &token, None))
            .await,
    );
    assert_eq!(status, 200, "session: {body}");

    let phone = stack
        .sim_post("/__sim/phone-code", json!({"phoneNumber": "13800138000"}))
        .await;
    let (status, body) = read(
        &decrypt_phone::FUNCTION
            .handle(
                &stack.state,
                authed_event("decrypt-phone.json", &token, Some(&json!({"code": phone["code"]}))),
            )
            .await,
    );
    assert_eq!(status, 200, "phone: {body}");
    assert_eq!(body["phoneNumber"], "13800138000", "{body}");

    let (data, iv) = stack
        .seal(
            "o_alice",
            json!({"stepInfoList": [{"timestamp": 1_795_536_000u64, "step": 42}]}),
        )
        .await;
    let steps = json!({"encryptedData": data, "iv": iv});
    let (status, body) = read(
        &werun::FUNCTION
            .handle(&stack.state, authed_event("werun.json", &token, Some(&steps)))
            .await,
    );
    assert_eq!(status, 200, "werun: {body}");

    let (status, body) = read(
        &card_sign::FUNCTION
            .handle(&stack.state, authed_event("card-sign.json", &token, None))
            .await,
    );
    assert_eq!(status, 200, "card: {body}");

    stack.put_order("T20261125000001", "o_alice", 1).await;
    let (status, params) = read(
        &pay_sign::FUNCTION
            .handle(&stack.state, authed_event("pay-sign.json", &token, None))
            .await,
    );
    assert_eq!(status, 200, "pay-sign: {params}");
    assert!(
        params["package"].as_str().is_some_and(|p| p.starts_with("prepay_id=")),
        "{params}"
    );

    // WeChat and WeChat Pay were reached over HTTPS (the simulator serves nothing else) ...
    let url = format!("{}/__sim/requests", stack.sim.base_url());
    let log: Value = stack.http.get(url).send().await.unwrap().json().await.unwrap();
    let counts = &log["counts"];
    for api in [
        "jscode2session",
        "stable_token",
        "checksession",
        "getuserphonenumber",
        "getticket",
        "pay_jsapi",
    ] {
        assert!(counts[api].as_u64().unwrap_or(0) >= 1, "no {api} call: {counts}");
    }
    // ... and DynamoDB and Secrets Manager through the TLS proxy: the state's clients know no
    // other endpoint.
    assert!(aws.handshakes() >= 1);
    let made = stack.aws_calls.take();
    for operation in [
        "Secrets Manager.GetSecretValue",
        "DynamoDB.PutItem",
        "DynamoDB.GetItem",
        "DynamoDB.UpdateItem",
    ] {
        assert!(made.iter().any(|op| op == operation), "no {operation}: {made:?}");
        assert!(stack.aws_calls.succeeded(operation) >= 1, "{operation} failed");
    }
}

/// The simulator serves `leaf`: a login is answered `502 wechat_unavailable`, and the log line
/// names the TLS failure `reason`.
async fn wechat_refused(leaf: &Leaf, reason: &str) -> String {
    let pki = pki();
    let capture = LogCapture::default();
    let _guard = capture.install();
    let aws = moto_over_tls(&pki.localhost).await;
    let stack = Stack::start_tls(&aws.endpoint(), leaf).await;
    // The simulator's admin endpoints are as unreachable as its API: any code does.
    let request = event_with_body(
        "login.json",
        &json!({"code": "0a3Bc9xYz81kQmN2pL7tR4sV6wU0dE5f"}).to_string(),
    );
    let (status, body) = read(&login::FUNCTION.handle(&stack.state, request).await);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (502, Some("wechat_unavailable")),
        "{body}"
    );
    // The answer says nothing of certificates; the log does.
    assert!(!body.to_string().contains("certificate"), "{body}");
    assert!(body["error"]["request_id"].is_string(), "{body}");
    // The app secret was read (over TLS) before WeChat was tried.
    assert!(stack.aws_calls.succeeded("Secrets Manager.GetSecretValue") >= 1);
    tls_failure_line(&capture, "wechat_unavailable", reason)
}

#[tokio::test]
async fn wechat_with_a_certificate_for_another_host_is_refused() {
    let line = wechat_refused(&pki().wrong_name, "not valid for name \\\"localhost\\\"").await;
    println!("{line}");
}

#[tokio::test]
async fn wechat_with_an_expired_certificate_is_refused() {
    let line = wechat_refused(&pki().expired, "certificate expired").await;
    println!("{line}");
}

#[tokio::test]
async fn wechat_with_a_certificate_from_an_untrusted_ca_is_refused() {
    let line = wechat_refused(&pki().untrusted, "UnknownIssuer").await;
    println!("{line}");
}

#[tokio::test]
async fn aws_with_a_certificate_from_an_untrusted_ca_is_refused() {
    let pki = pki();
    let capture = LogCapture::default();
    let _guard = capture.install();
    let aws = moto_over_tls(&pki.untrusted).await;
    let stack = Stack::start_tls(&aws.endpoint(), &pki.localhost).await;

    // A session check: the sessions table cannot be read.
    let token = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_AbCdE";
    let (status, body) = read(
        &session::FUNCTION
            .handle(&stack.state, authed_event("session.json", token, None))
            .await,
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("session_store_unavailable")),
        "{body}"
    );
    assert!(!body.to_string().contains("certificate"), "{body}");
    let line = tls_failure_line(&capture, "session_store_unavailable", "UnknownIssuer");
    println!("{line}");

    // A login: the app secret cannot be read.
    let request = event_with_body(
        "login.json",
        &json!({"code": "0a3Bc9xYz81kQmN2pL7tR4sV6wU0dE5f"}).to_string(),
    );
    let (status, body) = read(&login::FUNCTION.handle(&stack.state, request).await);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("secrets_unavailable")),
        "{body}"
    );
    let line = tls_failure_line(&capture, "secrets_unavailable", "UnknownIssuer");
    println!("{line}");

    // Nothing got through the proxy, and WeChat was never asked.
    assert_eq!(aws.handshakes(), 0);
    assert_eq!(stack.sim_calls("jscode2session").await, 0);
}
