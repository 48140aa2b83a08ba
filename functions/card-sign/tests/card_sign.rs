//! End to end: `POST /card/sign` → a cardExt the simulator (playing wx.addCard) accepts.

use serde_json::{Value, json};
use testkit::{Stack, authed_event, read};
use wxa_shared::handlers::card_sign;

async fn sign(stack: &Stack, token: &str, body: Option<Value>) -> (u16, Value) {
    read(
        &card_sign::FUNCTION
            .handle(&stack.state, authed_event("card-sign.json", token, body.as_ref()))
            .await,
    )
}

async fn add_card(stack: &Stack, card_id: &str, card_ext: &str) -> Value {
    stack
        .sim_post(
            "/__sim/verify-card-ext",
            json!({"card_id": card_id, "cardExt": card_ext}),
        )
        .await
}

#[tokio::test]
async fn the_event_gives_a_card_ext_bound_to_the_caller() {
    let stack = Stack::start().await;
    let token = stack.log_in("o_alice").await;
    let (status, body) = sign(&stack, &token, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["cardId"], "pFS7Fjg8kV1IdDz01r4SQwMkuCKc");
    let ext_text = body["cardExt"].as_str().expect("cardExt is a JSON string");
    let ext: Value = serde_json::from_str(ext_text).unwrap();
    assert_eq!(ext["openid"], "o_alice");
    assert!(ext["timestamp"].as_str().unwrap().parse::<u64>().is_ok());
    assert_eq!(ext["signature"].as_str().unwrap().len(), 40);
    let verdict = add_card(&stack, "pFS7Fjg8kV1IdDz01r4SQwMkuCKc", ext_text).await;
    assert_eq!(verdict["valid"], true, "{verdict}");

    // Tampering with any signed field breaks it.
    let mut forged = ext.clone();
    forged["openid"] = json!("o_mallory");
    assert_eq!(
        add_card(&stack, "pFS7Fjg8kV1IdDz01r4SQwMkuCKc", &forged.to_string()).await["valid"],
        false
    );
    assert_eq!(add_card(&stack, "pOtherCard", ext_text).await["valid"], false);
}

#[tokio::test]
async fn the_ticket_is_cached_and_codes_are_signed() {
    let stack = Stack::start().await;
    let token = stack.log_in("o_alice").await;
    let (_, first) = sign(&stack, &token, Some(json!({"card_id": "pCard1", "code": "123456789"}))).await;
    let (_, second) = sign(&stack, &token, Some(json!({"card_id": "pCard1"}))).await;
    let first_ext: Value = serde_json::from_str(first["cardExt"].as_str().unwrap()).unwrap();
    assert_eq!(first_ext["code"], "123456789");
    assert!(first_ext.get("openid").is_none(), "not bound unless asked");
    assert_ne!(
        first_ext["nonce_str"],
        serde_json::from_str::<Value>(second["cardExt"].as_str().unwrap()).unwrap()["nonce_str"]
    );
    for body in [&first, &second] {
        assert_eq!(
            add_card(&stack, "pCard1", body["cardExt"].as_str().unwrap()).await["valid"],
            true
        );
    }
    assert_eq!(stack.sim_calls("getticket").await, 1, "the api_ticket is fetched once");
    assert_eq!(stack.sim_calls("stable_token").await, 1);
}

#[tokio::test]
async fn a_stale_access_token_is_refreshed_once_for_the_ticket() {
    let stack = Stack::start().await;
    let token = stack.log_in("o_alice").await;
    stack.state.wechat().unwrap().tokens().unwrap().get().await.unwrap();
    stack.sim_post("/__sim/invalidate-tokens", json!({})).await;
    let (status, body) = sign(&stack, &token, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        stack.sim_calls("getticket").await,
        2,
        "rejected with 40001, then retried"
    );
    assert_eq!(stack.sim_calls("stable_token").await, 2);
}

#[tokio::test]
async fn bad_requests_are_refused_before_wechat() {
    let stack = Stack::start().await;
    let token = stack.log_in("o_alice").await;
    for body in [
        json!({}),
        json!({"card_id": ""}),
        json!({"card_id": "p card"}),
        json!({"card_id": "p".repeat(65)}),
        json!({"card_id": "pCard", "code": "12 34"}),
        json!({"card_id": "pCard", "code": " 1234"}),
        json!({"card_id": "pCard", "code": null}),
        json!({"card_id": "pCard", "bind_openid": "yes"}),
        json!({"card_id": "pCard", "openid": "o_other"}),
    ] {
        let (status, got) = sign(&stack, &token, Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {got}");
    }
    assert_eq!(stack.sim_calls("getticket").await, 0);
    let (status, _) = sign(&stack, &"y".repeat(43), None).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn wechat_faults_on_the_ticket_are_clear() {
    let stack = Stack::start().await;
    let token = stack.log_in("o_alice").await;
    stack
        .sim_post("/__sim/faults", json!({"api": "getticket", "errcode": -1}))
        .await;
    let (status, body) = sign(&stack, &token, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("wechat_busy")),
        "{body}"
    );
    // Not cached: the next call works.
    assert_eq!(sign(&stack, &token, None).await.0, 200);
}
