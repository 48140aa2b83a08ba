//! End to end on moto server and the simulator: the back office's commands to the `merchant`
//! function — orders, their payment (also when every notification is lost), closing, refunds
//! (idempotent, never beyond what was paid, also under concurrent calls) and shipping info.

use serde_json::{Value, json};
use testkit::{Stack, authed_event, read};
use wxa_shared::handlers::pay_sign;

const ORDER: &str = "T20261126000001";

fn create(no: &str, amount: u64) -> Value {
    json!({"op": "create_order", "out_trade_no": no, "openid": "o_alice", "description": "A cup of tea", "amount_total": amount})
}

fn code(error: &Value) -> &str {
    error["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn orders_are_created_once_and_commands_are_checked() {
    let stack = Stack::start().await;
    stack.enable_pay().await;
    let first = stack.merchant(create(ORDER, 100)).await.unwrap();
    assert_eq!(
        (first["status"].as_str(), first["amount_total"].as_u64()),
        (Some("UNPAID"), Some(100))
    );
    // A retry is the same order; other content under the same number is refused.
    assert_eq!(stack.merchant(create(ORDER, 100)).await.unwrap(), first);
    assert_eq!(
        code(&stack.merchant(create(ORDER, 200)).await.unwrap_err()),
        "order_conflict"
    );

    for (command, expected) in [
        (json!({"op": "drop_table"}), "unknown_op"),
        (json!({"no_op": 1}), "unknown_op"),
        (json!({"op": "create_order"}), "invalid_command"),
        (create("short", 100), "invalid_command"),
        (create("T20261126000002", 0), "invalid_command"),
        (create("T20261126000002", u64::MAX), "invalid_command"),
        (
            json!({"op": "create_order", "out_trade_no": "T20261126000002", "openid": "o_alice", "description": "x", "amount_total": "100"}),
            "invalid_command",
        ),
        (
            json!({"op": "create_order", "out_trade_no": "T20261126000002", "openid": "o alice; drop", "description": "x", "amount_total": 1}),
            "invalid_command",
        ),
        (
            json!({"op": "create_order", "out_trade_no": "T20261126000002", "openid": "o_alice", "description": "x", "amount_total": 1, "is_admin": true}),
            "invalid_command",
        ),
        (
            json!({"op": "create_order", "out_trade_no": "T20261126000002", "openid": "o_alice", "description": "x", "amount_total": 1, "time_expire": "tomorrow"}),
            "invalid_command",
        ),
        (
            json!({"op": "get_order", "out_trade_no": "T_NOT_THERE_1"}),
            "order_not_found",
        ),
        (
            json!({"op": "refund", "out_trade_no": ORDER, "out_refund_no": "R1", "amount": 1}),
            "order_not_refundable",
        ),
        (
            json!({"op": "refund", "out_trade_no": ORDER, "out_refund_no": "R 1", "amount": 1}),
            "invalid_command",
        ),
        (
            json!({"op": "get_refund", "out_refund_no": "R_NOT_THERE"}),
            "refund_not_found",
        ),
        (
            json!({"op": "upload_shipping", "out_trade_no": ORDER, "logistics_type": 1, "delivery_mode": 1,
                "shipping_list": [{"tracking_no": "SF1", "express_company": "SF", "item_desc": "tea"}]}),
            "order_not_paid",
        ),
        (
            json!({"op": "upload_shipping", "out_trade_no": ORDER, "logistics_type": 9, "delivery_mode": 1, "shipping_list": []}),
            "invalid_command",
        ),
    ] {
        let error = stack.merchant(command.clone()).await.unwrap_err();
        assert_eq!(code(&error), expected, "{command}: {error}");
        assert!(error["request_id"].is_string(), "{error}");
    }
}

#[tokio::test]
async fn a_payment_whose_notifications_were_all_lost_is_settled_by_get_order() {
    let stack = Stack::start().await;
    stack.enable_pay().await;
    stack.paid_order(ORDER, "o_alice", 100, true).await;
    assert_eq!(
        stack.order(ORDER).await["status"].as_s().unwrap(),
        "UNPAID",
        "nothing was notified"
    );
    let order = stack
        .merchant(json!({"op": "get_order", "out_trade_no": ORDER}))
        .await
        .unwrap();
    assert_eq!(order["status"], "PAID");
    assert!(
        order["transaction_id"].as_str().is_some_and(|t| !t.is_empty()),
        "{order}"
    );
    assert_eq!(stack.sim_calls("pay_query").await, 1);
    // Settled now: asking again asks WeChat Pay nothing.
    stack
        .merchant(json!({"op": "get_order", "out_trade_no": ORDER}))
        .await
        .unwrap();
    assert_eq!(stack.sim_calls("pay_query").await, 1);
}

/// `GET /pay/orders/{no}` as API Gateway delivers it (`events/pay-order.json`, for order `no`).
fn order_page(token: &str, no: &str) -> lambda_http::Request {
    use lambda_http::RequestExt;
    let request = authed_event("pay-order.json", token, None);
    let parameters: std::collections::HashMap<String, String> = [("out_trade_no".to_owned(), no.to_owned())].into();
    request.with_path_parameters(parameters)
}

#[tokio::test]
async fn the_mini_programs_order_page_settles_a_lost_payment_and_shows_only_its_own_orders() {
    let stack = Stack::start().await;
    stack.enable_pay().await;
    stack.paid_order(ORDER, "o_alice", 100, true).await;
    let alice = stack.log_in("o_alice").await;
    let (status, body) = read(&pay_sign::FUNCTION.handle(&stack.state, order_page(&alice, ORDER)).await);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["status"].as_str(), body["amount_total"].as_u64()),
        (Some("PAID"), Some(100))
    );
    assert_eq!(
        stack.sim_calls("pay_query").await,
        1,
        "asked once, as the notification was lost"
    );

    // Another user's order is as unknown as one that does not exist.
    let bob = stack.log_in("o_bob").await;
    for (token, no) in [(&bob, ORDER), (&alice, "T_NOT_THERE_1")] {
        let (status, body) = read(&pay_sign::FUNCTION.handle(&stack.state, order_page(token, no)).await);
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some("order_not_found")),
            "{body}"
        );
    }
    let (status, body) = read(&pay_sign::FUNCTION.handle(&stack.state, order_page(&alice, "x")).await);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
}

