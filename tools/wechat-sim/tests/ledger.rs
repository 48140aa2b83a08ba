//! The controls a model-based test of the payment ledger drives: WeChat Pay faults at every call,
//! held notifications, the ledger as WeChat Pay keeps it, merchant transfers, the signing serial.

mod common;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::shop::{MCHID, Shop, refund_request};

impl Shop {
    async fn fault(&self, fault: Value) {
        let (status, answer) = self.sim.post_status("/__sim/faults", fault).await;
        assert_eq!(status, 204, "{answer}");
    }

    async fn count(&self, api: &str) -> u64 {
        self.sim.get("/__sim/requests", &[]).await["counts"][api]
            .as_u64()
            .unwrap_or(0)
    }
}

// ---- A. Faults ----

#[tokio::test]
async fn a_pay_error_answers_signed_and_changes_nothing() {
    let shop = Shop::open().await;
    shop.paid_order("T1000001", 100).await;
    shop.fault(
        json!({"api": "refund", "pay_error": {"status": 429, "code": "FREQUENCY_LIMITED", "message": "slow down"}}),
    )
    .await;
    let (status, refused) = shop.refund(refund_request("T1000001", "R1000001", 30, 100)).await;
    assert_eq!(
        (status, &refused),
        (429, &json!({"code": "FREQUENCY_LIMITED", "message": "slow down"}))
    );
    let (status, missing) = shop.refund_query("R1000001").await;
    assert_eq!(
        (status, &missing["code"]),
        (404, &json!("RESOURCE_NOT_EXISTS")),
        "no refund was made"
    );
    assert_eq!(shop.ledger().await["refunds"], json!([]));

    shop.fault(json!({"api": "pay_jsapi", "pay_error": {"status": 500, "code": "SYSTEM_ERROR"}}))
        .await;
    let order = json!({
        "appid": common::APP_ID, "mchid": MCHID, "description": "tea", "out_trade_no": "T1000002",
        "notify_url": shop.notify_url, "amount": {"total": 100, "currency": "CNY"}, "payer": {"openid": "o"},
    });
    let (status, failed) = shop.v3("POST", "/v3/pay/transactions/jsapi", Some(&order)).await;
    assert_eq!((status, &failed["code"]), (500, &json!("SYSTEM_ERROR")));
    assert_eq!(shop.query("T1000002").await.0, 404, "no order was made");
    assert_eq!(shop.count("refund").await, 1, "the refused call is counted");

    for bad in [
        json!({"api": "refund", "pay_error": {"status": 200, "code": "X"}}),
        json!({"api": "refund", "pay_error": {"status": 400, "code": "X"}, "cut": "before"}),
        json!({"api": "refund", "cut": "sideways"}),
    ] {
        let url = format!("{}/__sim/faults", shop.sim.server.base_url());
        let refused = shop.sim.http.post(url).json(&bad).send().await.unwrap();
        assert!(refused.status().is_client_error(), "{bad}");
    }
}

#[tokio::test]
async fn a_cut_before_loses_the_request_and_a_cut_after_loses_only_the_answer() {
    let shop = Shop::open().await;
    shop.paid_order("T2000001", 100).await;
    let request = refund_request("T2000001", "R2000001", 30, 100);
    let url = "/v3/refund/domestic/refunds";

    shop.fault(json!({"api": "refund", "cut": "before"})).await;
    let text = request.to_string();
    let raw = shop
        .sim
        .http
        .post(format!("{}{url}", shop.sim.server.base_url()))
        .header("authorization", shop.authorization("POST", url, &text))
        .body(text);
    let lost = raw.send().await.expect_err("not even a status line arrives");
    assert!(!lost.is_timeout(), "{lost}");
    assert_eq!(shop.refund_query("R2000001").await.0, 404, "the request never landed");

    shop.fault(json!({"api": "refund", "cut": "after"})).await;
    let lost = shop.try_v3("POST", url, Some(&request), None, &[]).await;
    assert!(lost.is_err(), "a transport error, not an answer");
    let (status, landed) = shop.refund_query("R2000001").await;
    assert_eq!(
        (status, &landed["status"]),
        (200, &json!("PROCESSING")),
        "the request landed"
    );

    let (status, retried) = shop.refund(request).await;
    assert_eq!(
        (status, &retried["refund_id"]),
        (200, &landed["refund_id"]),
        "a retry answers the same refund"
    );

    // A cut on an answer without a body (204) too.
    shop.order("T2000002", 100).await;
    shop.fault(json!({"api": "pay_close", "cut": "after"})).await;
    let close = "/v3/pay/transactions/out-trade-no/T2000002/close";
    assert!(
        shop.try_v3("POST", close, Some(&json!({"mchid": MCHID})), None, &[])
            .await
            .is_err()
    );
    assert_eq!(shop.query("T2000002").await.1["trade_state"], "CLOSED");
    assert_eq!(shop.count("refund").await, 3);
}

