//! Faults of the AWS side, on a private moto server that the test freezes (SIGSTOP: connections
//! hang, as with an unreachable endpoint) and thaws: bounded waits, clear 503s, no failure cached,
//! no state lost. And 50 concurrent logins of one user.

use std::time::{Duration, Instant};

use serde_json::json;
use testkit::{Moto, Stack, authed_event, event_with_body, read};
use wxa_shared::handlers::{login, session};

async fn login_status(stack: &Stack, openid: &str) -> (u16, serde_json::Value) {
    let code = stack.mint_code(openid).await;
    read(
        &login::FUNCTION
            .handle(
                &stack.state,
                event_with_body("login.json", &json!({"code": code}).to_string()),
            )
            .await,
    )
}

#[tokio::test]
async fn an_unreachable_dynamodb_is_a_bounded_503_and_nothing_is_lost() {
    let moto = Moto::start();
    let stack = Stack::start_on(&moto.endpoint, |_| {}).await;
    let token = stack.log_in("o_alice").await;

    moto.freeze();
    let started = Instant::now();
    let check = read(
        &session::FUNCTION
            .handle(&stack.state, authed_event("session.json", &token, None))
            .await,
    );
    let waited = started.elapsed();
    let (status, body) = login_status(&stack, "o_bob").await;
    moto.thaw();
    assert_eq!(
        (check.0, check.1["error"]["code"].as_str()),
        (503, Some("session_store_unavailable")),
        "{}",
        check.1
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("session_store_unavailable")),
        "{body}"
    );
    // Bounded by the SDK's operation timeout (5 s), whatever the endpoint does.
    assert!(waited < Duration::from_secs(8), "waited {waited:?}");

    // Back: the earlier session is intact, and new logins work.
    let (status, body) = read(
        &session::FUNCTION
            .handle(&stack.state, authed_event("session.json", &token, None))
            .await,
    );
    assert_eq!((status, body["valid"].as_bool()), (200, Some(true)), "{body}");
    assert_eq!(login_status(&stack, "o_bob").await.0, 200);
}

#[tokio::test]
async fn secrets_manager_down_at_cold_start_is_not_cached() {
    let moto = Moto::start();
    let stack = Stack::start_on(&moto.endpoint, |_| {}).await;
    // A cold container: nothing cached yet, and Secrets Manager does not answer.
    moto.freeze();
    let (status, body) = login_status(&stack, "o_alice").await;
    moto.thaw();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("secrets_unavailable")),
        "{body}"
    );
    assert_eq!(stack.sim_calls("jscode2session").await, 0, "no code was spent");
    // The next invocation of the same container recovers.
    assert_eq!(login_status(&stack, "o_alice").await.0, 200);
}

#[tokio::test]
async fn fifty_concurrent_logins_of_one_user_each_get_a_session_with_the_current_key() {
    let stack = Stack::start().await;
    let mut codes = Vec::new();
    for _ in 0..50 {
        codes.push(stack.mint_code("o_alice").await);
    }
    let current_key = stack.sim_session_key("o_alice").await;
    let mut set = tokio::task::JoinSet::new();
    let state = stack.state.clone();
    for code in codes.clone() {
        let state = state.clone();
        set.spawn(async move {
            read(
                &login::FUNCTION
                    .handle(
                        &state,
                        event_with_body("login.json", &json!({"code": code}).to_string()),
                    )
                    .await,
            )
        });
    }
    let mut tokens = std::collections::HashSet::new();
    while let Some(result) = set.join_next().await {
        let (status, body) = result.unwrap();
        assert_eq!(status, 200, "{body}");
        tokens.insert(body["token"].as_str().unwrap().to_owned());
    }
    assert_eq!(tokens.len(), 50, "50 distinct tokens");
    let items = stack.session_items().await;
    assert_eq!(items.len(), 50);
    assert!(
        items.iter().all(|i| i["session_key"].as_s().unwrap() == &current_key),
        "every session holds the current key"
    );
    assert_eq!(stack.sim_calls("jscode2session").await, 50, "one exchange per code");
}

#[tokio::test]
async fn dynamodb_throttling_is_retried_then_a_clear_503() {
    let stack = Stack::start().await;
    let token = stack.log_in("o_alice").await;
    // Two throttled attempts: the SDK's third attempt goes through.
    stack.throttle.next(2);
    let check = || async {
        read(
            &session::FUNCTION
                .handle(&stack.state, authed_event("session.json", &token, None))
                .await,
        )
    };
    assert_eq!(check().await.0, 200);
    // Throttled beyond the 3 attempts: 503, and the next request works.
    stack.throttle.next(3);
    let (status, body) = check().await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("session_store_unavailable")),
        "{body}"
    );
    assert_eq!(check().await.0, 200);
}

#[tokio::test]
async fn a_session_write_whose_answer_was_lost_is_not_a_failure() {
    let stack = Stack::start().await;
    // The throttle replaces the answer after moto wrote the item: the SDK retries the conditional
    // put, which now finds the item. It is ours (256 random bits), so the login succeeds.
    stack.throttle.next(1);
    let (status, body) = login_status(&stack, "o_alice").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(stack.session_items().await.len(), 1);
    let token = body["token"].as_str().unwrap();
    assert_eq!(
        read(
            &session::FUNCTION
                .handle(&stack.state, authed_event("session.json", token, None))
                .await
        )
        .0,
        200
    );
}
