//! End to end on moto server and the simulator: the scheduled reconciler finds what notifications
//! did not settle — from the sparse index, not by scanning — and settles it, closes abandoned
//! orders, and is safe to run twice at once.

use serde_json::json;
use testkit::Stack;
use wxa_shared::clock::now_unix;
use wxa_shared::handlers::reconciler::{GRACE_SECS, reconcile_at};

const ORDER: &str = "T20261126000001";

#[tokio::test]
async fn a_payment_whose_notifications_were_all_lost_is_marked_paid() {
    let stack = Stack::start().await;
    stack.enable_pay().await;
    stack.paid_order(ORDER, "o_alice", 100, true).await;
    // Within the grace period the reconciler leaves it to the notifications.
    let report = reconcile_at(&stack.state, now_unix()).await.unwrap();
    assert_eq!(report["orders_checked"], 0, "{report}");
    assert_eq!(stack.order(ORDER).await["status"].as_s().unwrap(), "UNPAID");

    stack.aws_calls.take();
    let report = reconcile_at(&stack.state, now_unix() + GRACE_SECS + 1).await.unwrap();
    assert_eq!(
        (report["orders_checked"].as_u64(), report["orders_paid"].as_u64()),
        (Some(1), Some(1)),
        "{report}"
    );
    let order = stack.order(ORDER).await;
    assert_eq!(order["status"].as_s().unwrap(), "PAID");
    assert!(!order["transaction_id"].as_s().unwrap().is_empty());
    assert!(!order.contains_key("pending"), "settled: out of the pending index");
    let calls = stack.aws_calls.take();
    assert!(calls.iter().any(|c| c == "DynamoDB.Query"), "{calls:?}");
    assert!(!calls.iter().any(|c| c == "DynamoDB.Scan"), "never a scan: {calls:?}");

    // Nothing is pending any more: the next run asks WeChat Pay nothing.
    let queries = stack.sim_calls("pay_query").await;
    let report = reconcile_at(&stack.state, now_unix() + GRACE_SECS + 1).await.unwrap();
    assert_eq!(report["orders_checked"], 0, "{report}");
    assert_eq!(stack.sim_calls("pay_query").await, queries);
}

#[tokio::test]
async fn a_refund_whose_notification_was_lost_is_settled() {
    let stack = Stack::start().await;
    stack.enable_pay().await;
    stack.refund_with_lost_notification(ORDER, "R_LOST_1", 100, 30).await;
    let report = reconcile_at(&stack.state, now_unix() + GRACE_SECS + 1).await.unwrap();
    assert_eq!(
        (report["refunds_checked"].as_u64(), report["refunds_settled"].as_u64()),
        (Some(1), Some(1)),
        "{report}"
    );
    let refund = stack
        .merchant(json!({"op": "get_refund", "out_refund_no": "R_LOST_1"}))
        .await
        .unwrap();
    assert_eq!(refund["status"], "SUCCESS");
}

#[tokio::test]
async fn an_abandoned_order_is_closed_here_and_at_wechat_pay() {
    let stack = Stack::start().await;
    stack.enable_pay().await;
    stack
        .merchant(json!({"op": "create_order", "out_trade_no": ORDER, "openid": "o_alice", "description": "tea", "amount_total": 100}))
        .await
        .unwrap();
    let token = stack.log_in("o_alice").await;
    let body = json!({"out_trade_no": ORDER});
    let signed = wxa_shared::handlers::pay_sign::FUNCTION
        .handle(
            &stack.state,
            testkit::authed_event("pay-sign.json", &token, Some(&body)),
        )
        .await;
    assert_eq!(signed.status(), 200);
    // Unpaid, two hours after its prepay_id: abandoned.
    let later = now_unix() + wxa_shared::shop::PREPAY_LIFETIME_SECS + 60;
    let report = reconcile_at(&stack.state, later).await.unwrap();
    assert_eq!(report["orders_closed"], 1, "{report}");
    assert_eq!(stack.order(ORDER).await["status"].as_s().unwrap(), "CLOSED");
    assert_eq!(stack.sim_calls("pay_close").await, 1);
}

#[tokio::test]
async fn two_runs_at_once_change_each_order_once() {
    let stack = std::sync::Arc::new(Stack::start().await);
    stack.enable_pay().await;
    for i in 0..5 {
        stack
            .paid_order(&format!("T2026112600010{i}"), "o_alice", 10, true)
            .await;
    }
    let before = stack.aws_calls.succeeded("DynamoDB.UpdateItem");
    let later = now_unix() + GRACE_SECS + 1;
    let (a, b) = tokio::join!(reconcile_at(&stack.state, later), reconcile_at(&stack.state, later));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a["errors"], 0, "{a}");
    assert_eq!(b["errors"], 0, "{b}");
    assert_eq!(
        stack.aws_calls.succeeded("DynamoDB.UpdateItem") - before,
        5,
        "each order paid once, whichever run got there first"
    );
    for i in 0..5 {
        assert_eq!(
            stack.order(&format!("T2026112600010{i}")).await["status"]
                .as_s()
                .unwrap(),
            "PAID"
        );
    }
}
