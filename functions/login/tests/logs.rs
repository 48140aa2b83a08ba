//! Secret hygiene: every log line written during a login and a session check, at DEBUG level
//! for every crate (AWS SDK and HTTP clients included), holds no session_key, app secret or token.

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::json;
use testkit::{APP_SECRET, Stack, event, event_with_body, read};
use wxa_shared::handlers::{login, session};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_secret_reaches_a_log_line() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .json()
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let stack = Stack::start().await;
    let code = stack.mint_code("o_alice").await;
    let response = login::handle(
        &stack.state,
        event_with_body("login.json", &json!({"code": code}).to_string()),
    )
    .await;
    let (status, body) = read(&response);
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    let mut check = event("session.json");
    check
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    assert_eq!(read(&session::handle(&stack.state, check).await).0, 200);
    // A failed login logs too.
    read(
        &login::handle(
            &stack.state,
            event_with_body("login.json", &json!({"code": code}).to_string()),
        )
        .await,
    );

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("login ok"), "the capture works: {logs}");
    let session_key = stack.sim_session_key("o_alice").await;
    for (name, secret) in [
        ("session_key", session_key.as_str()),
        ("app secret", APP_SECRET),
        ("login token", &token),
    ] {
        assert!(!logs.contains(secret), "the {name} appears in the logs");
    }
    assert!(!logs.contains(&code), "the single-use login code appears in the logs");
}
