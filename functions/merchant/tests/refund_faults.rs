//! Refunds whose outcome is unknown are never failed here (issue 22): a refund WeChat Pay
//! accepted stays reserved on the order whatever the answers to a re-send say, a refusal is
//! believed only when WeChat Pay also says it has no such refund, and a refund held as ended
//! that WeChat Pay reports paid is taken back onto the order (or flagged for attention).

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Value, json};
use testkit::Stack;

fn refund(no: &str, refund_no: &str, amount: u64) -> Value {
    json!({"op": "refund", "out_trade_no": no, "out_refund_no": refund_no, "amount": amount})
}

async fn refund_status(stack: &Stack, refund_no: &str) -> (String, u64) {
    let refund = stack
        .merchant(json!({"op": "get_refund", "out_refund_no": refund_no}))
        .await
        .expect("the refund is there");
    let order = stack
        .merchant(json!({"op": "get_order", "out_trade_no": refund["out_trade_no"]}))
        .await;
    (
        refund["status"].as_str().unwrap_or_default().to_owned(),
        order.expect("the order is there")["refunded_total"]
            .as_u64()
            .unwrap_or(0),
    )
}

async fn fault(stack: &Stack, fault: Value) {
    stack.sim_post("/__sim/faults", fault).await;
}

/// The bug of issue 22: the first try lands and its answer is lost; the re-send is refused (429,
/// or a business refusal such as "already fully refunded"). Before, the refund ended FAILED, its
/// reservation was given back, WeChat Pay refunded anyway, and the merchant could refund twice.
#[tokio::test]
async fn a_refund_wechat_pay_accepted_is_never_failed_when_a_resend_is_refused() {
    let stack = Stack::start().await;
    stack.enable_pay().await;
    for (i, refusal) in [
        json!({"status": 429, "code": "FREQUENCY_LIMITED", "message": "too many"}),
        json!({"status": 400, "code": "INVALID_REQUEST", "message": "已全额退款"}),
        json!({"status": 403, "code": "NOT_ENOUGH", "message": "余额不足"}),
    ]
    .into_iter()
    .enumerate()
    {
        let order = format!("T2026120600{i}");
        let refund_no = format!("R2026120600{i}");
        stack.paid_order(&order, "o_alice", 1000, false).await;
        // The client's one retry: the first answer cut after WeChat Pay took the refund.
        fault(&stack, json!({"api": "refund", "cut": "after"})).await;
        fault(&stack, json!({"api": "refund", "pay_error": refusal})).await;
        let answer = stack.merchant(refund(&order, &refund_no, 1000)).await;
        let item = stack.order(&order).await;
        assert_eq!(
            item["refunded_total"].as_n().unwrap(),
            "1000",
            "{refusal}: the reservation is kept ({answer:?})"
        );
        let (status, refunded_total) = refund_status(&stack, &refund_no).await;
        assert_eq!((status.as_str(), refunded_total), ("PROCESSING", 1000), "{refusal}");
        // WeChat Pay pays it: the notification finds the refund alive and ends it SUCCESS.
        stack
            .sim_post("/__sim/pay/refund/settle", json!({"out_refund_no": refund_no}))
            .await;
        let (status, refunded_total) = refund_status(&stack, &refund_no).await;
        assert_eq!((status.as_str(), refunded_total), ("SUCCESS", 1000), "{refusal}");
        // No second refund of the same money.
        let again = stack.merchant(refund(&order, &format!("{refund_no}B"), 1)).await;
        assert_eq!(again.unwrap_err()["code"], "refund_exceeds_paid");
    }
}

#[tokio::test]
async fn a_refusal_of_a_refund_wechat_pay_does_not_have_gives_the_reservation_back() {
    let stack = Stack::start().await;
    stack.enable_pay().await;
    stack.paid_order("T20261206100", "o_alice", 500, false).await;
    fault(
        &stack,
        json!({"api": "refund", "pay_error": {"status": 400, "code": "PARAM_ERROR", "message": "bad"}}),
    )
    .await;
    let answer = stack.merchant(refund("T20261206100", "R20261206100", 500)).await;
    assert_eq!(answer.unwrap_err()["code"], "wechatpay_rejected");
    let refund = stack
        .merchant(json!({"op": "get_refund", "out_refund_no": "R20261206100"}))
        .await
        .unwrap();
    assert_eq!(refund["status"], "FAILED");
    assert_eq!(stack.order("T20261206100").await["refunded_total"].as_n().unwrap(), "0");
    // Asked about first: one query, answered 404.
    assert_eq!(stack.sim_calls("refund_query").await, 1);
}