/// A user polling their unpaid order cannot spend the merchant's query quota: WeChat Pay is
/// asked about one order at most once per `ORDER_QUERY_INTERVAL_SECS`, whatever the container.
#[tokio::test]
async fn polling_the_order_page_asks_wechat_pay_at_most_once_per_interval() {
    let stack = Stack::start().await;
    stack.enable_pay().await;
    stack.merchant(create(ORDER, 100)).await.unwrap();
    let alice = stack.log_in("o_alice").await;
    let body = json!({"out_trade_no": ORDER});
    let (status, _) = read(
        &pay_sign::FUNCTION
            .handle(&stack.state, authed_event("pay-sign.json", &alice, Some(&body)))
            .await,
    );
    assert_eq!(status, 200);
    // Twenty polls from two containers (states) at once.
    let other = std::sync::Arc::new(stack.state_for(&pay_sign::FUNCTION));
    let mut polls = tokio::task::JoinSet::new();
    for i in 0..20 {
        let state = if i % 2 == 0 { stack.state.clone() } else { other.clone() };
        let request = order_page(&alice, ORDER);
        polls.spawn(async move { read(&pay_sign::FUNCTION.handle(&state, request).await) });
    }
    while let Some(answer) = polls.join_next().await {
        let (status, body) = answer.unwrap();
        assert_eq!((status, body["status"].as_str()), (200, Some("UNPAID")), "{body}");
    }
    assert_eq!(stack.sim_calls("pay_query").await, 1);
}

