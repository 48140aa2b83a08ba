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
    let (status, params) = read(
        &pay_sign::FUNCTION
            .handle(&stack.state, authed_event("pay-sign.json", &token, None))
            .await,
    );
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
    let (status, body) = read(
        &pay_sign::FUNCTION
            .handle(&stack.state, authed_event("pay-sign.json", &token, None))
            .await,
    );
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
    // Whatever check failed, the sender hears the same words: which one is for the log.
    for mode in ["tampered", "stale", "signtest", "wrong_key"] {
        let deliveries = complete(&stack, json!({"prepay_id": prepay_id, "mode": mode})).await;
        assert_eq!(deliveries[0]["status"], 401, "{mode}: {deliveries:?}");
        let body: Value = serde_json::from_str(deliveries[0]["body"].as_str().unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"code": "FAIL", "message": "the signature does not verify"}),
            "{mode}"
        );
        assert_eq!(status_of(&stack).await, "UNPAID", "{mode}");
    }
}

#[tokio::test]
async fn a_payment_stores_its_transaction_time_and_payer() {
    let stack = Stack::start().await;
    let prepay_id = ordered(&stack, 1).await;
    let answer = stack
        .sim_post("/__sim/pay/complete", json!({"prepay_id": prepay_id}))
        .await;
    assert_eq!(answer["deliveries"][0]["status"], 204, "{answer}");
    let order = stack.order(ORDER).await;
    assert_eq!(
        order["transaction_id"].as_s().unwrap(),
        answer["transaction_id"].as_str().unwrap()
    );
    assert_eq!(order["payer_openid"].as_s().unwrap(), "o_alice");
    assert!(!order["success_time"].as_s().unwrap().is_empty());
    assert!(!order.contains_key("needs_attention"));
}

#[tokio::test]
async fn an_amount_that_does_not_match_the_order_is_kept_for_attention_not_paid() {
    let stack = Stack::start().await;
    let prepay_id = ordered(&stack, 100).await;
    let deliveries = complete(&stack, json!({"prepay_id": prepay_id, "amount": 1})).await;
    // Signed by WeChat Pay: money moved. Acknowledged (retries cannot change that), not paid.
    assert_eq!(deliveries[0]["status"], 204, "{deliveries:?}");
    let order = stack.order(ORDER).await;
    assert_eq!(order["status"].as_s().unwrap(), "UNPAID");
    assert_eq!(order["needs_attention"].as_bool().unwrap(), &true);
    assert!(
        order["attention_reason"]
            .as_s()
            .unwrap()
            .contains("paid 1 fen for an order of 100 fen"),
        "{order:?}"
    );
    assert_eq!(order["attention_transaction_ids"].as_ss().unwrap().len(), 1);
}

#[tokio::test]
async fn a_payment_for_a_closed_order_or_a_second_transaction_is_kept_and_acknowledged() {
    use aws_sdk_dynamodb::types::AttributeValue::S;
    // The v2 dialect lets the test write the notification itself (any transaction id).
    let stack = Stack::start_with(|c| c.pay.as_mut().expect("pays").v2_sign_type = SignType::HmacSha256).await;
    stack.enable_pay().await;
    stack.put_order(ORDER, "o_alice", 1).await;
    let notify = |transaction_id: &str| v2_notification(transaction_id, SignType::HmacSha256);

    // Paid once, then paid again by another transaction.
    assert_eq!(post_v2(&stack, &notify("4200000001")).await, 200);
    assert_eq!(post_v2(&stack, &notify("4200000001")).await, 200, "a repeat is fine");
    assert!(!stack.order(ORDER).await.contains_key("needs_attention"));
    assert_eq!(post_v2(&stack, &notify("4200000002")).await, 200);
    assert_eq!(post_v2(&stack, &notify("4200000002")).await, 200);
    let order = stack.order(ORDER).await;
    assert_eq!(order["status"].as_s().unwrap(), "PAID");
    assert_eq!(order["transaction_id"].as_s().unwrap(), "4200000001");
    assert_eq!(order["needs_attention"].as_bool().unwrap(), &true);
    assert_eq!(
        order["attention_transaction_ids"].as_ss().unwrap(),
        &vec!["4200000002".to_owned()],
        "kept once, however often it is delivered"
    );

    // A payment for an order the merchant closed.
    stack.put_order(ORDER, "o_alice", 1).await;
    stack
        .dynamodb()
        .update_item()
        .table_name(&stack.orders_table)
        .key("out_trade_no", S(ORDER.into()))
        .update_expression("SET #s = :closed")
        .expression_attribute_names("#s", "status")
        .expression_attribute_values(":closed", S("CLOSED".into()))
        .send()
        .await
        .unwrap();
    assert_eq!(post_v2(&stack, &notify("4200000003")).await, 200);
    let order = stack.order(ORDER).await;
    assert_eq!(order["status"].as_s().unwrap(), "CLOSED");
    assert_eq!(order["attention_reason"].as_s().unwrap(), "paid while CLOSED");
}

