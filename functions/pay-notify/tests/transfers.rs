//! End to end: WeChat Pay's `MCHTRANSFER.BILL.FINISHED` notifications, held by the simulator and
//! delivered by the test — forged, concurrent, signed by the platform certificate or by the
//! WeChat Pay public key (as during a key switch) — to `pay-notify` over HTTP.

use serde_json::{Value, json};
use testkit::Stack;

fn transfer(no: &str) -> Value {
    json!({"op": "create_transfer", "out_bill_no": no, "openid": "o_alice", "amount": 500,
           "scene_id": "1000", "remark": "新会员开通有礼",
           "report_infos": [{"info_type": "活动名称", "info_content": "新会员有礼"}]})
}

/// A transfer waiting for o_alice, and its package.
async fn waiting(stack: &Stack, no: &str) -> String {
    stack.merchant(transfer(no)).await.unwrap();
    let bill = stack
        .merchant(json!({"op": "get_transfer", "out_bill_no": no}))
        .await
        .unwrap();
    assert_eq!(bill["state"], "WAIT_USER_CONFIRM");
    let item = stack
        .state
        .pay()
        .unwrap()
        .transfers()
        .unwrap()
        .get(no)
        .await
        .unwrap()
        .unwrap();
    item.package_info.expect("a package")
}

/// The one notification the simulator holds.
async fn take_one(stack: &Stack) -> Value {
    let taken = stack.sim_post("/__sim/pay/notifications/take", json!({})).await;
    let list = taken["notifications"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{taken}");
    list[0].clone()
}

/// POSTs `body` with `held`'s headers to pay-notify; its status.
async fn deliver(stack: &Stack, held: &Value, body: &str) -> u16 {
    let mut request = stack.http.post(held["url"].as_str().unwrap()).body(body.to_owned());
    for (name, value) in held["headers"].as_object().unwrap() {
        request = request.header(name.as_str(), value.as_str().unwrap());
    }
    request.send().await.unwrap().status().as_u16()
}

async fn state_of(stack: &Stack, no: &str) -> (String, Option<String>) {
    let t = stack
        .state
        .pay()
        .unwrap()
        .transfers()
        .unwrap()
        .get(no)
        .await
        .unwrap()
        .unwrap();
    (t.state, t.fail_reason)
}

#[tokio::test]
async fn a_transfer_notification_is_verified_first_and_recorded_once_whichever_key_signs_it() {
    let stack = Stack::start().await;
    stack.enable_pay().await;
    stack
        .sim_post("/__sim/pay/notifications/hold", json!({"hold": true}))
        .await;
    for (no, signer) in [("B20261126000001", "certificate"), ("B20261126000002", "public_key")] {
        stack.sim_post("/__sim/pay/signer", json!({"serial": signer})).await;
        let package = waiting(&stack, no).await;
        stack
            .sim_post(
                "/__sim/pay/transfer/confirm",
                json!({"package": package, "openid": "o_alice"}),
            )
            .await;
        let held = take_one(&stack).await;
        let body = held["body"].as_str().unwrap().to_owned();
        let serial = held["headers"]["Wechatpay-Serial"]
            .as_str()
            .or(held["headers"]["wechatpay-serial"].as_str())
            .unwrap_or_default()
            .to_owned();
        assert_eq!(serial.starts_with("PUB_KEY_ID_"), signer == "public_key", "{held}");
        assert!(body.contains("MCHTRANSFER.BILL.FINISHED"), "{body}");

        // One changed byte of the raw body, or a notification signed for another body: refused
        // before anything is read or written.
        let forged = body.replacen("\"id\":\"", "\"id\":\"X", 1);
        assert_ne!(forged, body);
        assert_eq!(deliver(&stack, &held, &forged).await, 401);
        let reserialized = serde_json::to_string_pretty(&serde_json::from_str::<Value>(&body).unwrap()).unwrap();
        assert_eq!(deliver(&stack, &held, &reserialized).await, 401);
        assert_eq!(state_of(&stack, no).await.0, "WAIT_USER_CONFIRM");

        // Ten copies at once: all acknowledged, the bill changed once.
        let writes = stack.aws_calls.succeeded("DynamoDB.UpdateItem");
        let copies: Vec<_> = (0..10)
            .map(|_| {
                let (http, held, body) = (stack.http.clone(), held.clone(), body.clone());
                tokio::spawn(async move {
                    let mut request = http.post(held["url"].as_str().unwrap()).body(body);
                    for (name, value) in held["headers"].as_object().unwrap() {
                        request = request.header(name.as_str(), value.as_str().unwrap());
                    }
                    request.send().await.unwrap().status().as_u16()
                })
            })
            .collect();
        for copy in copies {
            assert_eq!(copy.await.unwrap(), 204);
        }
        assert_eq!(
            stack.aws_calls.succeeded("DynamoDB.UpdateItem") - writes,
            1,
            "{signer}: recorded once"
        );
        assert_eq!(state_of(&stack, no).await.0, "SUCCESS");
    }
}

#[tokio::test]
async fn a_failed_transfer_is_recorded_with_its_reason_and_stays_failed() {
    let stack = Stack::start().await;
    stack.enable_pay().await;
    let no = "B20261126000003";
    waiting(&stack, no).await;
    let failed = stack
        .sim_post(
            "/__sim/pay/transfer/fail",
            json!({"out_bill_no": no, "reason": "PAYEE_ACCOUNT_ABNORMAL"}),
        )
        .await;
    assert_eq!(failed["deliveries"][0]["status"], 204, "{failed}");
    assert_eq!(
        state_of(&stack, no).await,
        ("FAIL".to_owned(), Some("PAYEE_ACCOUNT_ABNORMAL".to_owned()))
    );
    let alice = stack.log_in("o_alice").await;
    let text = std::fs::read_to_string(testkit::workspace_root().join("events/transfer-confirm.json")).unwrap();
    let mut request = lambda_http::request::from_str(&text.replace("B20261126000001", no)).unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {alice}").parse().unwrap());
    let (status, error) = testkit::read(
        &wxa_shared::handlers::pay_sign::FUNCTION
            .handle(&stack.state, request)
            .await,
    );
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (409, Some("transfer_failed"))
    );
}
