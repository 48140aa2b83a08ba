//! End to end: `POST /qrcode` → a PNG from the simulator's getwxacodeunlimit, cached per request.

use lambda_http::{Body, Response};
use serde_json::{Value, json};
use testkit::{Stack, authed_event, read};
use wxa_shared::handlers::qrcode;

async fn ask(stack: &Stack, token: &str, body: Option<Value>) -> Response<Body> {
    qrcode::FUNCTION
        .handle(&stack.state, authed_event("qrcode.json", token, body.as_ref()))
        .await
}

fn png_texts(response: &Response<Body>) -> Vec<(String, String)> {
    let Body::Binary(png) = response.body() else {
        panic!("binary body expected: {:?}", response.body())
    };
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    wechat_sim::png::text_chunks(png)
}

fn text<'a>(texts: &'a [(String, String)], key: &str) -> &'a str {
    texts
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_event_gives_a_png_and_repeats_come_from_the_cache() {
    let stack = Stack::start().await;
    let token = stack.log_in("o_alice").await;
    let response = ask(&stack, &token, None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/png");
    assert_eq!(response.headers()["x-cache"], "miss");
    assert_eq!(response.headers()["cache-control"], "private, max-age=600");
    let texts = png_texts(&response);
    assert_eq!(text(&texts, "scene"), "inviter=o_alice");
    assert_eq!(text(&texts, "page"), "pages/index/index");
    assert_eq!(text(&texts, "width"), "430");

    stack.aws_calls.take();
    let again = ask(&stack, &token, None).await;
    assert_eq!(again.headers()["x-cache"], "hit");
    assert_eq!(again.body(), response.body());
    assert_eq!(stack.sim_calls("getwxacodeunlimit").await, 1, "served from memory");
    assert_eq!(
        stack.aws_calls.take(),
        ["DynamoDB.GetItem"],
        "a hit still authenticates, and nothing else"
    );

    // Other parameters are another image; 600.0 is the number 600 (JSON has one kind of number).
    for (width, cache) in [(json!(600), "miss"), (json!(600.0), "hit")] {
        let body = json!({"scene": "inviter=o_alice", "page": "pages/index/index", "width": width});
        let wider = ask(&stack, &token, Some(body)).await;
        assert_eq!(wider.headers()["x-cache"], cache, "width {width}");
        assert_eq!(text(&png_texts(&wider), "width"), "600");
    }
    assert_eq!(stack.sim_calls("getwxacodeunlimit").await, 2);
    assert_eq!(stack.sim_calls("stable_token").await, 1);
}

#[tokio::test]
async fn a_zero_ttl_turns_the_cache_off() {
    let stack = Stack::start_with(|c| c.qrcode_cache_ttl = std::time::Duration::ZERO).await;
    let token = stack.log_in("o_alice").await;
    for _ in 0..2 {
        assert_eq!(ask(&stack, &token, None).await.headers()["x-cache"], "miss");
    }
    assert_eq!(stack.sim_calls("getwxacodeunlimit").await, 2);
}

#[tokio::test]
async fn bad_parameters_never_reach_wechat() {
    let stack = Stack::start().await;
    let token = stack.log_in("o_alice").await;
    for body in [
        json!({"scene": ""}),
        json!({"scene": "a".repeat(33)}),
        json!({"scene": "has space"}),
        json!({"scene": "中文"}),
        json!({"scene": "a=1", "width": 279}),
        json!({"scene": "a=1", "width": 1281}),
        json!({"scene": "a=1", "width": 600.5}),
        json!({"scene": "a=1", "width": null}),
        json!({"scene": "a=1", "is_hyaline": null}),
        json!({"scene": "a=1", "page": "/pages/index/index"}),
        json!({"scene": "a=1", "page": "pages/<x>"}),
        json!({"scene": "a=1", "env_version": "beta"}),
        json!({"scene": "a=1", "color": "red"}),
        json!({"page": "pages/index/index"}),
    ] {
        let (status, got) = read(&ask(&stack, &token, Some(body.clone())).await);
        assert_eq!(status, 400, "{body}: {got}");
        assert!(
            matches!(got["error"]["code"].as_str(), Some("invalid_request" | "invalid_json")),
            "{body}: {got}"
        );
    }
    assert_eq!(stack.sim_calls("getwxacodeunlimit").await, 0);
}

#[tokio::test]
async fn wechat_errors_are_clear() {
    let stack = Stack::start().await;
    let token = stack.log_in("o_alice").await;
    let (status, got) = read(
        &ask(
            &stack,
            &token,
            Some(json!({"scene": "a=1", "page": "pages/unpublished/x"})),
        )
        .await,
    );
    assert_eq!(
        (status, got["error"]["code"].as_str()),
        (400, Some("invalid_page")),
        "{got}"
    );
    let unchecked = ask(
        &stack,
        &token,
        Some(json!({"scene": "a=1", "page": "pages/unpublished/x", "check_path": false})),
    )
    .await;
    assert_eq!(unchecked.status(), 200);

    for (errcode, status, code) in [
        (40169, 400, "invalid_scene"),
        (45009, 429, "quota_exceeded"),
        (-1, 503, "wechat_busy"),
    ] {
        stack
            .sim_post("/__sim/faults", json!({"api": "getwxacodeunlimit", "errcode": errcode}))
            .await;
        let (got_status, got) = read(&ask(&stack, &token, Some(json!({"scene": format!("e={errcode}")}))).await);
        assert_eq!(
            (got_status, got["error"]["code"].as_str()),
            (status, Some(code)),
            "{got}"
        );
    }
}

#[tokio::test]
async fn a_stale_access_token_is_refreshed_once() {
    let stack = Stack::start().await;
    let token = stack.log_in("o_alice").await;
    assert_eq!(ask(&stack, &token, None).await.status(), 200);
    stack.sim_post("/__sim/invalidate-tokens", json!({})).await;
    let response = ask(&stack, &token, Some(json!({"scene": "fresh=1"}))).await;
    assert_eq!(response.status(), 200);
    assert_eq!(stack.sim_calls("stable_token").await, 2);
    assert_eq!(stack.sim_calls("getwxacodeunlimit").await, 3);
}

#[tokio::test]
async fn unauthenticated_requests_are_refused() {
    let stack = Stack::start().await;
    let (status, got) = read(&ask(&stack, &"x".repeat(43), None).await);
    assert_eq!((status, got["error"]["code"].as_str()), (401, Some("invalid_token")));
    assert_eq!(stack.sim_calls("getwxacodeunlimit").await, 0);
}
