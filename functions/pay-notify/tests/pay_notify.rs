//! End to end: a full payment. The simulator completes the payment and delivers WeChat Pay's
//! notification over HTTP to `pay-notify` (served by the test harness as API Gateway would).

use serde_json::{Value, json};
use testkit::{Stack, authed_event, event, read};
use wxa_shared::config::PayApi;
use wxa_shared::handlers::{pay_notify, pay_sign};
use wxa_shared::pay::v2::SignType;

const ORDER: &str = "T20261125000001";

/// Login, an order of `amount` fen, pay-sign: returns the prepay_id.
async fn ordered(stack: &Stack, amount: u64) -> String {
    stack.enable_pay().await;
    let token = stack.log_in("o_alice").await;
    stack.put_order(ORDER, "o_alice", amount).await;
    let (status, params) = read(&pay_sign::handle(&stack.state, authed_event("pay-sign.json", &token, None)).await);
    assert_eq!(status, 200, "{params}");
    params["package"]
        .as_str()
        .unwrap()
        .trim_start_matches("prepay_id=")
        .to_owned()
}

async fn complete(stack: &Stack, request: Value) -> Vec<Value> {
    let answer = stack.sim_post("/__sim/pay/complete", request).await;
    answer["deliveries"].as_array().expect("deliveries").clone()
}

async fn status_of(stack: &Stack) -> String {
    stack.order(ORDER).await["status"].as_s().unwrap().clone()
}

#[tokio::test]
async fn a_payment_notification_marks_the_order_paid() {
    let stack = Stack::start().await;
    let prepay_id = ordered(&stack, 1).await;
    let answer = stack
        .sim_post("/__sim/pay/complete", json!({"prepay_id": prepay_id}))
        .await;
    let deliveries = answer["deliveries"].as_array().unwrap();
    assert_eq!(deliveries[0]["status"], 204, "{answer}");
    assert_eq!(deliveries[0]["attempts"], 1);
    let order = stack.order(ORDER).await;
    assert_eq!(order["status"].as_s().unwrap(), "PAID");
    assert_eq!(
        order["transaction_id"].as_s().unwrap(),
        answer["transaction_id"].as_str().unwrap()
    );
    assert!(order.contains_key("paid_at"));

    // Paying again is refused by pay-sign.
    let token = stack.log_in("o_alice").await;
    let (status, body) = read(&pay_sign::handle(&stack.state, authed_event("pay-sign.json", &token, None)).await);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("order_already_paid"))
    );
}

#[tokio::test]
async fn a_notification_keyed_by_certificate_serial_is_accepted_too() {
    let stack = Stack::start().await;
    let prepay_id = ordered(&stack, 1).await;
    let deliveries = complete(&stack, json!({"prepay_id": prepay_id, "mode": "certificate"})).await;
    assert_eq!(deliveries[0]["status"], 204, "{deliveries:?}");
    assert_eq!(status_of(&stack).await, "PAID");
}

