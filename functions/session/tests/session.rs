//! End to end: `GET /session` driven with `events/session.json` after a real login.

use serde_json::{Value, json};
use testkit::{Stack, event, read};
use wxa_shared::handlers::session;

fn session_request(token: &str) -> lambda_http::Request {
    let mut request = event("session.json");
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

async fn check(stack: &Stack, token: &str) -> (u16, Value) {
    read(&session::FUNCTION.handle(&stack.state, session_request(token)).await)
}

#[tokio::test]
async fn a_fresh_session_is_valid_and_the_access_token_is_cached() {
    let stack = Stack::start().await;
    let token = stack.log_in("o_alice").await;
    assert_eq!(
        check(&stack, &token).await,
        (200, json!({"valid": true, "openid": "o_alice"}))
    );
    assert_eq!(check(&stack, &token).await.1["valid"], true);
    assert_eq!(
        stack.sim_calls("stable_token").await,
        1,
        "the access token is fetched once per container"
    );
    assert_eq!(stack.sim_calls("checksession").await, 2);
    assert_eq!(
        stack.sim_calls("token").await,
        0,
        "cgi-bin/token would knock other containers out"
    );
}

#[tokio::test]
async fn a_session_is_invalid_after_the_user_logs_in_elsewhere() {
    let stack = Stack::start().await;
    let token = stack.log_in("o_alice").await;
    // A new wx.login on another device rotates the key WeChat holds.
    stack.mint_code("o_alice").await;
    assert_eq!(
        check(&stack, &token).await,
        (200, json!({"valid": false, "openid": "o_alice"}))
    );
}

#[tokio::test]
async fn a_stale_access_token_is_refreshed_once() {
    let stack = Stack::start().await;
    let token = stack.log_in("o_alice").await;
    assert_eq!(check(&stack, &token).await.1["valid"], true);
    stack.sim_post("/__sim/invalidate-tokens", json!({})).await;
    assert_eq!(check(&stack, &token).await.1["valid"], true);
    assert_eq!(stack.sim_calls("stable_token").await, 2);
    assert_eq!(
        stack.sim_calls("checksession").await,
        3,
        "one rejected with 40001, one retried"
    );
}

#[tokio::test]
async fn a_token_wechat_keeps_rejecting_is_a_bounded_502() {
    let stack = Stack::start().await;
    let token = stack.log_in("o_alice").await;
    stack
        .sim_post(
            "/__sim/faults",
            json!({"api": "checksession", "errcode": 40001, "count": 5}),
        )
        .await;
    let (status, body) = check(&stack, &token).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (502, Some("wechat_token_rejected")),
        "{body}"
    );
    assert_eq!(stack.sim_calls("checksession").await, 2, "one retry, no loop");
}

#[tokio::test]
async fn the_access_token_fetch_retries_a_busy_wechat_a_bounded_number_of_times() {
    let stack = Stack::start().await;
    let token = stack.log_in("o_alice").await;
    stack
        .sim_post(
            "/__sim/faults",
            json!({"api": "stable_token", "errcode": -1, "count": 2}),
        )
        .await;
    assert_eq!(check(&stack, &token).await.1["valid"], true);
    assert_eq!(stack.sim_calls("stable_token").await, 3);

    let stack = Stack::start().await;
    let token = stack.log_in("o_alice").await;
    stack
        .sim_post(
            "/__sim/faults",
            json!({"api": "stable_token", "errcode": -1, "count": 10}),
        )
        .await;
    let (status, body) = check(&stack, &token).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("wechat_busy")),
        "{body}"
    );
    assert_eq!(stack.sim_calls("stable_token").await, 3);
    assert_eq!(stack.sim_calls("checksession").await, 0);
}

#[tokio::test]
async fn unauthenticated_requests_are_401_without_calling_wechat() {
    let stack = Stack::start().await;
    let forged = "A".repeat(43);
    for request in [
        event("session.json"),
        session_request(&forged),
        session_request("short"),
        {
            let mut r = event("session.json");
            r.headers_mut().remove("authorization");
            r
        },
    ] {
        let (status, body) = read(&session::FUNCTION.handle(&stack.state, request).await);
        assert_eq!(status, 401, "{body}");
        assert!(
            matches!(body["error"]["code"].as_str(), Some("missing_token" | "invalid_token")),
            "{body}"
        );
    }
    assert_eq!(
        stack.sim_calls("stable_token").await + stack.sim_calls("checksession").await,
        0
    );
}

#[tokio::test]
async fn an_expired_session_is_refused_before_ttl_deletes_it() {
    let stack = Stack::start_with(|c| c.session_ttl = std::time::Duration::from_secs(60)).await;
    let token = stack.log_in("o_alice").await;
    stack.expire(&token).await;
    let (status, body) = check(&stack, &token).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("invalid_token")),
        "{body}"
    );
}