#[tokio::test]
async fn a_v2_notification_signed_with_the_other_sign_type_is_refused() {
    for (configured, other) in [
        (SignType::HmacSha256, SignType::Md5),
        (SignType::Md5, SignType::HmacSha256),
    ] {
        let stack = Stack::start_with(|c| c.pay.as_mut().expect("pays").v2_sign_type = configured).await;
        stack.enable_pay().await;
        stack.put_order(ORDER, "o_alice", 1).await;
        // Correctly signed, with the key, but not the way the merchant configured.
        assert_eq!(post_v2(&stack, &v2_notification("4200000009", other)).await, 401);
        assert_eq!(status_of(&stack).await, "UNPAID");
        assert_eq!(post_v2(&stack, &v2_notification("4200000009", configured)).await, 200);
        assert_eq!(status_of(&stack).await, "PAID");
    }
}

/// A v2 payment notification for [`ORDER`] (1 fen, o_alice), signed with the test merchant's
/// APIv2 key by `sign_type` (MD5 documents name no sign_type, as WeChat Pay sends them).
fn v2_notification(transaction_id: &str, sign_type: SignType) -> String {
    use std::collections::BTreeMap;
    use wxa_shared::pay::v2;
    let mut fields: BTreeMap<String, String> = [
        ("return_code", "SUCCESS"),
        ("result_code", "SUCCESS"),
        ("appid", testkit::APP_ID),
        ("mch_id", testkit::MCHID),
        ("nonce_str", "5K8264ILTKCH16CQ2502SI8ZNMTM67VS"),
        ("openid", "o_alice"),
        ("trade_type", "JSAPI"),
        ("total_fee", "1"),
        ("cash_fee", "1"),
        ("transaction_id", transaction_id),
        ("out_trade_no", ORDER),
        ("time_end", "20261125120000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    if sign_type == SignType::HmacSha256 {
        fields.insert("sign_type".into(), "HMAC-SHA256".into());
    }
    let key = wxa_shared::redacted::Secret::new(testkit::APIV2_KEY);
    fields.insert("sign".into(), v2::sign(&fields, &key, sign_type));
    v2::to_xml(&fields)
}

async fn post_v2(stack: &Stack, xml: &str) -> u16 {
    let mut request = event("pay-notify-v2.json");
    *request.body_mut() = lambda_http::Body::Text(xml.to_owned());
    pay_notify::FUNCTION
        .handle(&stack.state, request)
        .await
        .status()
        .as_u16()
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
        let stack = Stack::start_with(|c| {
            let pay = c.pay.as_mut().expect("the test stack pays");
            pay.api = PayApi::V2;
            pay.v2_sign_type = sign_type;
        })
        .await;
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
    let response = pay_notify::FUNCTION
        .handle(&stack.state, event("pay-notify.json"))
        .await;
    let (status, body) = read(&response);
    assert_eq!((status, body["code"].as_str()), (401, Some("FAIL")), "{body}");
    assert_eq!(status_of(&stack).await, "UNPAID");
    // The v2 event has no timestamp to age: it pays order T20261125000002.
    let response = pay_notify::FUNCTION
        .handle(&stack.state, event("pay-notify-v2.json"))
        .await;
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
        let response = pay_notify::FUNCTION.handle(&stack.state, request).await;
        assert!(response.status().is_client_error(), "{body:?}: {}", response.status());
    }
}