#[tokio::test]
async fn forged_notifications_are_refused_and_change_nothing() {
    let stack = Stack::start().await;
    let prepay_id = ordered(&stack, 1).await;
    for (mode, status, needle) in [
        ("tampered", 401, "does not match"),
        ("stale", 401, "away from now"),
        ("signtest", 401, "SIGNTEST"),
        ("wrong_key", 401, "does not match"),
    ] {
        let deliveries = complete(&stack, json!({"prepay_id": prepay_id, "mode": mode})).await;
        assert_eq!(deliveries[0]["status"], status, "{mode}: {deliveries:?}");
        let body: Value = serde_json::from_str(deliveries[0]["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["code"], "FAIL", "{mode}");
        assert!(body["message"].as_str().unwrap().contains(needle), "{mode}: {body}");
        assert_eq!(status_of(&stack).await, "UNPAID", "{mode}");
    }
}

#[tokio::test]
async fn an_amount_that_does_not_match_the_order_is_refused() {
    let stack = Stack::start().await;
    let prepay_id = ordered(&stack, 100).await;
    let deliveries = complete(&stack, json!({"prepay_id": prepay_id, "amount": 1})).await;
    assert_eq!(deliveries[0]["status"], 400, "{deliveries:?}");
    assert!(
        deliveries[0]["body"]
            .as_str()
            .unwrap()
            .contains("amount 1 does not match")
    );
    assert_eq!(status_of(&stack).await, "UNPAID");
}

#[tokio::test]
async fn a_hundred_concurrent_duplicates_change_the_order_once() {
    let stack = Stack::start().await;
    let prepay_id = ordered(&stack, 1).await;
    let before = stack.aws_calls.succeeded("DynamoDB.UpdateItem");
    let deliveries = complete(&stack, json!({"prepay_id": prepay_id, "copies": 100})).await;
    assert_eq!(deliveries.len(), 100);
    assert!(
        deliveries.iter().all(|d| d["status"] == 204),
        "every copy is acknowledged: {deliveries:?}"
    );
    assert_eq!(
        stack.aws_calls.succeeded("DynamoDB.UpdateItem") - before,
        1,
        "exactly one state change"
    );
    assert_eq!(status_of(&stack).await, "PAID");
}

#[tokio::test]
async fn v2_notifications_use_their_own_sign_type_and_the_xml_reply() {
    for sign_type in [SignType::Md5, SignType::HmacSha256] {
        let stack = Stack::start_with(|c| c.pay_api = PayApi::V2(sign_type)).await;
        let prepay_id = ordered(&stack, 1).await;
        let deliveries = complete(&stack, json!({"prepay_id": prepay_id, "mode": "tampered"})).await;
        assert_eq!(deliveries[0]["status"], 401, "{deliveries:?}");
        assert!(
            deliveries[0]["body"]
                .as_str()
                .unwrap()
                .contains("<return_code><![CDATA[FAIL]]></return_code>")
        );
        assert_eq!(status_of(&stack).await, "UNPAID");
        let deliveries = complete(&stack, json!({"prepay_id": prepay_id})).await;
        assert_eq!(deliveries[0]["status"], 200, "{deliveries:?}");
        assert_eq!(
            deliveries[0]["body"],
            "<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>"
        );
        assert_eq!(status_of(&stack).await, "PAID");
    }
}

#[tokio::test]
async fn the_event_files_are_handled() {
    let stack = Stack::start().await;
    stack.enable_pay().await;
    stack.put_order("T20261125000001", "o_alice", 1).await;
    stack.put_order("T20261125000002", "o_alice", 1).await;
    // The v3 event was signed at 2026-11-25 12:00 +08:00: now it is stale, and refused.
    let response = pay_notify::handle(&stack.state, event("pay-notify.json")).await;
    let (status, body) = read(&response);
    assert_eq!((status, body["code"].as_str()), (401, Some("FAIL")), "{body}");
    assert_eq!(status_of(&stack).await, "UNPAID");
    // The v2 event has no timestamp to age: it pays order T20261125000002.
    let response = pay_notify::handle(&stack.state, event("pay-notify-v2.json")).await;
    assert_eq!(response.status(), 200);
    let paid = stack.order("T20261125000002").await;
    assert_eq!(paid["status"].as_s().unwrap(), "PAID");
    assert_eq!(paid["transaction_id"].as_s().unwrap(), "1004400740201409030005092168");
}

#[tokio::test]
async fn garbage_is_refused_with_the_fail_shape() {
    let stack = Stack::start().await;
    stack.enable_pay().await;
    for body in ["", "{}", "not json", "<xml><a>1</a>"] {
        let mut request = event("pay-notify.json");
        *request.body_mut() = lambda_http::Body::Text(body.to_owned());
        let response = pay_notify::handle(&stack.state, request).await;
        assert!(response.status().is_client_error(), "{body:?}: {}", response.status());
    }
}