#[tokio::test]
async fn wrong_method_is_405() {
    let stack = Stack::start().await;
    let mut request = event("session.json");
    *request.method_mut() = lambda_http::http::Method::POST;
    let (status, body) = read(&session::FUNCTION.handle(&stack.state, request).await);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
}

async fn reset(stack: &Stack, token: &str) -> (u16, Value) {
    read(
        &session::FUNCTION
            .handle(&stack.state, testkit::authed_event("session-reset.json", token, None))
            .await,
    )
}

#[tokio::test]
async fn a_reset_makes_a_rotated_session_valid_again_without_returning_the_key() {
    let stack = Stack::start().await;
    let token = stack.log_in("o_alice").await;
    stack.mint_code("o_alice").await; // the user logs in elsewhere: our key is stale
    // (The simulator accepts a reset signed by an earlier key; see README.)
    let (status, body) = reset(&stack, &token).await;
    assert_eq!(
        (status, body.clone()),
        (200, json!({"valid": true, "openid": "o_alice"}))
    );
    let new_key = stack.sim_session_key("o_alice").await;
    assert!(!body.to_string().contains(&new_key), "the key never leaves the server");
    let stored = stack.state.sessions().unwrap().get(&token).await.unwrap().unwrap();
    assert_eq!(stored.session_key.expose(), new_key, "the new key is stored");
    assert_eq!(check(&stack, &token).await.1["valid"], true);
    assert_eq!(stack.sim_calls("resetusersessionkey").await, 1);

    // Data sealed now decrypts with the stored key.
    let (data, iv) = stack.seal("o_alice", json!({"openGId": "G1"})).await;
    let request = testkit::authed_event(
        "share-info.json",
        &token,
        Some(&json!({"encryptedData": data, "iv": iv})),
    );
    let (status, body) = read(
        &wxa_shared::handlers::share_info::FUNCTION
            .handle(&stack.state, request)
            .await,
    );
    assert_eq!((status, body), (200, json!({"openGId": "G1"})));
}

#[tokio::test]
async fn a_reset_wechat_refuses_means_log_in_again() {
    let stack = Stack::start().await;
    let token = stack.log_in("o_alice").await;
    stack
        .sim_post("/__sim/faults", json!({"api": "resetusersessionkey", "errcode": 87009}))
        .await;
    let (status, body) = reset(&stack, &token).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("session_key_expired")),
        "{body}"
    );
    // The stale session is gone: its token no longer works.
    let (status, body) = check(&stack, &token).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("invalid_token")),
        "{body}"
    );
    let token = stack.log_in("o_alice").await;
    stack
        .sim_post("/__sim/faults", json!({"api": "resetusersessionkey", "errcode": 45011}))
        .await;
    let (status, body) = reset(&stack, &token).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("rate_limited")),
        "{body}"
    );
    let (status, _) = reset(&stack, &"z".repeat(43)).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn reset_needs_post_and_check_needs_get() {
    let stack = Stack::start().await;
    let token = stack.log_in("o_alice").await;
    let mut get_reset = testkit::authed_event("session-reset.json", &token, None);
    *get_reset.method_mut() = lambda_http::http::Method::GET;
    let (status, body) = read(&session::FUNCTION.handle(&stack.state, get_reset).await);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
}

#[tokio::test]
async fn a_check_that_finds_the_key_rotated_revokes_the_session() {
    let stack = Stack::start().await;
    let token = stack.log_in("o_alice").await;
    stack.mint_code("o_alice").await; // the user logs in elsewhere: our key is stale
    let (status, body) = check(&stack, &token).await;
    assert_eq!((status, body["valid"].as_bool()), (200, Some(false)), "{body}");
    let (status, body) = check(&stack, &token).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("invalid_token")),
        "{body}"
    );
    assert!(stack.session_items().await.is_empty());
}

#[tokio::test]
async fn logout_deletes_the_callers_session_only() {
    let stack = Stack::start().await;
    let alice = stack.log_in("o_alice").await;
    let bob = stack.log_in("o_bob").await;
    let logout = |token: &str| {
        let request = testkit::authed_event("logout.json", token, None);
        async { session::FUNCTION.handle(&stack.state, request).await }
    };
    let response = logout(&alice).await;
    assert_eq!(response.status(), 204);
    let (status, body) = check(&stack, &alice).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("invalid_token")),
        "{body}"
    );
    let (status, body) = read(&logout(&alice).await);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("invalid_token")),
        "twice: {body}"
    );
    assert_eq!(check(&stack, &bob).await.0, 200, "another session is untouched");
    assert_eq!(stack.session_items().await.len(), 1);
}
