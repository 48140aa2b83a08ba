//! End to end: `POST /phone` by button code (getuserphonenumber) and by legacy encrypted data.

use serde_json::{Value, json};
use testkit::{Stack, authed_event, check_open_data_contract, read};
use wxa_shared::handlers::decrypt_phone;

async fn phone_code(stack: &Stack, phone: &str) -> String {
    let minted = stack
        .sim_post("/__sim/phone-code", json!({"openid": "o_alice", "phoneNumber": phone}))
        .await;
    minted["code"].as_str().unwrap().to_owned()
}

async fn ask(stack: &Stack, token: &str, body: Value) -> (u16, Value) {
    read(
        &decrypt_phone::FUNCTION
            .handle(&stack.state, authed_event("decrypt-phone.json", token, Some(&body)))
            .await,
    )
}

#[tokio::test]
async fn the_event_files_code_is_sent_to_wechat_and_refused() {
    let stack = Stack::start().await;
    let token = stack.log_in("o_alice").await;
    let (status, body) = read(
        &decrypt_phone::FUNCTION
            .handle(&stack.state, authed_event("decrypt-phone.json", &token, None))
            .await,
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_phone_code")),
        "{body}"
    );
    assert_eq!(stack.sim_calls("getuserphonenumber").await, 1);
}

#[tokio::test]
async fn a_button_code_gives_the_number_once() {
    let stack = Stack::start().await;
    let token = stack.log_in("o_alice").await;
    let code = phone_code(&stack, "13800138000").await;
    stack.aws_calls.take();
    let expected = json!({"phoneNumber": "13800138000", "purePhoneNumber": "13800138000", "countryCode": "86"});
    assert_eq!(ask(&stack, &token, json!({"code": code})).await, (200, expected));
    // The session read, the caller's budget spent (one conditional update), the secret still
    // cached from login; the fleet's first token: the shared item read (missing), its refresh
    // lease taken, one fetch, the token published.
    assert_eq!(
        stack.aws_calls.take(),
        [
            "DynamoDB.GetItem",
            "DynamoDB.UpdateItem",
            "DynamoDB.GetItem",
            "DynamoDB.UpdateItem",
            "DynamoDB.PutItem"
        ]
    );
    assert_eq!(stack.sim_calls("stable_token").await, 1);
    assert_eq!(stack.sim_calls("getuserphonenumber").await, 1);

    let (status, body) = ask(&stack, &token, json!({"code": code})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_phone_code")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tap the button again")
    );

    // Warm: the session read and the budget spent; the token comes from memory.
    assert_eq!(stack.aws_calls.take(), ["DynamoDB.GetItem", "DynamoDB.UpdateItem"]);

    let foreign = stack
        .sim_post(
            "/__sim/phone-code",
            json!({"phoneNumber": "+1 4155550100", "countryCode": "1"}),
        )
        .await["code"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        ask(&stack, &token, json!({"code": foreign})).await,
        (
            200,
            json!({"phoneNumber": "+1 4155550100", "purePhoneNumber": "4155550100", "countryCode": "1"})
        )
    );
    assert_eq!(stack.sim_calls("stable_token").await, 1, "the access token is reused");
}

#[tokio::test]
async fn an_expired_button_code_is_refused() {
    let stack = Stack::start().await;
    let token = stack.log_in("o_alice").await;
    let code = phone_code(&stack, "13800138000").await;
    stack.sim_post("/__sim/time", json!({"advance_secs": 301})).await;
    let (status, body) = ask(&stack, &token, json!({"code": code})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_phone_code")),
        "{body}"
    );
}

#[tokio::test]
async fn a_stale_access_token_is_refreshed_once() {
    let stack = Stack::start().await;
    let token = stack.log_in("o_alice").await;
    assert_eq!(
        ask(&stack, &token, json!({"code": phone_code(&stack, "13800138000").await}))
            .await
            .0,
        200
    );
    stack.sim_post("/__sim/invalidate-tokens", json!({})).await;
    let code = phone_code(&stack, "13900139000").await;
    let (status, body) = ask(&stack, &token, json!({"code": code})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["purePhoneNumber"], "13900139000");
    assert_eq!(stack.sim_calls("stable_token").await, 2);
    assert_eq!(
        stack.sim_calls("getuserphonenumber").await,
        3,
        "first call, rejected call, retried call"
    );
}

