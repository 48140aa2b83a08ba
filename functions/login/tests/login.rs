//! End to end: the `login` handler driven with `events/login.json`, against the WeChat
//! simulator and DynamoDB / Secrets Manager on moto server.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use testkit::{APP_SECRET, Stack, event, event_with_body, read};
use wxa_shared::handlers::login;

fn login_body(code: &str) -> String {
    json!({ "code": code }).to_string()
}

async fn login_with(stack: &Stack, code: &str) -> (u16, Value) {
    read(
        &login::FUNCTION
            .handle(&stack.state, event_with_body("login.json", &login_body(code)))
            .await,
    )
}

#[tokio::test]
async fn login_issues_a_token_and_stores_only_its_hash() {
    let stack = Stack::start().await;
    let code = stack.mint_code("o_alice").await;
    let (status, body) = login_with(&stack, &code).await;
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().unwrap();
    assert_eq!(token.len(), 43, "256 random bits, base64url");
    assert_eq!(body["openid"], "o_alice");
    let expires_in = body["expires_in"].as_u64().unwrap();
    assert!((604_790..=604_800).contains(&expires_in), "{expires_in}");
    assert!(body.get("session_key").is_none() && !body.to_string().contains(&stack.sim_session_key("o_alice").await));

    let items = stack.session_items().await;
    assert_eq!(items.len(), 1);
    let item = &items[0];
    assert_eq!(
        item["token_hash"].as_s().unwrap(),
        &hex::encode(Sha256::digest(token.as_bytes()))
    );
    assert!(
        item.values()
            .all(|v| v.as_s().map(|s| !s.contains(token)).unwrap_or(true)),
        "plaintext token stored"
    );
    assert_eq!(item["openid"].as_s().unwrap(), "o_alice");
    assert_eq!(
        item["session_key"].as_s().unwrap(),
        &stack.sim_session_key("o_alice").await
    );
    let created: u64 = item["created_at"].as_n().unwrap().parse().unwrap();
    let expires: u64 = item["expires_at"].as_n().unwrap().parse().unwrap();
    assert_eq!(expires - created, 604_800);
    assert!(!item.contains_key("unionid"));

    // The table's TTL attribute is the item's expiry.
    let ttl = stack
        .dynamodb()
        .describe_time_to_live()
        .table_name(&stack.table)
        .send()
        .await
        .unwrap();
    assert_eq!(
        ttl.time_to_live_description.unwrap().attribute_name(),
        Some("expires_at")
    );

    // The token authenticates.
    let session = stack
        .state
        .sessions()
        .unwrap()
        .get(token)
        .await
        .unwrap()
        .expect("session found");
    assert_eq!(session.openid, "o_alice");
}

#[tokio::test]
async fn the_unchanged_event_file_reaches_wechat_and_gets_invalid_code() {
    let stack = Stack::start().await;
    let (status, body) = read(&login::FUNCTION.handle(&stack.state, event("login.json")).await);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_login_code")),
        "{body}"
    );
    assert_eq!(stack.sim_calls("jscode2session").await, 1);
}

/// Behind a custom domain with a base path (`https://api.example.com/v1/login`) API Gateway keeps
/// the base path in `rawPath`; the function routes by the route key and answers the same.
#[tokio::test]
async fn a_base_path_before_the_route_changes_nothing() {
    let stack = Stack::start().await;
    let code = stack.mint_code("o_base_path").await;
    let mut request = event_with_body("login.json", &login_body(&code));
    *request.uri_mut() = "https://api.example.com/v1/login".parse().unwrap();
    let (status, body) = read(&login::FUNCTION.handle(&stack.state, request).await);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["openid"], "o_base_path");
}

