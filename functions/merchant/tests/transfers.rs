//! End to end on moto server and the simulator: merchant transfers to a user's wallet — created
//! by the back office, confirmed by the user through `POST /transfers/{out_bill_no}/confirm`,
//! settled by WeChat Pay's notification; a lost or unknown answer never loses a bill nor makes a
//! second one; a refusal ends it only when WeChat Pay has none; states only move forward.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Value, json};
use testkit::{Stack, read};
use wxa_shared::handlers::{pay_sign, reconciler};

const BILL: &str = "B20261126000001";

fn transfer(no: &str, openid: &str, amount: u64) -> Value {
    json!({"op": "create_transfer", "out_bill_no": no, "openid": openid, "amount": amount,
           "scene_id": "1000", "remark": "新会员开通有礼",
           "report_infos": [{"info_type": "活动名称", "info_content": "新会员有礼"},
                            {"info_type": "奖励说明", "info_content": "注册会员抽奖一等奖"}]})
}

fn code(error: &Value) -> &str {
    error["code"].as_str().unwrap_or_default()
}

/// `POST /transfers/{no}/confirm` with `token`, as API Gateway delivers it.
async fn confirm(stack: &Stack, token: &str, no: &str) -> (u16, Value) {
    let text = std::fs::read_to_string(testkit::workspace_root().join("events/transfer-confirm.json")).unwrap();
    let mut request = lambda_http::request::from_str(&text.replace(BILL, no)).unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    read(&pay_sign::FUNCTION.handle(&stack.state, request).await)
}

