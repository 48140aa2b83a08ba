//! End to end on moto server and the simulator: content security with the caller's openid.

use lambda_http::RequestExt;
use serde_json::json;
use testkit::{Stack, authed_event, read};
use wxa_shared::handlers::content;

fn verdict_request(token: &str, trace_id: &str) -> lambda_http::Request {
    let parameters: std::collections::HashMap<String, String> = [("trace_id".to_owned(), trace_id.to_owned())].into();
    authed_event("content-media-verdict.json", token, None).with_path_parameters(parameters)
}

#[tokio::test]
async fn a_text_is_checked_with_the_callers_openid() {
    let stack = Stack::start().await;
    let token = stack.log_in("o_alice").await;
    let check = |text: &str, scene: u8| {
        let body = json!({"content": text, "scene": scene});
        let request = authed_event("content-check.json", &token, Some(&body));
        async { read(&content::FUNCTION.handle(&stack.state, request).await) }
    };
    let (status, body) = check("一起去喝茶吗？", 2).await;
    assert_eq!((status, body["suggest"].as_str()), (200, Some("pass")), "{body}");
    let (status, body) = check("buy sim-porn here", 2).await;
    assert_eq!(
        (status, body["suggest"].as_str(), body["label"].as_u64()),
        (200, Some("risky"), Some(20002)),
        "{body}"
    );
    assert_eq!(stack.sim_calls("msg_sec_check").await, 2);

    // Refused before WeChat is asked.
    for (text, scene) in [("x".repeat(2501), 2), (String::new(), 2), ("hello".to_owned(), 9)] {
        let (status, body) = check(&text, scene).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_request")),
            "{body}"
        );
    }
    assert_eq!(stack.sim_calls("msg_sec_check").await, 2);
    let (status, body) = check(&"好".repeat(2500), 1).await;
    assert_eq!(status, 200, "2500 characters (7500 bytes) are fine: {body}");
}

#[tokio::test]
async fn a_media_check_is_pending_until_its_verdict_and_only_its_caller_sees_it() {
    let stack = Stack::start().await;
    let alice = stack.log_in("o_alice").await;
    let body = json!({"media_url": "https://cdn.example.com/sim-porn.jpg", "media_type": 2, "scene": 1});
    let request = authed_event("content-check-media.json", &alice, Some(&body));
    let (status, started) = read(&content::FUNCTION.handle(&stack.state, request).await);
    assert_eq!(status, 200, "{started}");
    let trace_id = started["trace_id"].as_str().unwrap().to_owned();

    let (status, body) = read(
        &content::FUNCTION
            .handle(&stack.state, verdict_request(&alice, &trace_id))
            .await,
    );
    assert_eq!((status, body["status"].as_str()), (200, Some("pending")), "{body}");
    let bob = stack.log_in("o_bob").await;
    let (status, body) = read(
        &content::FUNCTION
            .handle(&stack.state, verdict_request(&bob, &trace_id))
            .await,
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("media_check_not_found")),
        "{body}"
    );

    // The verdict as the push receiver records it.
    let messages = stack.state.messages().unwrap();
    messages
        .record_media_verdict(&trace_id, "risky", "20002", wxa_shared::clock::now_unix())
        .await
        .unwrap();
    let (status, body) = read(
        &content::FUNCTION
            .handle(&stack.state, verdict_request(&alice, &trace_id))
            .await,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"trace_id": trace_id, "status": "done", "suggest": "risky", "label": "20002"})
    );
}