#[tokio::test]
async fn a_refund_whose_outcome_is_unknown_stays_requested_for_the_reconciler() {
    let stack = Stack::start().await;
    stack.enable_pay().await;
    stack.paid_order("T20261206200", "o_alice", 700, false).await;
    for f in [
        json!({"api": "refund", "cut": "before", "count": 2}),
        json!({"api": "refund", "pay_error": {"status": 500, "code": "SYSTEM_ERROR"}, "count": 2}),
        json!({"api": "refund", "pay_error": {"status": 429, "code": "FREQUENCY_LIMITED"}, "count": 2}),
    ] {
        fault(&stack, f.clone()).await;
        let answer = stack.merchant(refund("T20261206200", "R20261206200", 700)).await;
        assert!(answer.is_err(), "{f}");
        let item = stack.order("T20261206200").await;
        assert_eq!(item["refunded_total"].as_n().unwrap(), "700", "{f}");
    }
    // Nothing reached WeChat Pay; the reconciler asks, hears 404, and sends it again.
    let later = wxa_shared::clock::now_unix() + wxa_shared::handlers::reconciler::GRACE_SECS + 1;
    let report = wxa_shared::handlers::reconciler::reconcile_at(&stack.state, later)
        .await
        .unwrap();
    assert_eq!(report["refunds_checked"], 1, "{report}");
    let (status, refunded_total) = refund_status(&stack, "R20261206200").await;
    assert_eq!((status.as_str(), refunded_total), ("PROCESSING", 700));
}

/// Sets a refund's state and the order's reservation as an older version of this server (or an
/// operator's mistake) could have left them.
async fn force(stack: &Stack, refund_no: &str, status: &str, order: &str, refunded_total: u64) {
    let db = stack.dynamodb();
    db.update_item()
        .table_name(format!("{}-refunds", stack.orders_table))
        .key("out_refund_no", AttributeValue::S(refund_no.into()))
        .update_expression("SET #s = :s REMOVE pending, pending_since")
        .expression_attribute_names("#s", "status")
        .expression_attribute_values(":s", AttributeValue::S(status.into()))
        .send()
        .await
        .unwrap();
    db.update_item()
        .table_name(&stack.orders_table)
        .key("out_trade_no", AttributeValue::S(order.into()))
        .update_expression("SET refunded_total = :t")
        .expression_attribute_values(":t", AttributeValue::N(refunded_total.to_string()))
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_refund_held_failed_that_wechat_pay_pays_is_taken_back_or_flagged() {
    let stack = Stack::start().await;
    stack.enable_pay().await;
    stack.paid_order("T20261206300", "o_alice", 900, false).await;
    stack
        .merchant(refund("T20261206300", "R20261206300", 400))
        .await
        .unwrap();
    // Held FAILED here with its reservation given back, while WeChat Pay goes on and pays it.
    force(&stack, "R20261206300", "FAILED", "T20261206300", 0).await;
    stack
        .sim_post("/__sim/pay/refund/settle", json!({"out_refund_no": "R20261206300"}))
        .await;
    let (status, refunded_total) = refund_status(&stack, "R20261206300").await;
    assert_eq!((status.as_str(), refunded_total), ("SUCCESS", 400));

    // Where taking it back would refund more than was paid, it is flagged, not dropped.
    stack.paid_order("T20261206301", "o_alice", 900, false).await;
    stack
        .merchant(refund("T20261206301", "R20261206301", 400))
        .await
        .unwrap();
    force(&stack, "R20261206301", "CLOSED", "T20261206301", 900).await;
    stack
        .sim_post("/__sim/pay/refund/settle", json!({"out_refund_no": "R20261206301"}))
        .await;
    let refund = stack
        .merchant(json!({"op": "get_refund", "out_refund_no": "R20261206301"}))
        .await
        .unwrap();
    assert_eq!(
        (refund["status"].as_str(), refund["needs_attention"].as_bool()),
        (Some("CLOSED"), Some(true)),
        "{refund}"
    );
    assert!(
        refund["attention_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("SUCCESS"),
        "{refund}"
    );
}