#[tokio::test]
async fn wechat_faults_are_clear_and_not_retried() {
    for (fault, status, code) in [
        (json!({"errcode": -1}), 503, "wechat_busy"),
        (json!({"errcode": 45011}), 429, "rate_limited"),
    ] {
        let stack = Stack::start().await;
        let token = stack.log_in("o_alice").await;
        let mut fault = fault;
        fault["api"] = json!("getuserphonenumber");
        stack.sim_post("/__sim/faults", fault).await;
        let (got_status, body) = ask(&stack, &token, json!({"code": phone_code(&stack, "13800138000").await})).await;
        assert_eq!(
            (got_status, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}"
        );
        assert_eq!(
            stack.sim_calls("getuserphonenumber").await,
            1,
            "a single-use code is not retried"
        );
    }
}

#[tokio::test]
async fn legacy_encrypted_data_decrypts_with_one_dynamodb_read() {
    let stack = Stack::start().await;
    let token = stack.log_in("o_alice").await;
    let phone = json!({"phoneNumber": "13800138000", "purePhoneNumber": "13800138000", "countryCode": "86"});
    let (data, iv) = stack.seal("o_alice", phone.clone()).await;
    stack.aws_calls.take();
    assert_eq!(
        ask(&stack, &token, json!({"encryptedData": data, "iv": iv})).await,
        (200, phone)
    );
    assert_eq!(stack.aws_calls.take(), ["DynamoDB.GetItem"]);
    assert_eq!(
        stack.sim_calls("stable_token").await + stack.sim_calls("getuserphonenumber").await,
        0
    );
}

#[tokio::test]
async fn ambiguous_bodies_are_refused() {
    let stack = Stack::start().await;
    let token = stack.log_in("o_alice").await;
    for body in [
        json!({}),
        json!({"code": "abc", "encryptedData": "x", "iv": "y"}),
        json!({"encryptedData": "x"}),
        json!({"code": ""}),
    ] {
        let (status, got) = ask(&stack, &token, body.clone()).await;
        assert_eq!(
            (status, got["error"]["code"].as_str()),
            (400, Some("invalid_request")),
            "{body}: {got}"
        );
    }
    assert_eq!(stack.sim_calls("getuserphonenumber").await, 0);
}

#[tokio::test]
async fn the_open_data_contract_holds() {
    check_open_data_contract(
        &decrypt_phone::FUNCTION,
        "decrypt-phone.json",
        json!({"phoneNumber": "13800138000", "purePhoneNumber": "13800138000", "countryCode": "86"}),
        |data, iv, _| json!({"encryptedData": data, "iv": iv}),
    )
    .await;
}

/// WeChat bills the app for each phone number by code: a user asking in a loop is refused with
/// 429 and `Retry-After` before WeChat is asked (the code stays unused).
#[tokio::test]
async fn a_user_asking_for_numbers_in_a_loop_is_refused_before_wechat_is_asked() {
    use wxa_shared::store::budgets::Budget;
    let stack = Stack::start_with(|c| {
        c.caller_budget = Some(Budget {
            per_minute: 1,
            burst: 2,
        })
    })
    .await;
    let token = stack.log_in("o_alice").await;
    for _ in 0..2 {
        let code = phone_code(&stack, "13800138000").await;
        assert_eq!(ask(&stack, &token, json!({"code": code})).await.0, 200);
    }
    let code = phone_code(&stack, "13800138000").await;
    let answer = decrypt_phone::FUNCTION
        .handle(
            &stack.state,
            authed_event("decrypt-phone.json", &token, Some(&json!({"code": code}))),
        )
        .await;
    assert!(answer.headers().contains_key("retry-after"));
    let (status, body) = read(&answer);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("too_many_requests")),
        "{body}"
    );
    assert_eq!(stack.sim_calls("getuserphonenumber").await, 2);
    // A malformed code is refused as such, without spending anything.
    let (status, body) = ask(&stack, &token, json!({"code": " "})).await;
    assert_eq!(status, 400, "{body}");
}
