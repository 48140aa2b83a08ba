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

/// A refund item pending since `since` for an order this server does not have: the reconciler
/// fails on it every time (as on an item that keeps failing for any reason).
async fn put_failing_refund(stack: &Stack, no: &str, since: u64) {
    use aws_sdk_dynamodb::types::AttributeValue::{N, S};
    stack
        .dynamodb()
        .put_item()
        .table_name(format!("{}-refunds", stack.orders_table))
        .item("out_refund_no", S(no.into()))
        .item("out_trade_no", S("T_GONE_000001".into()))
        .item("amount", N("1".into()))
        .item("status", S("REQUESTED".into()))
        .item("created_at", N(since.to_string()))
        .item("pending", S("refund".into()))
        .item("pending_since", N(since.to_string()))
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn items_that_keep_failing_never_block_the_others_and_are_backed_off() {
    let stack = Stack::start().await;
    stack.enable_pay().await;
    // More failing items than one page of the index, all older than the one that can progress.
    let old = now_unix() - 3600;
    for i in 0..130 {
        put_failing_refund(&stack, &format!("R_FAILING_{i:03}"), old + i).await;
    }
    stack.refund_with_lost_notification(ORDER, "R_LOST_2", 100, 30).await;

    let later = now_unix() + GRACE_SECS + 1;
    let report = reconcile_at(&stack.state, later).await.unwrap();
    assert_eq!(
        (
            report["refunds_checked"].as_u64(),
            report["refunds_settled"].as_u64(),
            report["errors"].as_u64(),
            report["deferred"].as_u64(),
        ),
        (Some(131), Some(1), Some(130), Some(130)),
        "{report}"
    );
    let refund = stack
        .merchant(json!({"op": "get_refund", "out_refund_no": "R_LOST_2"}))
        .await
        .unwrap();
    assert_eq!(refund["status"], "SUCCESS");

    // Backed off: the next run at the same time looks at none of them, nor asks WeChat Pay.
    let queries = stack.sim_calls("refund_query").await;
    let report = reconcile_at(&stack.state, later).await.unwrap();
    assert_eq!(report["refunds_checked"], 0, "{report}");
    assert_eq!(stack.sim_calls("refund_query").await, queries);
    // After the first back-off they are looked at again, and backed off twice as long.
    let report = reconcile_at(&stack.state, later + 61).await.unwrap();
    assert_eq!(report["refunds_checked"], 130, "{report}");
    let report = reconcile_at(&stack.state, later + 61 + 61).await.unwrap();
    assert_eq!(report["refunds_checked"], 0, "{report}");
    use aws_sdk_dynamodb::types::AttributeValue::S;
    let item = stack
        .dynamodb()
        .get_item()
        .table_name(format!("{}-refunds", stack.orders_table))
        .key("out_refund_no", S("R_FAILING_000".into()))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert_eq!(item["attempts"].as_n().unwrap(), "2");
    assert_eq!(item["next_attempt_at"].as_n().unwrap(), &(later + 61 + 120).to_string());
}

#[tokio::test]
async fn an_apiv2_order_past_its_time_ends_expired_and_a_late_payment_still_settles_it() {
    let stack =
        Stack::start_with(|c| c.pay.as_mut().expect("the test stack pays").api = wxa_shared::config::PayApi::V2).await;
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
    let (status, params) = testkit::read(&signed);
    assert_eq!(status, 200, "{params}");
    let later = now_unix() + wxa_shared::shop::PREPAY_LIFETIME_SECS + 60;
    let report = reconcile_at(&stack.state, later).await.unwrap();
    assert_eq!(
        (report["orders_expired"].as_u64(), report["errors"].as_u64()),
        (Some(1), Some(0)),
        "{report}"
    );
    let order = stack.order(ORDER).await;
    assert_eq!(order["status"].as_s().unwrap(), "EXPIRED");
    assert!(!order.contains_key("pending"), "ended: out of the pending index");
    // Uncloseable there, so WeChat Pay's word still wins: a payment reported later settles it.
    let prepay_id = params["package"].as_str().unwrap().trim_start_matches("prepay_id=");
    stack
        .sim_post("/__sim/pay/complete", json!({"prepay_id": prepay_id}))
        .await;
    assert_eq!(stack.order(ORDER).await["status"].as_s().unwrap(), "PAID");
}

/// Signs `ORDER` for `o_alice` through pay-sign: the answer's status and body.
async fn pay_sign(stack: &Stack) -> (u16, serde_json::Value) {
    let token = stack.log_in("o_alice").await;
    let body = json!({"out_trade_no": ORDER});
    let answer = wxa_shared::handlers::pay_sign::FUNCTION
        .handle(
            &stack.state,
            testkit::authed_event("pay-sign.json", &token, Some(&body)),
        )
        .await;
    testkit::read(&answer)
}

/// Seed 1497 of the ledger model: the order was placed at WeChat Pay but the answer was lost
/// (no prepay_id here), then closed at WeChat Pay with that answer lost too. It must not stay
/// UNPAID here while CLOSED there: pending from the first placement attempt, it is asked about.
#[tokio::test]
async fn an_order_whose_placement_answer_was_lost_is_still_reconciled() {
    let stack = Stack::start().await;
    stack.enable_pay().await;
    stack
        .merchant(json!({"op": "create_order", "out_trade_no": ORDER, "openid": "o_alice", "description": "tea", "amount_total": 100}))
        .await
        .unwrap();
    stack
        .sim_post("/__sim/faults", json!({"api": "pay_jsapi", "cut": "after", "count": 2}))
        .await;
    let (status, answer) = pay_sign(&stack).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (503, Some("wechatpay_unavailable")),
        "{answer}"
    );
    assert_eq!(
        stack.sim_calls("pay_jsapi").await,
        2,
        "the placement landed (and its one retry)"
    );
    let order = stack.order(ORDER).await;
    assert!(!order.contains_key("prepay_id"), "{order:?}");
    assert_eq!(order["pending"].as_s().unwrap(), "order", "pending before the call");
    assert!(order.contains_key("placed_at"), "{order:?}");

    // The back office closes it: closed at WeChat Pay, the answer lost.
    stack
        .sim_post("/__sim/faults", json!({"api": "pay_close", "cut": "after", "count": 2}))
        .await;
    let closing = stack
        .merchant(json!({"op": "close_order", "out_trade_no": ORDER}))
        .await;
    assert!(closing.is_err(), "{closing:?}");
    assert_eq!(stack.order(ORDER).await["status"].as_s().unwrap(), "UNPAID");

    // The reconciler asks WeChat Pay and records what it says.
    let report = reconcile_at(&stack.state, now_unix() + GRACE_SECS + 1).await.unwrap();
    assert_eq!(report["errors"], 0, "{report}");
    let order = stack.order(ORDER).await;
    assert_eq!(order["status"].as_s().unwrap(), "CLOSED", "{report}");
    assert!(!order.contains_key("pending"));
}