#[tokio::test]
async fn unionid_is_returned_and_stored_when_wechat_sends_it() {
    let stack = Stack::start().await;
    let minted = stack
        .sim_post("/__sim/login", json!({"openid": "o_bob", "unionid": "u_bob"}))
        .await;
    let (status, body) = login_with(&stack, minted["code"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["unionid"], "u_bob");
    assert_eq!(stack.session_items().await[0]["unionid"].as_s().unwrap(), "u_bob");
}

#[tokio::test]
async fn a_reused_code_is_refused_and_never_retried() {
    let stack = Stack::start().await;
    let code = stack.mint_code("o_alice").await;
    assert_eq!(login_with(&stack, &code).await.0, 200);
    let (status, body) = login_with(&stack, &code).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_login_code");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("wx.login"),
        "{body}"
    );
    assert_eq!(
        stack.sim_calls("jscode2session").await,
        2,
        "one call per login, no retry"
    );
    assert_eq!(stack.session_items().await.len(), 1);
}

#[tokio::test]
async fn an_expired_or_unknown_code_is_refused() {
    let stack = Stack::start().await;
    let code = stack.mint_code("o_alice").await;
    stack.sim_post("/__sim/time", json!({"advance_secs": 301})).await;
    let (status, body) = login_with(&stack, &code).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_login_code")),
        "{body}"
    );
    let (status, body) = login_with(&stack, "0000000000000000000000000000dead").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_login_code")),
        "{body}"
    );
    assert!(stack.session_items().await.is_empty());
}

#[tokio::test]
async fn a_second_login_rotates_the_session_key() {
    let stack = Stack::start().await;
    let first = login_with(&stack, &stack.mint_code("o_alice").await).await.1;
    let first_key = stack.sim_session_key("o_alice").await;
    let second = login_with(&stack, &stack.mint_code("o_alice").await).await.1;
    let second_key = stack.sim_session_key("o_alice").await;
    assert_ne!(first_key, second_key);
    assert_ne!(first["token"], second["token"]);
    let stored_first = stack
        .state
        .sessions()
        .unwrap()
        .get(first["token"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    let stored_second = stack
        .state
        .sessions()
        .unwrap()
        .get(second["token"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored_first.session_key.expose(), first_key);
    assert_eq!(stored_second.session_key.expose(), second_key);
}

/// Injects one fault into jscode2session and checks the answer and that nothing retried.
async fn with_fault(fault: Value, expected_status: u16, expected_code: &str) {
    let stack = Stack::start_with(|c| c.wechat_timeout = std::time::Duration::from_millis(400)).await;
    let code = stack.mint_code("o_alice").await;
    let mut fault = fault;
    fault["api"] = json!("jscode2session");
    stack.sim_post("/__sim/faults", fault.clone()).await;
    let (status, body) = login_with(&stack, &code).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (expected_status, Some(expected_code)),
        "{fault}: {body}"
    );
    assert_eq!(
        stack.sim_calls("jscode2session").await,
        1,
        "{fault}: jscode2session must not be retried"
    );
    assert!(stack.session_items().await.is_empty());
}

#[tokio::test]
async fn rate_limit_is_429() {
    with_fault(json!({"errcode": 45011}), 429, "rate_limited").await;
}

#[tokio::test]
async fn wechat_busy_is_503() {
    with_fault(json!({"errcode": -1}), 503, "wechat_busy").await;
}

#[tokio::test]
async fn a_blocked_user_is_403() {
    with_fault(json!({"errcode": 40226}), 403, "login_blocked").await;
}

#[tokio::test]
async fn a_wechat_gateway_error_is_502() {
    with_fault(json!({"http_status": 502}), 502, "wechat_unavailable").await;
}

#[tokio::test]
async fn a_hung_wechat_is_504_within_the_timeout() {
    with_fault(json!({"delay_ms": 3000}), 504, "wechat_timeout").await;
}

#[tokio::test]
async fn unreachable_wechat_is_502() {
    let closed = testkit::free_port();
    let stack = Stack::start_with(|c| c.wechat_api_base = format!("http://127.0.0.1:{closed}")).await;
    let (status, body) = login_with(&stack, "0c3Hk1000FCqkV1Znp200f6Cg02Hk10T").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (502, Some("wechat_unavailable")),
        "{body}"
    );
}

#[tokio::test]
async fn a_wrong_app_secret_is_502_for_the_operator_without_the_secret() {
    let stack = Stack::start().await;
    stack
        .secretsmanager()
        .put_secret_value()
        .secret_id(&stack.secret_id)
        .secret_string(json!({"app_secret": "not-the-real-secret"}).to_string())
        .send()
        .await
        .unwrap();
    let code = stack.mint_code("o_alice").await;
    let (status, body) = login_with(&stack, &code).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (502, Some("wechat_credentials_rejected")),
        "{body}"
    );
    assert!(
        body["error"]["message"].as_str().unwrap().contains("operator"),
        "{body}"
    );
    assert!(!body.to_string().contains("not-the-real-secret") && !body.to_string().contains(APP_SECRET));
    assert_eq!(
        stack.sim_calls("jscode2session").await,
        1,
        "the re-read secret is unchanged: no second call"
    );
}