/// A user with many unpaid orders cannot spend the quota either: each question asked for them
/// spends their budget; past it, 429 with `Retry-After` and WeChat Pay is not asked.
#[tokio::test]
async fn a_user_polling_many_orders_spends_their_own_budget() {
    use wxa_shared::store::budgets::Budget;
    let stack = Stack::start_with(|c| {
        c.caller_budget = Some(Budget {
            per_minute: 1,
            burst: 2,
        })
    })
    .await;
    stack.enable_pay().await;
    let alice = stack.log_in("o_alice").await;
    let orders = ["T20261206000001", "T20261206000002", "T20261206000003"];
    for no in orders {
        stack.merchant(create(no, 100)).await.unwrap();
        let body = json!({"out_trade_no": no});
        let signed = pay_sign::FUNCTION
            .handle(&stack.state, authed_event("pay-sign.json", &alice, Some(&body)))
            .await;
        assert_eq!(signed.status(), 200);
    }
    for no in &orders[..2] {
        let (status, body) = read(&pay_sign::FUNCTION.handle(&stack.state, order_page(&alice, no)).await);
        assert_eq!((status, body["status"].as_str()), (200, Some("UNPAID")), "{body}");
    }
    let refused = pay_sign::FUNCTION
        .handle(&stack.state, order_page(&alice, orders[2]))
        .await;
    assert!(refused.headers().contains_key("retry-after"));
    let (status, body) = read(&refused);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("too_many_requests")),
        "{body}"
    );
    assert_eq!(stack.sim_calls("pay_query").await, 2);
}

#[tokio::test]
async fn an_unpaid_order_is_closed_at_wechat_pay_and_can_no_longer_be_paid() {
    let stack = Stack::start().await;
    stack.enable_pay().await;
    stack.merchant(create(ORDER, 100)).await.unwrap();
    let token = stack.log_in("o_alice").await;
    let body = json!({"out_trade_no": ORDER});
    let (status, _) = read(
        &pay_sign::FUNCTION
            .handle(&stack.state, authed_event("pay-sign.json", &token, Some(&body)))
            .await,
    );
    assert_eq!(status, 200);
    let closed = stack
        .merchant(json!({"op": "close_order", "out_trade_no": ORDER}))
        .await
        .unwrap();
    assert_eq!(closed["status"], "CLOSED");
    assert_eq!(stack.sim_calls("pay_close").await, 1);
    let (status, answer) = read(
        &pay_sign::FUNCTION
            .handle(&stack.state, authed_event("pay-sign.json", &token, Some(&body)))
            .await,
    );
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (409, Some("order_not_payable")),
        "{answer}"
    );
    let again = stack
        .merchant(json!({"op": "close_order", "out_trade_no": ORDER}))
        .await
        .unwrap_err();
    assert_eq!(code(&again), "order_not_payable");

    // A paid order is not closed.
    stack.paid_order("T20261126000003", "o_alice", 5, false).await;
    let error = stack
        .merchant(json!({"op": "close_order", "out_trade_no": "T20261126000003"}))
        .await
        .unwrap_err();
    assert_eq!(code(&error), "order_already_paid");
}