#[tokio::test]
async fn delay_after_processes_then_answers_late() {
    let shop = Shop::open().await;
    shop.paid_order("T3000001", 100).await;
    shop.fault(json!({"api": "refund", "delay_after_ms": 1500})).await;
    let request = refund_request("T3000001", "R3000001", 30, 100).to_string();
    let url = "/v3/refund/domestic/refunds";
    let impatient = shop
        .sim
        .http
        .post(format!("{}{url}", shop.sim.server.base_url()))
        .header("content-type", "application/json")
        .header("authorization", shop.authorization("POST", url, &request))
        .timeout(Duration::from_millis(300))
        .body(request);
    let started = Instant::now();
    let timed_out = impatient.send().await.expect_err("the client gives up first");
    assert!(timed_out.is_timeout(), "{timed_out}");
    assert!(started.elapsed() < Duration::from_millis(1000));
    let (status, landed) = shop.refund_query("R3000001").await;
    assert_eq!(
        (status, &landed["status"]),
        (200, &json!("PROCESSING")),
        "processed before the wait"
    );

    shop.fault(json!({"api": "pay_query", "delay_after_ms": 200})).await;
    let started = Instant::now();
    assert_eq!(shop.query("T3000001").await.0, 200, "a patient client gets the answer");
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn faults_apply_to_query_endpoints_by_their_api_names() {
    let shop = Shop::open().await;
    shop.paid_order("T4000001", 100).await;
    shop.fault(json!({"api": "pay_query", "count": 2, "pay_error": {"status": 403, "code": "NO_AUTH"}}))
        .await;
    assert_eq!(shop.query("T4000001").await.1["code"], "NO_AUTH");
    assert_eq!(shop.query("T4000001").await.1["code"], "NO_AUTH");
    assert_eq!(shop.query("T4000001").await.1["trade_state"], "SUCCESS", "used up");
    shop.fault(json!({"api": "refund_query", "cut": "before"})).await;
    assert!(
        shop.try_v3("GET", "/v3/refund/domestic/refunds/R-none", None, None, &[])
            .await
            .is_err()
    );
    assert_eq!(shop.count("pay_query").await, 3);
    assert_eq!(shop.count("refund_query").await, 1);
}

// ---- B. Held notifications ----

impl Shop {
    async fn hold(&self, hold: bool) {
        let answer = self
            .sim
            .post("/__sim/pay/notifications/hold", json!({"hold": hold}))
            .await;
        assert_eq!(answer["hold"], hold);
    }

    async fn held(&self) -> Vec<Value> {
        let answer = self.sim.get("/__sim/pay/notifications", &[]).await;
        answer["notifications"].as_array().unwrap().clone()
    }

    async fn take(&self) -> Vec<Value> {
        let answer = self.sim.post("/__sim/pay/notifications/take", json!({})).await;
        answer["notifications"].as_array().unwrap().clone()
    }

    /// Delivers a held notification to its url as the simulator would have; the status.
    async fn deliver(&self, held: &Value) -> u16 {
        let mut request = self.sim.http.post(held["url"].as_str().unwrap());
        for (name, value) in held["headers"].as_object().unwrap() {
            request = request.header(name, value.as_str().unwrap());
        }
        let body = held["body"].as_str().unwrap().to_owned();
        request.body(body).send().await.unwrap().status().as_u16()
    }
}

#[tokio::test]
async fn held_payment_notifications_are_queued_fully_formed_for_the_test_to_deliver() {
    let shop = Shop::open().await;
    shop.hold(true).await;
    let prepay_id = shop.order("T5000001", 100).await;
    let paid = shop
        .sim
        .post("/__sim/pay/complete", json!({"prepay_id": prepay_id, "copies": 2}))
        .await;
    assert_eq!(paid["deliveries"], json!([{"held": 1}, {"held": 2}]));
    assert!(shop.inbox.received().is_empty(), "nothing is sent while held");
    let held = shop.held().await;
    assert_eq!(held.len(), 2);
    let first = &held[0];
    assert_eq!(
        (&first["id"], &first["kind"], &first["key"], &first["state"]),
        (&json!(1), &json!("transaction"), &json!("T5000001"), &json!("SUCCESS"))
    );
    assert_eq!(first["url"], shop.notify_url.as_str());
    assert_eq!(
        first["headers"]["wechatpay-signature-type"],
        "WECHATPAY2-SHA256-RSA2048"
    );
    assert_eq!(shop.held().await.len(), 2, "listing does not take");

    let taken = shop.take().await;
    assert_eq!(taken, held);
    assert!(shop.held().await.is_empty(), "taking clears the queue");
    // Delivered by the test, twice and in reverse order: exactly what the simulator would send.
    assert_eq!(shop.deliver(&taken[1]).await, 204);
    assert_eq!(shop.deliver(&taken[0]).await, 204);
    let received = shop.inbox.received();
    assert_eq!(received.len(), 2);
    let (envelope, resource) = shop.unseal(&received[0]);
    assert_eq!(envelope["event_type"], "TRANSACTION.SUCCESS");
    assert_eq!(resource["out_trade_no"], "T5000001");
    assert_eq!(resource["transaction_id"], paid["transaction_id"]);

    // A dropped notification is not queued; released, notifications are sent again.
    let dropped = shop.order("T5000002", 100).await;
    shop.sim
        .post("/__sim/pay/complete", json!({"prepay_id": dropped, "mode": "drop"}))
        .await;
    assert!(shop.held().await.is_empty());
    shop.hold(false).await;
    shop.paid_order("T5000003", 100).await;
    assert_eq!(shop.inbox.received().len(), 3);
    assert!(shop.held().await.is_empty());
}

#[tokio::test]
async fn held_refund_notifications_cover_settle_and_the_clock() {
    let shop = Shop::open().await;
    shop.paid_order("T6000001", 100).await;
    shop.hold(true).await;
    let with_url = |out_refund_no: &str, refund: u64| {
        let mut request = refund_request("T6000001", out_refund_no, refund, 100);
        request["notify_url"] = json!(shop.notify_url);
        request
    };
    shop.refund(with_url("R6000001", 10)).await;
    let settled = shop
        .sim
        .post(
            "/__sim/pay/refund/settle",
            json!({"out_refund_no": "R6000001", "status": "ABNORMAL"}),
        )
        .await;
    assert_eq!(settled["deliveries"], json!([{"held": 1}]));

    shop.refund(with_url("R6000002", 20)).await;
    let moved = shop.sim.post("/__sim/time", json!({"advance_secs": 60})).await;
    assert_eq!(moved["refunds_settled"][0]["out_refund_no"], "R6000002");
    assert_eq!(moved["refunds_settled"][0]["deliveries"], json!([{"held": 2}]));

    let taken = shop.take().await;
    let labels: Vec<_> = taken
        .iter()
        .map(|n| (n["kind"].clone(), n["key"].clone(), n["state"].clone()))
        .collect();
    assert_eq!(
        labels,
        [
            (json!("refund"), json!("R6000001"), json!("ABNORMAL")),
            (json!("refund"), json!("R6000002"), json!("SUCCESS")),
        ]
    );
    assert_eq!(
        shop.inbox.received().len(),
        1,
        "only the payment's notification was sent"
    );
    assert_eq!(shop.deliver(&taken[1]).await, 204);
    let (envelope, resource) = shop.unseal(&shop.inbox.received()[1]);
    assert_eq!(envelope["event_type"], "REFUND.SUCCESS");
    assert_eq!(resource["out_refund_no"], "R6000002");
}

// ---- C. The ledger ----

impl Shop {
    async fn ledger(&self) -> Value {
        self.sim.get("/__sim/pay/ledger", &[]).await
    }
}

#[tokio::test]
async fn the_ledger_lists_orders_and_refunds_as_wechat_pay_keeps_them() {
    let shop = Shop::open().await;
    assert_eq!(
        shop.ledger().await,
        json!({"orders": [], "refunds": [], "transfers": []})
    );
    let transaction_id = shop.paid_order("T7000001", 100).await;
    shop.order("T7000002", 50).await;
    let (_, first) = shop.refund(refund_request("T7000001", "R7000001", 30, 100)).await;
    let (_, second) = shop.refund(refund_request("T7000001", "R7000002", 70, 100)).await;
    // The same out_refund_no again answers the same refund, and adds nothing.
    let (status, again) = shop.refund(refund_request("T7000001", "R7000001", 30, 100)).await;
    assert_eq!((status, &again["refund_id"]), (200, &first["refund_id"]));
    // Non-closed refunds never add up to more than the order.
    let (status, over) = shop.refund(refund_request("T7000001", "R7000003", 1, 100)).await;
    assert_eq!((status, &over["code"]), (400, &json!("INVALID_REQUEST")), "{over}");
    shop.sim
        .post(
            "/__sim/pay/refund/settle",
            json!({"out_refund_no": "R7000002", "status": "CLOSED"}),
        )
        .await;
    let (status, _) = shop.refund(refund_request("T7000001", "R7000003", 71, 100)).await;
    assert_eq!(status, 400, "30 + 71 > 100 once the closed refund gave its 70 back");
    let (status, _) = shop.refund(refund_request("T7000001", "R7000003", 70, 100)).await;
    assert_eq!(status, 200);

    let ledger = shop.ledger().await;
    assert_eq!(
        ledger["orders"],
        json!([
            {"out_trade_no": "T7000001", "trade_state": "REFUND", "total": 100, "transaction_id": transaction_id},
            {"out_trade_no": "T7000002", "trade_state": "NOTPAY", "total": 50, "transaction_id": null},
        ])
    );
    let refunds = ledger["refunds"].as_array().unwrap();
    let summary: Vec<_> = refunds
        .iter()
        .map(|r| (r["out_refund_no"].clone(), r["status"].clone(), r["refund"].clone()))
        .collect();
    assert_eq!(
        summary,
        [
            (json!("R7000001"), json!("PROCESSING"), json!(30)),
            (json!("R7000002"), json!("CLOSED"), json!(70)),
            (json!("R7000003"), json!("PROCESSING"), json!(70)),
        ]
    );
    assert_eq!(refunds[0]["refund_id"], first["refund_id"]);
    assert_eq!(refunds[1]["refund_id"], second["refund_id"]);
    assert!(refunds.iter().all(|r| r["out_trade_no"] == "T7000001"));

    // By the clock, refunds settle; the ledger shows it.
    shop.sim.post("/__sim/time", json!({"advance_secs": 60})).await;
    let statuses: Vec<_> = shop.ledger().await["refunds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].clone())
        .collect();
    assert_eq!(statuses, [json!("SUCCESS"), json!("CLOSED"), json!("SUCCESS")]);
}

// ---- D. Merchant transfers ----

const BILLS: &str = "/v3/fund-app/mch-transfer/transfer-bills";
const PAYEE: &str = "o_payee";

/// A transfer of `amount` fen to PAYEE, notified to the shop.
fn bill(shop: &Shop, out_bill_no: &str, amount: u64) -> Value {
    json!({
        "appid": common::APP_ID, "out_bill_no": out_bill_no, "transfer_scene_id": "1005", "openid": PAYEE,
        "transfer_amount": amount, "transfer_remark": "November commission", "notify_url": shop.notify_url,
        "user_recv_perception": "劳务报酬",
        "transfer_scene_report_infos": [
            {"info_type": "岗位类型", "info_content": "外卖员"},
            {"info_type": "报酬说明", "info_content": "11月份佣金"},
        ],
    })
}

/// `name` encrypted for WeChat Pay as merchants do: RSA-OAEP (SHA-1, MGF1-SHA-1) with the
/// platform public key, base64.
fn encrypted(shop: &Shop, name: &str) -> String {
    use aws_lc_rs::rsa::{OAEP_SHA1_MGF1SHA1, OaepPublicEncryptingKey, PublicEncryptingKey};
    use base64::Engine;
    let key = OaepPublicEncryptingKey::new(PublicEncryptingKey::from_der(&shop.platform).unwrap()).unwrap();
    let mut out = vec![0; key.ciphertext_size()];
    let sealed = key
        .encrypt(&OAEP_SHA1_MGF1SHA1, name.as_bytes(), &mut out, None)
        .unwrap();
    base64::engine::general_purpose::STANDARD.encode(sealed)
}

impl Shop {
    async fn transfer(&self, body: &Value) -> (u16, Value) {
        self.v3("POST", BILLS, Some(body)).await
    }

    async fn transfer_with_serial(&self, body: &Value, serial: &str) -> (u16, Value) {
        let answer = self
            .try_v3("POST", BILLS, Some(body), None, &[("wechatpay-serial", serial)])
            .await
            .unwrap();
        assert!(answer.verified);
        (answer.status, answer.body)
    }

    async fn bill_by_out_no(&self, out_bill_no: &str) -> (u16, Value) {
        self.v3("GET", &format!("{BILLS}/out-bill-no/{out_bill_no}"), None)
            .await
    }

    async fn cancel(&self, out_bill_no: &str) -> (u16, Value) {
        self.v3("POST", &format!("{BILLS}/out-bill-no/{out_bill_no}/cancel"), None)
            .await
    }

    async fn confirm(&self, package: &Value, openid: &str) -> (u16, Value) {
        self.sim
            .post_status(
                "/__sim/pay/transfer/confirm",
                json!({"package": package, "openid": openid}),
            )
            .await
    }
}

#[tokio::test]
async fn transfers_are_created_once_and_queried_by_either_number() {
    let shop = Shop::open().await;
    let (status, created) = shop.transfer(&bill(&shop, "B10000001", 500)).await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["out_bill_no"], "B10000001");
    assert_eq!(created["state"], "WAIT_USER_CONFIRM");
    assert!(created["create_time"].as_str().unwrap().ends_with("+08:00"));
    assert!(!created["package_info"].as_str().unwrap().is_empty());
    let transfer_bill_no = created["transfer_bill_no"].as_str().unwrap().to_owned();

    let (status, again) = shop.transfer(&bill(&shop, "B10000001", 500)).await;
    assert_eq!((status, &again), (200, &created), "the same bill");
    let (status, conflict) = shop.transfer(&bill(&shop, "B10000001", 600)).await;
    assert_eq!((status, &conflict["code"]), (400, &json!("INVALID_REQUEST")));

    let (status, by_out) = shop.bill_by_out_no("B10000001").await;
    assert_eq!(status, 200);
    assert_eq!(by_out["mch_id"], MCHID);
    assert_eq!(by_out["appid"], common::APP_ID);
    assert_eq!(by_out["transfer_bill_no"], transfer_bill_no.as_str());
    assert_eq!(by_out["state"], "WAIT_USER_CONFIRM");
    assert_eq!(by_out["transfer_amount"], 500);
    assert_eq!(by_out["transfer_remark"], "November commission");
    assert_eq!(by_out["openid"], PAYEE);
    assert!(by_out.get("fail_reason").is_none());
    let (status, by_wechat) = shop
        .v3("GET", &format!("{BILLS}/transfer-bill-no/{transfer_bill_no}"), None)
        .await;
    assert_eq!((status, &by_wechat), (200, &by_out));
    for url in [
        format!("{BILLS}/out-bill-no/B-unknown"),
        format!("{BILLS}/transfer-bill-no/1330000"),
    ] {
        let (status, missing) = shop.v3("GET", &url, None).await;
        assert_eq!((status, &missing["code"]), (404, &json!("NOT_FOUND")), "{url}");
    }

    let refused = |change: fn(&mut Value)| {
        let mut body = bill(&shop, "B10000002", 500);
        change(&mut body);
        body
    };
    for (body, code) in [
        (refused(|b| b["out_bill_no"] = json!("B1")), "PARAM_ERROR"),
        (refused(|b| b["out_bill_no"] = json!("B-1000002")), "PARAM_ERROR"),
        (refused(|b| b["transfer_amount"] = json!(9)), "PARAM_ERROR"),
        (refused(|b| b["transfer_amount"] = json!(2_000_001)), "PARAM_ERROR"),
        (refused(|b| b["transfer_remark"] = json!("x".repeat(33))), "PARAM_ERROR"),
        (refused(|b| b["transfer_scene_report_infos"] = json!([])), "PARAM_ERROR"),
        (
            refused(|b| b["transfer_scene_report_infos"] = json!([{"info_type": "岗位类型"}])),
            "PARAM_ERROR",
        ),
        (refused(|b| b["openid"] = json!("")), "PARAM_ERROR"),
        (refused(|b| b["transfer_scene_id"] = json!("1009")), "NO_AUTH"),
        (
            refused(|b| b["appid"] = json!("wx0000000000000000")),
            "APPID_MCHID_NOT_MATCH",
        ),
    ] {
        let (status, answer) = shop.transfer(&body).await;
        assert_eq!(answer["code"], code, "{body}");
        assert!(status == 400 || status == 403);
    }
    let (status, _) = shop.transfer(&refused(|b| b["transfer_amount"] = json!(10))).await;
    assert_eq!(status, 200, "10 fen is the least");

    // Faults apply: a refused create makes nothing, a cut one made its bill.
    shop.fault(json!({"api": "transfer_create", "pay_error": {"status": 429, "code": "FREQUENCY_LIMITED"}}))
        .await;
    assert_eq!(shop.transfer(&bill(&shop, "B10000003", 500)).await.0, 429);
    assert_eq!(shop.bill_by_out_no("B10000003").await.0, 404);
    shop.fault(json!({"api": "transfer_create", "cut": "after"})).await;
    assert!(
        shop.try_v3("POST", BILLS, Some(&bill(&shop, "B10000003", 500)), None, &[])
            .await
            .is_err()
    );
    assert_eq!(shop.bill_by_out_no("B10000003").await.1["state"], "WAIT_USER_CONFIRM");
    assert_eq!(shop.count("transfer_query").await, 6);
}

#[tokio::test]
async fn a_payee_name_is_required_from_2000_cny_and_must_be_encrypted_for_wechat_pay() {
    let shop = Shop::open().await;
    let (status, unnamed) = shop.transfer(&bill(&shop, "B20000001", 200_000)).await;
    assert_eq!((status, &unnamed["code"]), (400, &json!("PARAM_ERROR")), "{unnamed}");
    assert_eq!(shop.transfer(&bill(&shop, "B20000002", 199_999)).await.0, 200);

    let mut named = bill(&shop, "B20000003", 200_000);
    named["user_name"] = json!(encrypted(&shop, "张三"));
    let (status, no_serial) = shop.transfer(&named).await;
    assert_eq!(
        (status, &no_serial["code"]),
        (400, &json!("PARAM_ERROR")),
        "no Wechatpay-Serial"
    );
    let (status, _) = shop.transfer_with_serial(&named, "PUB_KEY_ID_0000").await;
    assert_eq!(status, 400, "a serial WeChat Pay does not have");
    let mut garbled = named.clone();
    garbled["user_name"] = json!("5byg5LiJ");
    let (status, _) = shop
        .transfer_with_serial(&garbled, wechat_sim::pay::PLATFORM_PUBLIC_KEY_ID)
        .await;
    assert_eq!(status, 400, "not encrypted with the platform key");

    let (status, created) = shop
        .transfer_with_serial(&named, wechat_sim::pay::PLATFORM_PUBLIC_KEY_ID)
        .await;
    assert_eq!(
        (status, &created["state"]),
        (200, &json!("WAIT_USER_CONFIRM")),
        "{created}"
    );
    // Encrypted again (each encryption differs), under the certificate's serial: the same bill.
    named["user_name"] = json!(encrypted(&shop, "张三"));
    let (status, again) = shop
        .transfer_with_serial(&named, wechat_sim::pay::PLATFORM_CERT_SERIAL)
        .await;
    assert_eq!(
        (status, &again["transfer_bill_no"]),
        (200, &created["transfer_bill_no"])
    );
    named["user_name"] = json!(encrypted(&shop, "李四"));
    let (status, other) = shop
        .transfer_with_serial(&named, wechat_sim::pay::PLATFORM_CERT_SERIAL)
        .await;
    assert_eq!(
        (status, &other["code"]),
        (400, &json!("INVALID_REQUEST")),
        "another payee"
    );
}

#[tokio::test]
async fn only_the_payee_confirms_and_each_final_state_is_notified() {
    let shop = Shop::open().await;
    let (_, created) = shop.transfer(&bill(&shop, "B30000001", 500)).await;
    let package = created["package_info"].clone();
    assert_eq!(shop.confirm(&package, "o_someone_else").await.0, 403);
    assert_eq!(shop.confirm(&json!("nope"), PAYEE).await.0, 404);
    assert!(shop.inbox.received().is_empty());
    let (status, confirmed) = shop.confirm(&package, PAYEE).await;
    assert_eq!(
        (status, &confirmed["bill"]["state"]),
        (200, &json!("SUCCESS")),
        "{confirmed}"
    );
    assert_eq!(confirmed["deliveries"][0]["status"], 204);
    assert_eq!(shop.confirm(&package, PAYEE).await.0, 409, "once");

    let received = shop.inbox.received();
    assert_eq!(received.len(), 1);
    let (envelope, resource) = shop.unseal(&received[0]);
    assert_eq!(envelope["event_type"], "MCHTRANSFER.BILL.FINISHED");
    assert_eq!(envelope["resource"]["original_type"], "mch_payment");
    assert_eq!(resource["out_bill_no"], "B30000001");
    assert_eq!(resource["transfer_bill_no"], created["transfer_bill_no"]);
    assert_eq!(resource["state"], "SUCCESS");
    assert_eq!(resource["mch_id"], MCHID);
    assert_eq!(resource["transfer_amount"], 500);
    assert_eq!(resource["openid"], PAYEE);
    assert!(resource["update_time"].as_str().unwrap().ends_with("+08:00"));
    assert_eq!(shop.bill_by_out_no("B30000001").await.1["state"], "SUCCESS");
    let (status, _) = shop.transfer(&bill(&shop, "B30000001", 500)).await;
    assert_eq!(status, 200, "a retry answers the finished bill");

    let (status, refused) = shop.cancel("B30000001").await;
    assert_eq!(
        (status, &refused["code"]),
        (400, &json!("INVALID_REQUEST")),
        "SUCCESS is final"
    );

    shop.transfer(&bill(&shop, "B30000002", 700)).await;
    let failed = shop
        .sim
        .post(
            "/__sim/pay/transfer/fail",
            json!({"out_bill_no": "B30000002", "reason": "PAYEE_ACCOUNT_ABNORMAL"}),
        )
        .await;
    assert_eq!(failed["bill"]["state"], "FAIL");
    let (_, queried) = shop.bill_by_out_no("B30000002").await;
    assert_eq!(
        (&queried["state"], &queried["fail_reason"]),
        (&json!("FAIL"), &json!("PAYEE_ACCOUNT_ABNORMAL"))
    );
    let (_, resource) = shop.unseal(&shop.inbox.received()[1]);
    assert_eq!(
        (&resource["state"], &resource["fail_reason"]),
        (&json!("FAIL"), &json!("PAYEE_ACCOUNT_ABNORMAL"))
    );
    assert_eq!(shop.cancel("B30000002").await.0, 400, "FAIL is final");
}

#[tokio::test]
async fn a_bill_is_cancelled_by_the_merchant_or_after_24_hours_and_notified_through_the_hold() {
    let shop = Shop::open().await;
    shop.hold(true).await;
    let (_, created) = shop.transfer(&bill(&shop, "B40000001", 500)).await;
    let (status, canceling) = shop.cancel("B40000001").await;
    assert_eq!(status, 200, "{canceling}");
    assert_eq!(
        (&canceling["out_bill_no"], &canceling["state"]),
        (&json!("B40000001"), &json!("CANCELING"))
    );
    assert_eq!(canceling["transfer_bill_no"], created["transfer_bill_no"]);
    assert_eq!(shop.bill_by_out_no("B40000001").await.1["state"], "CANCELLED");
    let (status, again) = shop.cancel("B40000001").await;
    assert_eq!((status, &again["state"]), (200, &json!("CANCELLED")));
    assert_eq!(shop.confirm(&created["package_info"], PAYEE).await.0, 409, "too late");
    assert_eq!(shop.cancel("B-unknown").await.0, 404);

    shop.transfer(&bill(&shop, "B40000002", 800)).await;
    let early = shop
        .sim
        .post("/__sim/time", json!({"advance_secs": 24 * 3600 - 1}))
        .await;
    assert_eq!(early["transfers_cancelled"], json!([]));
    assert_eq!(shop.bill_by_out_no("B40000002").await.1["state"], "WAIT_USER_CONFIRM");
    let expired = shop.sim.post("/__sim/time", json!({"advance_secs": 1})).await;
    assert_eq!(
        expired["transfers_cancelled"],
        json!([{"out_bill_no": "B40000002", "deliveries": [{"held": 2}]}])
    );
    assert_eq!(shop.bill_by_out_no("B40000002").await.1["state"], "CANCELLED");

    assert!(shop.inbox.received().is_empty(), "all held");
    let taken = shop.take().await;
    let labels: Vec<_> = taken
        .iter()
        .map(|n| (n["kind"].clone(), n["key"].clone(), n["state"].clone()))
        .collect();
    assert_eq!(
        labels,
        [
            (json!("transfer"), json!("B40000001"), json!("CANCELLED")),
            (json!("transfer"), json!("B40000002"), json!("CANCELLED")),
        ]
    );
    assert_eq!(shop.deliver(&taken[1]).await, 204);
    let (envelope, resource) = shop.unseal(&shop.inbox.received()[0]);
    assert_eq!(envelope["event_type"], "MCHTRANSFER.BILL.FINISHED");
    assert_eq!(
        (&resource["out_bill_no"], &resource["state"]),
        (&json!("B40000002"), &json!("CANCELLED"))
    );

    assert_eq!(
        shop.ledger().await["transfers"],
        json!([
            {"out_bill_no": "B40000001", "transfer_bill_no": created["transfer_bill_no"], "state": "CANCELLED",
             "transfer_amount": 500, "openid": PAYEE},
            {"out_bill_no": "B40000002", "transfer_bill_no": shop.bill_by_out_no("B40000002").await.1["transfer_bill_no"],
             "state": "CANCELLED", "transfer_amount": 800, "openid": PAYEE},
        ])
    );
}

// ---- E. The signing serial ----

#[tokio::test]
async fn the_signer_switches_the_serial_of_answers_and_notifications() {
    use wechat_sim::pay::{PLATFORM_ALTERNATE_SERIAL, PLATFORM_CERT_SERIAL, PLATFORM_PUBLIC_KEY_ID};
    let shop = Shop::open().await;
    let platform = shop.sim.get("/__sim/pay/platform", &[]).await;
    assert_eq!(platform["alternate_serial"], PLATFORM_ALTERNATE_SERIAL);
    let prepay_id = shop.order("T8000001", 100).await;
    let url = format!("/v3/pay/transactions/out-trade-no/T8000001?mchid={MCHID}");
    let serial_of_answer = || async {
        let answer = shop.v3_as("GET", &url, None, None).await;
        assert!(answer.verified);
        answer.serial
    };
    assert_eq!(serial_of_answer().await, PLATFORM_PUBLIC_KEY_ID, "the default");

    for (name, serial) in [
        ("certificate", PLATFORM_CERT_SERIAL),
        ("alternate", PLATFORM_ALTERNATE_SERIAL),
        ("public_key", PLATFORM_PUBLIC_KEY_ID),
    ] {
        let set = shop.sim.post("/__sim/pay/signer", json!({"serial": name})).await;
        assert_eq!(set["serial"], serial);
        assert_eq!(serial_of_answer().await, serial, "{name}");
    }

    shop.sim.post("/__sim/pay/signer", json!({"serial": "alternate"})).await;
    shop.pay(&prepay_id, "normal").await;
    let received = shop.inbox.received();
    assert_eq!(received[0].0["wechatpay-serial"], PLATFORM_ALTERNATE_SERIAL);
    shop.unseal(&received[0]);
    let url = format!("{}/__sim/pay/signer", shop.sim.server.base_url());
    let unknown = shop.sim.http.post(url).json(&json!({"serial": "other"})).send();
    assert!(unknown.await.unwrap().status().is_client_error());
}