#[tokio::test]
async fn a_rotated_app_secret_is_picked_up_without_failing_the_login() {
    let stack = Stack::start().await;
    // Warm the cache with the current secret.
    assert_eq!(login_with(&stack, &stack.mint_code("o_alice").await).await.0, 200);
    // The operator resets the secret in WeChat and stores the new one.
    stack.sim_post("/__sim/app", json!({"secret": "rotated-secret"})).await;
    stack
        .secretsmanager()
        .put_secret_value()
        .secret_id(&stack.secret_id)
        .secret_string(json!({"app_secret": "rotated-secret"}).to_string())
        .send()
        .await
        .unwrap();
    let (status, body) = login_with(&stack, &stack.mint_code("o_alice").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        stack.sim_calls("jscode2session").await,
        3,
        "one rejected call with the old secret, one with the new"
    );
}

#[tokio::test]
async fn a_missing_secret_is_a_clear_server_error() {
    let stack = Stack::start_with(|c| c.app_secret_id = Some("wxa/does-not-exist".into())).await;
    let (status, body) = login_with(&stack, &stack.mint_code("o_alice").await).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (500, Some("server_misconfigured")),
        "{body}"
    );
    // The body says who must act and how to find the log line, never which secret.
    assert!(!body.to_string().contains("wxa/does-not-exist"), "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("operator"),
        "{body}"
    );
    assert!(body["error"]["request_id"].is_string(), "{body}");
    assert_eq!(stack.sim_calls("jscode2session").await, 0);
}

#[tokio::test]
async fn bad_requests_get_4xx_json_and_never_reach_wechat() {
    let stack = Stack::start().await;
    let huge = format!(
        r#"{{"code":"{}"}}"#,
        "a".repeat(wxa_shared::api::request::MAX_BODY_BYTES)
    );
    let cases: Vec<(lambda_http::Request, u16, &str)> = vec![
        (event_with_body("login.json", ""), 400, "missing_body"),
        (event_with_body("login.json", "code=abc"), 400, "invalid_json"),
        (event_with_body("login.json", "{}"), 400, "invalid_json"),
        (event_with_body("login.json", r#"{"code": 42}"#), 400, "invalid_json"),
        (
            event_with_body("login.json", r#"{"code": "abc", "extra": 1}"#),
            400,
            "invalid_json",
        ),
        (event_with_body("login.json", r#"{"code": ""}"#), 400, "invalid_request"),
        (
            event_with_body("login.json", r#"{"code": "has space"}"#),
            400,
            "invalid_request",
        ),
        (event_with_body("login.json", &huge), 413, "body_too_large"),
        (
            {
                let mut r = event("login.json");
                r.headers_mut().insert("content-type", "text/plain".parse().unwrap());
                r
            },
            415,
            "unsupported_media_type",
        ),
        (
            {
                let mut r = event("login.json");
                *r.method_mut() = lambda_http::http::Method::GET;
                r
            },
            405,
            "method_not_allowed",
        ),
    ];
    for (request, expected_status, expected_code) in cases {
        let (status, body) = read(&login::FUNCTION.handle(&stack.state, request).await);
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (expected_status, Some(expected_code)),
            "{body}"
        );
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert_eq!(stack.sim_calls("jscode2session").await, 0);
}