/// A placement whose answer was lost, never closed: the order is closed at WeChat Pay and here
/// once abandoned, as one with a prepay_id is.
#[tokio::test]
async fn an_abandoned_order_whose_placement_answer_was_lost_is_closed_on_both_sides() {
    let stack = Stack::start().await;
    stack.enable_pay().await;
    stack
        .merchant(json!({"op": "create_order", "out_trade_no": ORDER, "openid": "o_alice", "description": "tea", "amount_total": 100}))
        .await
        .unwrap();
    stack
        .sim_post("/__sim/faults", json!({"api": "pay_jsapi", "cut": "after", "count": 2}))
        .await;
    assert_eq!(pay_sign(&stack).await.0, 503);
    // Not yet abandoned: asked about (NOTPAY), left pending.
    let report = reconcile_at(&stack.state, now_unix() + GRACE_SECS + 1).await.unwrap();
    assert_eq!(
        (report["orders_checked"].as_u64(), report["errors"].as_u64()),
        (Some(1), Some(0)),
        "{report}"
    );
    assert_eq!(stack.order(ORDER).await["status"].as_s().unwrap(), "UNPAID");
    let later = now_unix() + wxa_shared::shop::PREPAY_LIFETIME_SECS + 60;
    let report = reconcile_at(&stack.state, later).await.unwrap();
    assert_eq!(report["orders_closed"], 1, "{report}");
    assert_eq!(stack.order(ORDER).await["status"].as_s().unwrap(), "CLOSED");
    let url = format!("{}/__sim/pay/ledger", stack.sim.base_url());
    let ledger: serde_json::Value = stack.http.get(url).send().await.unwrap().json().await.unwrap();
    let there = ledger["orders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["out_trade_no"] == ORDER)
        .cloned();
    assert_eq!(there.map(|o| o["trade_state"].clone()), Some(json!("CLOSED")));
}

/// A bill waiting for its user is asked about less and less often, not at every run.
#[tokio::test]
async fn a_transfer_waiting_for_its_user_is_backed_off() {
    let stack = Stack::start().await;
    stack.enable_pay().await;
    let bill = stack
        .merchant(
            json!({"op": "create_transfer", "out_bill_no": "B20261206000001", "openid": "o_alice", "amount": 500,
                         "scene_id": "1000", "remark": "新会员开通有礼",
                         "report_infos": [{"info_type": "活动名称", "info_content": "新会员有礼"},
                                          {"info_type": "奖励说明", "info_content": "注册会员抽奖一等奖"}]}),
        )
        .await
        .unwrap();
    assert_eq!(bill["state"], "WAIT_USER_CONFIRM", "{bill}");
    let now = now_unix() + GRACE_SECS + 1;
    let queries = stack.sim_calls("transfer_query").await;
    let report = reconcile_at(&stack.state, now).await.unwrap();
    assert_eq!(
        (
            report["transfers_checked"].as_u64(),
            report["transfers_waiting"].as_u64(),
            report["errors"].as_u64()
        ),
        (Some(1), Some(1), Some(0)),
        "{report}"
    );
    assert_eq!(stack.sim_calls("transfer_query").await, queries + 1);
    // The runs of the next minute leave it alone; the one after asks again.
    for at in [now + 1, now + 59] {
        let report = reconcile_at(&stack.state, at).await.unwrap();
        assert_eq!(report["transfers_checked"], 0, "{report}");
    }
    assert_eq!(stack.sim_calls("transfer_query").await, queries + 1);
    let report = reconcile_at(&stack.state, now + 61).await.unwrap();
    assert_eq!(report["transfers_waiting"], 1, "{report}");
    assert_eq!(stack.sim_calls("transfer_query").await, queries + 2);
}