#[tokio::test]
async fn a_refund_is_applied_for_once_and_settled_by_its_notification() {
    let stack = Stack::start().await;
    stack.enable_pay().await;
    stack.paid_order(ORDER, "o_alice", 100, false).await;
    let refund = json!({"op": "refund", "out_trade_no": ORDER, "out_refund_no": "R20261126000001", "amount": 30, "reason": "a smaller cup"});
    let first = stack.merchant(refund.clone()).await.unwrap();
    assert_eq!(
        (first["status"].as_str(), first["amount"].as_u64()),
        (Some("PROCESSING"), Some(30))
    );
    // A retry (the answer was lost, say) reuses the out_refund_no: never a second refund.
    let retried = stack.merchant(refund.clone()).await.unwrap();
    assert_eq!(retried["out_refund_no"], first["out_refund_no"]);
    let mut other_amount = refund.clone();
    other_amount["amount"] = json!(31);
    assert_eq!(
        code(&stack.merchant(other_amount).await.unwrap_err()),
        "refund_conflict"
    );
    // What is left is 70: 71 more is refused before WeChat Pay is asked.
    let calls = stack.sim_calls("refund").await;
    let too_much = json!({"op": "refund", "out_trade_no": ORDER, "out_refund_no": "R20261126000002", "amount": 71});
    assert_eq!(
        code(&stack.merchant(too_much).await.unwrap_err()),
        "refund_exceeds_paid"
    );
    assert_eq!(stack.sim_calls("refund").await, calls);
    assert_eq!(stack.order(ORDER).await["refunded_total"].as_n().unwrap(), "30");

    // WeChat Pay settles it and notifies, a hundred times at once: one change of state.
    let before = stack.aws_calls.succeeded("DynamoDB.UpdateItem");
    let settled = stack
        .sim_post(
            "/__sim/pay/refund/settle",
            json!({"out_refund_no": "R20261126000001", "copies": 100}),
        )
        .await;
    let deliveries = settled["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 100);
    assert!(deliveries.iter().all(|d| d["status"] == 204), "{deliveries:?}");
    assert_eq!(
        stack.aws_calls.succeeded("DynamoDB.UpdateItem") - before,
        1,
        "one state change"
    );
    let stored = stack
        .merchant(json!({"op": "get_refund", "out_refund_no": "R20261126000001"}))
        .await
        .unwrap();
    assert_eq!(stored["status"], "SUCCESS");
    assert!(stored["refund_id"].as_str().is_some(), "{stored}");
}

#[tokio::test]
async fn fifty_concurrent_retries_of_one_refund_refund_once() {
    let stack = Stack::start().await;
    stack.enable_pay().await;
    stack.paid_order(ORDER, "o_alice", 100, false).await;
    let refund = json!({"op": "refund", "out_trade_no": ORDER, "out_refund_no": "R_SAME_1", "amount": 40});
    let mut set = tokio::task::JoinSet::new();
    let stack = std::sync::Arc::new(stack);
    for _ in 0..50 {
        let (stack, refund) = (stack.clone(), refund.clone());
        set.spawn(async move { stack.merchant(refund).await });
    }
    while let Some(answer) = set.join_next().await {
        let answer = answer.unwrap().unwrap();
        assert_eq!(answer["out_refund_no"], "R_SAME_1", "{answer}");
    }
    assert_eq!(
        stack.order(ORDER).await["refunded_total"].as_n().unwrap(),
        "40",
        "reserved once"
    );
    let at_wechat = stack
        .sim_post("/__sim/pay/refund/settle", json!({"out_refund_no": "R_SAME_1"}))
        .await;
    assert_eq!(
        at_wechat["refund"]["amount"]["refund"], 40,
        "one refund of 40 at WeChat Pay"
    );
}

#[tokio::test]
async fn concurrent_partial_refunds_never_exceed_what_was_paid() {
    let stack = std::sync::Arc::new(Stack::start().await);
    stack.enable_pay().await;
    stack.paid_order(ORDER, "o_alice", 100, false).await;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..10 {
        let stack = stack.clone();
        set.spawn(async move {
            stack
                .merchant(json!({"op": "refund", "out_trade_no": ORDER, "out_refund_no": format!("R_PART_{i}"), "amount": 30}))
                .await
        });
    }
    let (mut accepted, mut refused) = (0, 0);
    while let Some(answer) = set.join_next().await {
        match answer.unwrap() {
            Ok(_) => accepted += 1,
            Err(e) => {
                assert_eq!(code(&e), "refund_exceeds_paid", "{e}");
                refused += 1;
            }
        }
    }
    assert_eq!((accepted, refused), (3, 7), "3 × 30 fit in 100, a fourth does not");
    assert_eq!(stack.order(ORDER).await["refunded_total"].as_n().unwrap(), "90");
}

#[tokio::test]
async fn a_refund_whose_notification_was_lost_is_settled_by_get_refund() {
    let stack = Stack::start().await;
    stack.enable_pay().await;
    stack.refund_with_lost_notification(ORDER, "R_LOST_1", 100, 100).await;
    let refund = stack
        .merchant(json!({"op": "get_refund", "out_refund_no": "R_LOST_1"}))
        .await
        .unwrap();
    assert_eq!(refund["status"], "SUCCESS");
    assert_eq!(stack.sim_calls("refund_query").await, 1);
}

#[tokio::test]
async fn a_closed_refund_gives_its_amount_back() {
    let stack = Stack::start().await;
    stack.enable_pay().await;
    stack.paid_order(ORDER, "o_alice", 100, false).await;
    stack
        .merchant(json!({"op": "refund", "out_trade_no": ORDER, "out_refund_no": "R_CLOSE_1", "amount": 100}))
        .await
        .unwrap();
    let settled = stack
        .sim_post(
            "/__sim/pay/refund/settle",
            json!({"out_refund_no": "R_CLOSE_1", "status": "CLOSED"}),
        )
        .await;
    assert_eq!(settled["deliveries"][0]["status"], 204, "{settled}");
    assert_eq!(stack.order(ORDER).await["refunded_total"].as_n().unwrap(), "0");
    let again = json!({"op": "refund", "out_trade_no": ORDER, "out_refund_no": "R_CLOSE_2", "amount": 100});
    assert_eq!(stack.merchant(again).await.unwrap()["status"], "PROCESSING");
}

#[tokio::test]
async fn shipping_is_uploaded_for_a_paid_order_and_its_state_follows() {
    let stack = Stack::start().await;
    stack.enable_pay().await;
    stack.paid_order(ORDER, "o_alice", 100, false).await;
    let upload = json!({"op": "upload_shipping", "out_trade_no": ORDER, "logistics_type": 1, "delivery_mode": 1,
                        "shipping_list": [{"tracking_no": "SF1234567890", "express_company": "SF", "item_desc": "A cup of tea",
                                           "contact": {"receiver_contact": "138****0000"}}]});
    // WeChat knows a payment about a minute after it.
    let early = stack.merchant(upload.clone()).await.unwrap_err();
    assert_eq!(code(&early), "payment_not_found_at_wechat", "{early}");
    stack.sim_post("/__sim/time", json!({"advance_secs": 61})).await;
    let shipped = stack.merchant(upload).await.unwrap();
    assert_eq!(shipped["shipping_state"], "SHIPPED");
    let state = stack
        .merchant(json!({"op": "get_shipping_state", "out_trade_no": ORDER}))
        .await
        .unwrap();
    assert_eq!(state["order_state"], 2);
    let transaction_id = shipped["transaction_id"].as_str().unwrap();
    stack
        .sim_post(
            "/__sim/shipping/confirm-receive",
            json!({"transaction_id": transaction_id}),
        )
        .await;
    let state = stack
        .merchant(json!({"op": "get_shipping_state", "out_trade_no": ORDER}))
        .await
        .unwrap();
    assert_eq!(state["order_state"], 3);
    assert_eq!(stack.order(ORDER).await["shipping_state"].as_s().unwrap(), "CONFIRMED");
}

#[tokio::test]
async fn the_event_files_notification_of_a_refund_is_verified_like_a_payments() {
    // A refund notification with a bad signature is refused and changes nothing.
    let stack = Stack::start().await;
    stack.enable_pay().await;
    stack.paid_order(ORDER, "o_alice", 100, false).await;
    stack
        .merchant(json!({"op": "refund", "out_trade_no": ORDER, "out_refund_no": "R_FORGED_1", "amount": 10}))
        .await
        .unwrap();
    let forged = stack
        .sim_post(
            "/__sim/pay/refund/settle",
            json!({"out_refund_no": "R_FORGED_1", "mode": "tampered"}),
        )
        .await;
    assert_eq!(forged["deliveries"][0]["status"], 401, "{forged}");
    let refund = stack
        .merchant(json!({"op": "get_refund", "out_refund_no": "R_FORGED_1"}))
        .await;
    // Not from the notification; asked of WeChat Pay, it is settled now.
    assert_eq!(refund.unwrap()["status"], "SUCCESS");
}