/// The transfer's item as stored.
async fn item(stack: &Stack, no: &str) -> HashMap<String, AttributeValue> {
    stack
        .dynamodb()
        .get_item()
        .table_name(format!("{}-transfers", stack.orders_table))
        .key("out_bill_no", AttributeValue::S(no.into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .expect("the transfer is stored")
}

fn text<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Option<&'a str> {
    item.get(name).and_then(|v| v.as_s().ok()).map(String::as_str)
}

async fn fault(stack: &Stack, fault: Value) {
    stack.sim_post("/__sim/faults", fault).await;
}

#[tokio::test]
async fn a_transfer_is_created_once_confirmed_by_its_user_and_settled_by_the_notification() {
    let stack = Stack::start().await;
    stack.enable_pay().await;
    let bill = stack.merchant(transfer(BILL, "o_alice", 500)).await.unwrap();
    assert_eq!(bill["state"], "WAIT_USER_CONFIRM", "{bill}");
    assert!(
        bill["transfer_bill_no"].as_str().is_some_and(|n| !n.is_empty()),
        "{bill}"
    );
    assert!(
        bill.get("package_info").is_none(),
        "the package is the user's, not the back office's"
    );
    // A retry is the same bill (one create at WeChat Pay); other content under the number is refused.
    let creates = stack.sim_calls("transfer_create").await;
    assert_eq!(stack.merchant(transfer(BILL, "o_alice", 500)).await.unwrap(), bill);
    assert_eq!(stack.sim_calls("transfer_create").await, creates);
    let conflict = stack.merchant(transfer(BILL, "o_alice", 600)).await.unwrap_err();
    assert_eq!(code(&conflict), "transfer_conflict");
    let conflict = stack.merchant(transfer(BILL, "o_bob", 500)).await.unwrap_err();
    assert_eq!(code(&conflict), "transfer_conflict");

    // Only its user gets the package; anyone else, and an unknown bill, hear the same 404.
    let alice = stack.log_in("o_alice").await;
    let bob = stack.log_in("o_bob").await;
    let (status, params) = confirm(&stack, &alice, BILL).await;
    assert_eq!(status, 200, "{params}");
    assert_eq!(params["mchId"], testkit::MCHID);
    assert_eq!(params["appId"], testkit::APP_ID);
    let package = params["package"].as_str().expect("a package").to_owned();
    assert_eq!(params.as_object().unwrap().len(), 3, "{params}");
    let (status, other) = confirm(&stack, &bob, BILL).await;
    let (unknown_status, unknown) = confirm(&stack, &bob, "B20261126999999").await;
    assert_eq!((status, code(&other["error"])), (404, "transfer_not_found"));
    assert_eq!(
        (unknown_status, &unknown["error"]["message"]),
        (404, &other["error"]["message"])
    );
    let (status, bad) = confirm(&stack, &alice, "B-1").await;
    assert_eq!((status, code(&bad["error"])), (400, "invalid_request"));

    // The user confirms in wx.requestMerchantTransfer; WeChat Pay notifies pay-notify.
    let confirmed = stack
        .sim_post(
            "/__sim/pay/transfer/confirm",
            json!({"package": package, "openid": "o_alice"}),
        )
        .await;
    assert_eq!(confirmed["deliveries"][0]["status"], 204, "{confirmed}");
    // Recorded by the notification itself (no query), and out of the pending index.
    let stored = item(&stack, BILL).await;
    assert_eq!(text(&stored, "state"), Some("SUCCESS"));
    assert!(!stored.contains_key("pending") && !stored.contains_key("pending_since"));
    let queries = stack.sim_calls("transfer_query").await;
    let settled = stack
        .merchant(json!({"op": "get_transfer", "out_bill_no": BILL}))
        .await
        .unwrap();
    assert_eq!(settled["state"], "SUCCESS");
    assert_eq!(
        stack.sim_calls("transfer_query").await,
        queries,
        "a final bill is not asked about"
    );
    let (status, again) = confirm(&stack, &alice, BILL).await;
    assert_eq!((status, code(&again["error"])), (409, "transfer_already_confirmed"));
    let cancel = stack
        .merchant(json!({"op": "cancel_transfer", "out_bill_no": BILL}))
        .await
        .unwrap_err();
    assert_eq!(code(&cancel), "transfer_not_cancellable");
}

#[tokio::test]
async fn commands_are_checked_before_anything_is_stored_or_sent() {
    let stack = Stack::start().await;
    stack.enable_pay().await;
    let mut no_infos = transfer("B20261126000002", "o_alice", 500);
    no_infos["report_infos"] = json!([]);
    let mut long_remark = transfer("B20261126000002", "o_alice", 500);
    long_remark["remark"] = json!("很".repeat(33));
    let mut extra = transfer("B20261126000002", "o_alice", 500);
    extra["is_admin"] = json!(true);
    let mut amount_text = transfer("B20261126000002", "o_alice", 500);
    amount_text["amount"] = json!("500");
    let mut blank_name = transfer("B20261126000002", "o_alice", 500);
    blank_name["user_name"] = json!("  ");
    for command in [
        json!({"op": "create_transfer"}),
        transfer("B-1", "o_alice", 500),
        transfer("B20261126000002", "o alice; drop", 500),
        transfer("B20261126000002", "o_alice", 0),
        transfer("B20261126000002", "o_alice", u64::MAX),
        // From 2,000 CNY WeChat Pay requires the user's name.
        transfer("B20261126000002", "o_alice", 200_000),
        no_infos,
        long_remark,
        extra,
        amount_text,
        blank_name,
        json!({"op": "get_transfer", "out_bill_no": "x"}),
        json!({"op": "cancel_transfer"}),
    ] {
        let error = stack.merchant(command.clone()).await.unwrap_err();
        assert_eq!(code(&error), "invalid_command", "{command}: {error}");
    }
    for op in ["get_transfer", "cancel_transfer"] {
        let error = stack
            .merchant(json!({"op": op, "out_bill_no": "B20261126000404"}))
            .await
            .unwrap_err();
        assert_eq!(code(&error), "transfer_not_found", "{op}");
    }
    assert_eq!(stack.sim_calls("transfer_create").await, 0);
}

#[tokio::test]
async fn the_users_name_is_sealed_for_wechat_pay_and_never_kept_in_the_clear() {
    let stack = Stack::start().await;
    stack.enable_pay().await;
    let mut command = transfer(BILL, "o_alice", 300_000);
    command["user_name"] = json!("张三丰");
    // The simulator decrypts it with its private key (RSA-OAEP SHA-1) and requires the
    // Wechatpay-Serial of the key it was sealed with.
    let bill = stack.merchant(command.clone()).await.unwrap();
    assert_eq!(bill["state"], "WAIT_USER_CONFIRM", "{bill}");
    assert_eq!(bill["has_user_name"], true);
    assert!(!bill.to_string().contains("张三丰"));
    let stored = item(&stack, BILL).await;
    assert!(!format!("{stored:?}").contains("张三丰"), "{stored:?}");
    assert!(text(&stored, "user_name_key_id").is_some_and(|id| id.starts_with("PUB_KEY_ID_")));
    // A retry with the same name is the same bill; without one it is another bill's number.
    assert_eq!(stack.merchant(command).await.unwrap(), bill);
    let error = stack.merchant(transfer(BILL, "o_alice", 300_000)).await.unwrap_err();
    assert_eq!(code(&error), "invalid_command", "still required: {error}");
}

#[tokio::test]
async fn a_create_whose_answer_is_lost_is_asked_about_and_never_made_twice() {
    let stack = Stack::start().await;
    stack.enable_pay().await;
    // It lands at WeChat Pay, but neither the answer nor the retry's answer arrives.
    fault(&stack, json!({"api": "transfer_create", "cut": "after", "count": 2})).await;
    let error = stack.merchant(transfer(BILL, "o_alice", 500)).await.unwrap_err();
    assert_eq!(code(&error), "wechatpay_unavailable", "{error}");
    let stored = item(&stack, BILL).await;
    assert_eq!(text(&stored, "state"), Some("CREATING"));
    assert_eq!(text(&stored, "pending"), Some("transfer"), "the reconciler will see it");
    // The user's page asks before the back office does: WeChat Pay has the bill; its package
    // comes from sending the same create again, which answers the same bill.
    let alice = stack.log_in("o_alice").await;
    let (status, params) = confirm(&stack, &alice, BILL).await;
    assert_eq!(status, 200, "{params}");
    let bill = stack
        .merchant(json!({"op": "get_transfer", "out_bill_no": BILL}))
        .await
        .unwrap();
    assert_eq!(bill["state"], "WAIT_USER_CONFIRM");
    let at_wechat = stack
        .sim_post(
            "/__sim/pay/transfer/confirm",
            json!({"package": params["package"], "openid": "o_alice"}),
        )
        .await;
    assert_eq!(
        at_wechat["bill"]["transfer_bill_no"], bill["transfer_bill_no"],
        "one bill"
    );
    assert_eq!(at_wechat["deliveries"][0]["status"], 204);
}

#[tokio::test]
async fn a_create_that_never_landed_is_sent_again_under_the_same_number() {
    let stack = Stack::start().await;
    stack.enable_pay().await;
    // Never lands (twice: the client's one retry too); then WeChat Pay is rate limiting.
    fault(&stack, json!({"api": "transfer_create", "cut": "before", "count": 2})).await;
    let error = stack.merchant(transfer(BILL, "o_alice", 500)).await.unwrap_err();
    assert_eq!(code(&error), "wechatpay_unavailable", "{error}");
    fault(
        &stack,
        // Twice: a 429 is worth the client's one retry.
        json!({"api": "transfer_create", "pay_error": {"status": 429, "code": "FREQUENCY_LIMITED"}, "count": 2}),
    )
    .await;
    let no429 = "B20261126000429";
    let error = stack.merchant(transfer(no429, "o_alice", 500)).await.unwrap_err();
    assert_ne!(code(&error), "invalid_command");
    for no in [BILL, no429] {
        let stored = item(&stack, no).await;
        assert_eq!(text(&stored, "state"), Some("CREATING"), "{no}: a 429 is not a refusal");
    }
    // The reconciler finds both in the pending index: WeChat Pay knows neither, so each is sent
    // again with its own out_bill_no; and the back office's retry agrees.
    let before = stack.sim_calls("transfer_query").await;
    let report = reconciler::reconcile_at(&stack.state, wxa_shared::clock::now_unix() + 600)
        .await
        .unwrap();
    assert_eq!(report["transfers_checked"], 2, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert!(
        stack.sim_calls("transfer_query").await >= before + 2,
        "asked before sending again"
    );
    for no in [BILL, no429] {
        assert_eq!(
            text(&item(&stack, no).await, "state"),
            Some("WAIT_USER_CONFIRM"),
            "{no}"
        );
    }
    let retried = stack.merchant(transfer(BILL, "o_alice", 500)).await.unwrap();
    assert_eq!(retried["state"], "WAIT_USER_CONFIRM");
}

#[tokio::test]
async fn a_refusal_ends_the_bill_only_when_wechat_pay_has_none() {
    let stack = Stack::start().await;
    stack.enable_pay().await;
    fault(
        &stack,
        json!({"api": "transfer_create", "pay_error": {"status": 403, "code": "NOT_ENOUGH"}}),
    )
    .await;
    let bill = stack.merchant(transfer(BILL, "o_alice", 500)).await.unwrap();
    assert_eq!(
        (bill["state"].as_str(), bill["fail_reason"].as_str()),
        (Some("FAIL"), Some("NOT_ENOUGH"))
    );
    assert!(!item(&stack, BILL).await.contains_key("pending"));
    // Final: a retry answers it as it is and sends nothing (a new out_bill_no pays again).
    let creates = stack.sim_calls("transfer_create").await;
    assert_eq!(stack.merchant(transfer(BILL, "o_alice", 500)).await.unwrap(), bill);
    assert_eq!(stack.sim_calls("transfer_create").await, creates);

    // A refused create whose number WeChat Pay does have (made by an earlier request) takes
    // WeChat Pay's state, not FAIL.
    let other = "B20261126000002";
    stack.merchant(transfer(other, "o_alice", 500)).await.unwrap();
    stack
        .dynamodb()
        .update_item()
        .table_name(format!("{}-transfers", stack.orders_table))
        .key("out_bill_no", AttributeValue::S(other.into()))
        .update_expression("SET #s = :c, #r = :zero")
        .expression_attribute_names("#s", "state")
        .expression_attribute_names("#r", "rank")
        .expression_attribute_values(":c", AttributeValue::S("CREATING".into()))
        .expression_attribute_values(":zero", AttributeValue::N("0".into()))
        .send()
        .await
        .unwrap();
    // A query that cannot answer is no answer: it stays CREATING (and the command fails).
    fault(&stack, json!({"api": "transfer_query", "cut": "before", "count": 2})).await;
    let bill = stack
        .merchant(json!({"op": "get_transfer", "out_bill_no": other}))
        .await;
    assert!(bill.is_err(), "{bill:?}");
    assert_eq!(text(&item(&stack, other).await, "state"), Some("CREATING"));
    // WeChat Pay says it does not know it, then refuses the re-sent create: asked again, it has
    // the bill after all, and its state is recorded.
    fault(
        &stack,
        json!({"api": "transfer_query", "pay_error": {"status": 404, "code": "NOT_FOUND"}}),
    )
    .await;
    fault(
        &stack,
        json!({"api": "transfer_create", "pay_error": {"status": 400, "code": "INVALID_REQUEST"}}),
    )
    .await;
    let bill = stack
        .merchant(json!({"op": "get_transfer", "out_bill_no": other}))
        .await
        .unwrap();
    assert_eq!(bill["state"], "WAIT_USER_CONFIRM", "{bill}");
}

#[tokio::test]
async fn a_bill_the_user_has_not_confirmed_is_cancelled() {
    let stack = Stack::start().await;
    stack.enable_pay().await;
    stack.merchant(transfer(BILL, "o_alice", 500)).await.unwrap();
    let cancelled = stack
        .merchant(json!({"op": "cancel_transfer", "out_bill_no": BILL}))
        .await
        .unwrap();
    assert!(
        ["CANCELING", "CANCELLED"].contains(&cancelled["state"].as_str().unwrap()),
        "{cancelled}"
    );
    // Cancelling again is answered as it is.
    let again = stack
        .merchant(json!({"op": "cancel_transfer", "out_bill_no": BILL}))
        .await
        .unwrap();
    assert!(["CANCELING", "CANCELLED"].contains(&again["state"].as_str().unwrap()));
    let alice = stack.log_in("o_alice").await;
    let (status, error) = confirm(&stack, &alice, BILL).await;
    assert_eq!((status, code(&error["error"])), (409, "transfer_cancelled"));
    // WeChat Pay's CANCELLED arrives (notification or query) and is final.
    let mut state = String::new();
    for _ in 0..50 {
        let bill = stack
            .merchant(json!({"op": "get_transfer", "out_bill_no": BILL}))
            .await
            .unwrap();
        state = bill["state"].as_str().unwrap().to_owned();
        if state == "CANCELLED" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(state, "CANCELLED");
    assert!(!item(&stack, BILL).await.contains_key("pending"));
}

#[tokio::test]
async fn states_are_recorded_once_and_never_move_back() {
    use wxa_shared::pay::transfer::TransferBill;
    use wxa_shared::store::transfers::Change;
    let stack = Stack::start().await;
    stack.enable_pay().await;
    stack.merchant(transfer(BILL, "o_alice", 500)).await.unwrap();
    let transfers = stack.state.pay().unwrap().transfers().unwrap().clone();
    let report = |state: &str| TransferBill {
        out_bill_no: BILL.into(),
        state: state.into(),
        ..TransferBill::default()
    };
    // Twenty copies of one report, at once: one changes the bill.
    let copies: Vec<_> = (0..20)
        .map(|_| {
            let transfers = transfers.clone();
            let bill = report("TRANSFERING");
            tokio::spawn(async move { transfers.record(&bill, 1).await.unwrap() })
        })
        .collect();
    let mut changed = 0;
    for copy in copies {
        if copy.await.unwrap() == Change::Changed {
            changed += 1;
        }
    }
    assert_eq!(changed, 1);
    // A stale report never moves it back; a final one ends it; nothing leaves a final state.
    assert_eq!(
        transfers.record(&report("WAIT_USER_CONFIRM"), 2).await.unwrap(),
        Change::Unchanged
    );
    assert_eq!(transfers.record(&report("SUCCESS"), 3).await.unwrap(), Change::Changed);
    for state in ["FAIL", "CANCELLED", "CANCELING", "SUCCESS", "NO_SUCH_STATE"] {
        assert_eq!(
            transfers.record(&report(state), 4).await.unwrap(),
            Change::Unchanged,
            "{state}"
        );
    }
    assert_eq!(transfers.fail_unsent(BILL, "x", 5).await.unwrap(), Change::Unchanged);
    assert_eq!(transfers.get(BILL).await.unwrap().unwrap().state, "SUCCESS");
    assert!(transfers.pending(u64::MAX, 100, None).await.unwrap().keys.is_empty());
}
