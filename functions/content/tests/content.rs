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

/// A user who checks content in a loop spends their own budget, not the app's quota: refused
/// with 429 and `Retry-After` before WeChat is asked, whatever number of sessions they open;
/// another user is not affected.
#[tokio::test]
async fn a_user_who_spends_their_budget_is_refused_before_wechat_is_asked() {
    use wxa_shared::store::budgets::Budget;
    let stack = Stack::start_with(|c| {
        c.caller_budget = Some(Budget {
            per_minute: 2,
            burst: 3,
        })
    })
    .await;
    let check = |token: String| {
        let body = json!({"content": "一起去喝茶吗？", "scene": 2});
        let request = authed_event("content-check.json", &token, Some(&body));
        let state = &stack.state;
        async move { content::FUNCTION.handle(state, request).await }
    };
    let alice = stack.log_in("o_alice").await;
    for _ in 0..3 {
        assert_eq!(check(alice.clone()).await.status(), 200);
    }
    let refused = check(alice.clone()).await;
    let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    let (status, body) = read(&refused);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("too_many_requests")),
        "{body}"
    );
    // Three calls at once used the burst; the next is 30 s (one interval at 2 a minute) away.
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    // A new session of the same user is the same user.
    let again = stack.log_in("o_alice").await;
    assert_eq!(check(again).await.status(), 429);
    // A media check spends the same budget.
    let body = json!({"media_url": "https://cdn.example.com/a.jpg", "media_type": 2, "scene": 1});
    let request = authed_event("content-check-media.json", &alice, Some(&body));
    assert_eq!(content::FUNCTION.handle(&stack.state, request).await.status(), 429);
    assert_eq!(
        stack.sim_calls("msg_sec_check").await,
        3,
        "refused calls never reach WeChat"
    );
    assert_eq!(stack.sim_calls("media_check_async").await, 0);

    let bob = stack.log_in("o_bob").await;
    assert_eq!(check(bob).await.status(), 200, "another user has a budget of their own");
}

/// The budget refills at its rate and never banks more than its burst (the clock is given, so
/// the test does not wait).
#[tokio::test]
async fn a_budget_refills_at_its_rate_and_holds_no_more_than_its_burst() {
    use wxa_shared::store::budgets::{Budget, BudgetStore, Spent};
    let stack = Stack::start().await;
    let store = BudgetStore::new(stack.dynamodb(), &stack.table);
    let budget = Budget {
        per_minute: 6,
        burst: 2,
    };
    let t0 = 1_800_000_000_000;
    let spend = |at: u64| {
        let store = store.clone();
        async move { store.spend("test", "o_alice", budget, at).await.unwrap() }
    };
    assert_eq!(spend(t0).await, Spent::Allowed);
    assert_eq!(spend(t0).await, Spent::Allowed, "a burst of 2");
    assert_eq!(
        spend(t0).await,
        Spent::RetryAfter(10),
        "one interval (10 s) to the next"
    );
    assert_eq!(spend(t0 + 9_000).await, Spent::RetryAfter(1));
    assert_eq!(spend(t0 + 10_000).await, Spent::Allowed);
    assert_eq!(spend(t0 + 10_000).await, Spent::RetryAfter(10));
    // A long quiet spell gives back the burst, and no more.
    let later = t0 + 3_600_000;
    assert_eq!(spend(later).await, Spent::Allowed);
    assert_eq!(spend(later).await, Spent::Allowed);
    assert!(matches!(spend(later).await, Spent::RetryAfter(_)));
    // Others, and other routes, are untouched.
    assert_eq!(
        store.spend("test", "o_bob", budget, later).await.unwrap(),
        Spent::Allowed
    );
    assert_eq!(
        store.spend("other", "o_alice", budget, later).await.unwrap(),
        Spent::Allowed
    );
}

/// WeChat fetches a media URL on our behalf: only from the hosts the operator lists.
#[tokio::test]
async fn media_on_a_host_not_listed_is_refused_before_wechat_is_asked() {
    let stack = Stack::start().await;
    let alice = stack.log_in("o_alice").await;
    for url in [
        "https://evil.example.org/a.jpg",
        "http://169.254.169.254/latest/meta-data",
        "https://cdn.example.com.evil.org/a.jpg",
        "https://cdn.example.com@evil.example.org/a.jpg",
    ] {
        let body = json!({"media_url": url, "media_type": 2, "scene": 1});
        let request = authed_event("content-check-media.json", &alice, Some(&body));
        let (status, answer) = read(&content::FUNCTION.handle(&stack.state, request).await);
        assert_eq!(status, 400, "{url}: {answer}");
        assert!(
            matches!(
                answer["error"]["code"].as_str(),
                Some("media_host_not_allowed" | "invalid_request")
            ),
            "{url}: {answer}"
        );
    }
    assert_eq!(stack.sim_calls("media_check_async").await, 0);
}
