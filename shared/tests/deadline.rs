//! The invocation's deadline. Lambda stops a function at its deadline, and API Gateway answers a
//! bare 503 for it; so every remote call is cut to the time left, and a slow WeChat or an
//! unreachable store gives the documented JSON answer (504 / 503) with the request id instead.
//! These tests give a request a short deadline and an upstream that would answer (successfully)
//! only long after it: the answer they get can only come from the budgets.

use std::time::Duration;

use serde_json::json;
use testkit::{Moto, Stack, authed_event, in_invocation, read};
use wxa_shared::handlers::{decrypt_phone, session};

#[tokio::test]
async fn a_wechat_slower_than_the_deadline_is_a_504_json_answer() {
    // WeChat's own timeout is long; the deadline is what cuts the call.
    let stack = Stack::start_with(|c| c.wechat_timeout = Duration::from_secs(30)).await;
    let token = stack.log_in("o_alice").await;
    stack
        .sim_post("/__sim/faults", json!({"api": "checksession", "delay_ms": 20_000}))
        .await;
    let request = in_invocation(
        authed_event("session.json", &token, None),
        Duration::from_millis(2500),
        "req-slow-wechat",
    );
    let (status, body) = read(&session::FUNCTION.handle(&stack.state, request).await);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (504, Some("wechat_timeout")),
        "{body}"
    );
    assert_eq!(body["error"]["request_id"], "req-slow-wechat");

    // A phone code: single use, never retried, and the same answer.
    let phone = stack
        .sim_post("/__sim/phone-code", json!({"phoneNumber": "13800138000"}))
        .await;
    stack
        .sim_post(
            "/__sim/faults",
            json!({"api": "getuserphonenumber", "delay_ms": 20_000}),
        )
        .await;
    let request = in_invocation(
        authed_event("decrypt-phone.json", &token, Some(&json!({"code": phone["code"]}))),
        Duration::from_millis(2500),
        "req-slow-phone",
    );
    let (status, body) = read(&decrypt_phone::FUNCTION.handle(&stack.state, request).await);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (504, Some("wechat_timeout")),
        "{body}"
    );
    assert_eq!(stack.sim_calls("getuserphonenumber").await, 1, "not retried");
}

#[tokio::test]
async fn no_call_starts_when_no_time_is_left() {
    let stack = Stack::start().await;
    let token = stack.log_in("o_alice").await;
    stack.aws_calls.take();
    // Less time left than the margin kept for answering.
    let request = in_invocation(
        authed_event("session.json", &token, None),
        wxa_shared::deadline::MARGIN / 2,
        "req-late",
    );
    let (status, body) = read(&session::FUNCTION.handle(&stack.state, request).await);
    assert!(status == 503 || status == 504, "{status} {body}");
    assert_eq!(body["error"]["request_id"], "req-late");
    assert!(stack.aws_calls.take().is_empty(), "nothing was sent");
    assert_eq!(stack.sim_calls("checksession").await, 0);
}

#[tokio::test]
async fn an_unreachable_store_within_a_short_deadline_is_a_503_json_answer() {
    let moto = Moto::start();
    let stack = Stack::start_on(&moto.endpoint, |_| {}).await;
    let token = stack.log_in("o_alice").await;
    moto.freeze();
    let request = in_invocation(
        authed_event("session.json", &token, None),
        Duration::from_millis(2000),
        "req-frozen-store",
    );
    let (status, body) = read(&session::FUNCTION.handle(&stack.state, request).await);
    moto.thaw();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("session_store_unavailable")),
        "{body}"
    );
    assert_eq!(body["error"]["request_id"], "req-frozen-store");
}
