//! The simulator behaves as the reference describes the real WeChat servers.

mod common;

use serde_json::{Value, json};

use common::{APP_ID, SECRET, Sim};

impl Sim {
    async fn exchange(&self, code: &str) -> Value {
        self.get(
            "/sns/jscode2session",
            &[
                ("appid", APP_ID),
                ("secret", SECRET),
                ("js_code", code),
                ("grant_type", "authorization_code"),
            ],
        )
        .await
    }

    async fn checksession_errcode(&self, token: &str) -> i64 {
        let body = self
            .get("/wxa/checksession", &[("access_token", token), ("openid", "nobody")])
            .await;
        body["errcode"].as_i64().unwrap()
    }
}

#[tokio::test]
async fn codes_are_single_use_and_expire_after_five_minutes() {
    let sim = Sim::start().await;
    let code = sim.code("o1").await;
    let first = sim.exchange(&code).await;
    assert_eq!(first["openid"], "o1");
    assert_eq!(first["session_key"].as_str().unwrap().len(), 24, "base64 of 16 bytes");
    assert_eq!(sim.exchange(&code).await["errcode"], 40163);
    assert!(sim.exchange(&code).await["errmsg"].as_str().unwrap().contains("rid: "));
    assert_eq!(sim.exchange("nope").await["errcode"], 40029);

    let late = sim.code("o1").await;
    sim.post("/__sim/time", json!({"advance_secs": 299})).await;
    let on_time = sim.code("o1").await;
    sim.post("/__sim/time", json!({"advance_secs": 2})).await;
    assert_eq!(sim.exchange(&late).await["errcode"], 40029);
    assert_eq!(sim.exchange(&on_time).await["openid"], "o1");
}

#[tokio::test]
async fn each_code_rotates_the_session_key_and_credentials_are_checked_first() {
    let sim = Sim::start().await;
    let a = sim.code("o1").await;
    let key_a = sim.exchange(&a).await["session_key"].clone();
    let b = sim.code("o1").await;
    let key_b = sim.exchange(&b).await["session_key"].clone();
    assert_ne!(key_a, key_b);

    let c = sim.code("o1").await;
    let wrong = sim
        .get(
            "/sns/jscode2session",
            &[
                ("appid", APP_ID),
                ("secret", "x"),
                ("js_code", &c),
                ("grant_type", "authorization_code"),
            ],
        )
        .await;
    assert_eq!(wrong["errcode"], 40125);
    let wrong_app = sim
        .get(
            "/sns/jscode2session",
            &[
                ("appid", "wx0000000000000000"),
                ("secret", SECRET),
                ("js_code", &c),
                ("grant_type", "authorization_code"),
            ],
        )
        .await;
    assert_eq!(wrong_app["errcode"], 40013);
    assert_eq!(
        sim.exchange(&c).await["openid"],
        "o1",
        "a credential error does not consume the code"
    );
}

#[tokio::test]
async fn stable_token_is_shared_and_rotates_near_expiry_with_overlap() {
    let sim = Sim::start().await;
    let first = sim.stable(false).await;
    let t1 = first["access_token"].as_str().unwrap().to_owned();
    assert_eq!(first["expires_in"], 7200);
    assert_eq!(
        sim.stable(false).await["access_token"],
        t1.as_str(),
        "normal mode shares the token"
    );
    sim.post("/__sim/time", json!({"advance_secs": 7000})).await;
    let rotated = sim.stable(false).await;
    let t2 = rotated["access_token"].as_str().unwrap().to_owned();
    assert_ne!(t1, t2);
    // Both work during the overlap (87009/40003 means the token passed).
    assert_eq!(sim.checksession_errcode(&t1).await, 87009);
    assert_eq!(sim.checksession_errcode(&t2).await, 87009);
    sim.post("/__sim/time", json!({"advance_secs": 300})).await;
    assert_eq!(sim.checksession_errcode(&t1).await, 42001);

    let forced = sim.stable(true).await["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        sim.checksession_errcode(&t2).await,
        40001,
        "force_refresh invalidates the previous token"
    );
    assert_eq!(sim.checksession_errcode(&forced).await, 87009);
}

#[tokio::test]
async fn cgi_token_invalidates_its_predecessor() {
    let sim = Sim::start().await;
    let q = [
        ("grant_type", "client_credential"),
        ("appid", APP_ID),
        ("secret", SECRET),
    ];
    let a = sim.get("/cgi-bin/token", &q).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = sim.get("/cgi-bin/token", &q).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(sim.checksession_errcode(&a).await, 40001);
    assert_eq!(sim.checksession_errcode(&b).await, 87009);
}

#[tokio::test]
async fn faults_apply_to_the_next_calls_and_requests_are_counted() {
    let sim = Sim::start().await;
    sim.post(
        "/__sim/faults",
        json!({"api": "jscode2session", "errcode": -1, "count": 2}),
    )
    .await;
    let code = sim.code("o1").await;
    assert_eq!(sim.exchange(&code).await["errcode"], -1);
    assert_eq!(sim.exchange(&code).await["errcode"], -1);
    assert_eq!(sim.exchange(&code).await["openid"], "o1");
    sim.post("/__sim/faults", json!({"api": "jscode2session", "http_status": 503}))
        .await;
    let url = format!("{}/sns/jscode2session", sim.server.base_url());
    assert_eq!(sim.http.get(url).send().await.unwrap().status(), 503);
    let log = sim.get("/__sim/requests", &[]).await;
    assert_eq!(log["counts"]["jscode2session"], 4);
}

#[tokio::test]
async fn encrypt_adds_a_watermark_under_the_current_key() {
    use aes::cipher::{BlockDecryptMut, KeyIvInit, block_padding::Pkcs7};
    use base64::{Engine, engine::general_purpose::STANDARD};

    let sim = Sim::start().await;
    let key = "tiihtNczf5v6AKRyjwEUhQ==";
    sim.post("/__sim/login", json!({"openid": "o1", "session_key": key}))
        .await;
    let sealed = sim
        .post("/__sim/encrypt", json!({"openid": "o1", "data": {"openGId": "g1"}}))
        .await;
    let key = STANDARD.decode(key).unwrap();
    let iv = STANDARD.decode(sealed["iv"].as_str().unwrap()).unwrap();
    let data = STANDARD.decode(sealed["encryptedData"].as_str().unwrap()).unwrap();
    let plain = cbc::Decryptor::<aes::Aes128>::new_from_slices(&key, &iv)
        .unwrap()
        .decrypt_padded_vec_mut::<Pkcs7>(&data)
        .unwrap();
    let json: Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(json["openGId"], "g1");
    assert_eq!(json["watermark"]["appid"], APP_ID);
    assert!(json["watermark"]["timestamp"].as_i64().unwrap() > 1_700_000_000);
}

#[tokio::test]
async fn phone_codes_need_a_valid_token_and_work_once() {
    let sim = Sim::start().await;
    let token = sim.stable(false).await["access_token"].as_str().unwrap().to_owned();
    let code = sim
        .post(
            "/__sim/phone-code",
            json!({"openid": "o1", "phoneNumber": "13800138000"}),
        )
        .await["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = format!("{}/wxa/business/getuserphonenumber", sim.server.base_url());
    let exchange = |token: String, code: String| {
        let (http, url) = (sim.http.clone(), url.clone());
        async move {
            let response = http
                .post(url)
                .query(&[("access_token", token)])
                .json(&json!({"code": code}))
                .send();
            response.await.unwrap().json::<Value>().await.unwrap()
        }
    };
    assert_eq!(exchange("stale".into(), code.clone()).await["errcode"], 40001);
    let answer = exchange(token.clone(), code.clone()).await;
    assert_eq!(answer["errcode"], 0);
    assert_eq!(answer["phone_info"]["purePhoneNumber"], "13800138000");
    assert_eq!(answer["phone_info"]["countryCode"], "86");
    assert_eq!(answer["phone_info"]["watermark"]["appid"], APP_ID);
    assert_eq!(exchange(token.clone(), code).await["errcode"], 40029, "single use");

    let late = sim
        .post("/__sim/phone-code", json!({"phoneNumber": "13800138000"}))
        .await["code"]
        .as_str()
        .unwrap()
        .to_owned();
    sim.post("/__sim/time", json!({"advance_secs": 301})).await;
    let token = sim.stable(false).await["access_token"].as_str().unwrap().to_owned();
    assert_eq!(exchange(token, late).await["errcode"], 40029, "expired after 5 minutes");
}

// ---- WeChat Pay: query, close, refunds; shipping info ----

use common::shop::{MCHID, OPENID, Shop, refund_request};

#[tokio::test]
async fn pay_orders_are_queried_by_either_number_with_signed_answers() {
    let shop = Shop::open().await;
    let prepay_id = shop.order("T1000001", 100).await;
    let (status, unpaid) = shop.query("T1000001").await;
    assert_eq!(status, 200);
    assert_eq!(unpaid["trade_state"], "NOTPAY", "{unpaid}");
    assert_eq!(unpaid["amount"]["total"], 100);
    assert!(unpaid.get("transaction_id").is_none(), "{unpaid}");

    let transaction_id = shop.pay(&prepay_id, "normal").await;
    assert_eq!(shop.inbox.received().len(), 1);
    let (status, paid) = shop.query("T1000001").await;
    assert_eq!(status, 200);
    assert_eq!(paid["trade_state"], "SUCCESS", "{paid}");
    assert_eq!(paid["transaction_id"], transaction_id.as_str());
    assert_eq!(paid["payer"]["openid"], OPENID);
    assert_eq!(paid["appid"], APP_ID);
    assert_eq!(paid["mchid"], MCHID);
    assert_eq!(paid["attach"], "table 7");
    assert_eq!(paid["trade_type"], "JSAPI");
    assert_eq!(paid["amount"]["payer_total"], 100);
    assert_eq!(paid["amount"]["currency"], "CNY");
    assert!(paid["success_time"].as_str().unwrap().ends_with("+08:00"), "{paid}");
    let (_, decrypted) = shop.unseal(&shop.inbox.received()[0]);
    assert_eq!(
        decrypted["success_time"], paid["success_time"],
        "the notification says the same"
    );

    let by_id = format!("/v3/pay/transactions/id/{transaction_id}?mchid={MCHID}");
    let (status, same) = shop.v3("GET", &by_id, None).await;
    assert_eq!((status, &same["out_trade_no"]), (200, &json!("T1000001")));

    let (status, unknown) = shop.query("T-unknown").await;
    assert_eq!((status, &unknown["code"]), (404, &json!("ORDER_NOT_EXIST")));
    let unknown_id = format!("/v3/pay/transactions/id/4200000000000000?mchid={MCHID}");
    assert_eq!(shop.v3("GET", &unknown_id, None).await.1["code"], "ORDER_NOT_EXIST");
    let other_merchant = "/v3/pay/transactions/out-trade-no/T1000001?mchid=1900000109";
    assert_eq!(shop.v3("GET", other_merchant, None).await.0, 404);

    // Signed for another URL than the one requested: the query string is part of the message.
    let url = format!("/v3/pay/transactions/out-trade-no/T1000001?mchid={MCHID}");
    let elsewhere = shop.authorization("GET", "/v3/pay/transactions/out-trade-no/T1000001", "");
    let refused = shop.v3_as("GET", &url, None, Some(elsewhere)).await;
    assert_eq!((refused.status, &refused.body["code"]), (401, &json!("SIGN_ERROR")));
    assert!(refused.verified, "errors are signed too");

    let log = shop.sim.get("/__sim/requests", &[]).await;
    assert_eq!(log["counts"]["pay_query"], 7);
}

#[tokio::test]
async fn pay_api_faults_fail_or_break_the_signature() {
    let shop = Shop::open().await;
    shop.paid_order("T1000002", 100).await;
    shop.sim
        .post("/__sim/faults", json!({"api": "pay_query", "http_status": 503}))
        .await;
    let url = format!("/v3/pay/transactions/out-trade-no/T1000002?mchid={MCHID}");
    assert_eq!(shop.v3_as("GET", &url, None, None).await.status, 503);
    for api in ["pay_query", "refund_query", "refund", "pay_close"] {
        shop.sim
            .post("/__sim/faults", json!({"api": api, "bad_signature": true}))
            .await;
    }
    assert!(!shop.v3_as("GET", &url, None, None).await.verified);
    let refund_url = "/v3/refund/domestic/refunds/R-none";
    assert!(!shop.v3_as("GET", refund_url, None, None).await.verified);
    let refund = refund_request("T1000002", "R-1", 10, 100);
    let faulty = shop
        .v3_as("POST", "/v3/refund/domestic/refunds", Some(&refund), None)
        .await;
    assert_eq!(faulty.status, 200, "a bad signature on a good answer");
    assert!(!faulty.verified);
    let close = "/v3/pay/transactions/out-trade-no/T1000002/close";
    assert!(
        !shop
            .v3_as("POST", close, Some(&json!({"mchid": MCHID})), None)
            .await
            .verified
    );
    assert_eq!(shop.v3("GET", &url, None).await.0, 200, "faults are used up");
    let counts = shop.sim.get("/__sim/requests", &[]).await["counts"].clone();
    assert_eq!(
        (
            &counts["pay_query"],
            &counts["refund"],
            &counts["refund_query"],
            &counts["pay_close"]
        ),
        (&json!(3), &json!(1), &json!(1), &json!(1))
    );
}

#[tokio::test]
async fn a_closed_order_cannot_be_paid_and_a_paid_one_cannot_be_closed() {
    let shop = Shop::open().await;
    let prepay_id = shop.order("T2000001", 100).await;
    let close = |out_trade_no: &str| format!("/v3/pay/transactions/out-trade-no/{out_trade_no}/close");
    let mchid = json!({"mchid": MCHID});
    assert_eq!(
        shop.v3("POST", &close("T2000001"), Some(&mchid)).await,
        (204, Value::Null)
    );
    assert_eq!(shop.query("T2000001").await.1["trade_state"], "CLOSED");
    let (status, refused) = shop
        .sim
        .post_status("/__sim/pay/complete", json!({"prepay_id": prepay_id}))
        .await;
    assert_eq!(status, 409, "{refused}");
    assert!(shop.inbox.received().is_empty());
    assert_eq!(
        shop.v3("POST", &close("T2000001"), Some(&mchid)).await.0,
        204,
        "closing again is fine"
    );
    let again = json!({
        "appid": APP_ID, "mchid": MCHID, "description": "tea", "out_trade_no": "T2000001",
        "notify_url": shop.notify_url, "amount": {"total": 100, "currency": "CNY"}, "payer": {"openid": OPENID},
    });
    let (status, reopened) = shop.v3("POST", "/v3/pay/transactions/jsapi", Some(&again)).await;
    assert_eq!((status, &reopened["code"]), (400, &json!("ORDER_CLOSED")));

    shop.paid_order("T2000002", 100).await;
    let (status, paid) = shop.v3("POST", &close("T2000002"), Some(&mchid)).await;
    assert_eq!((status, &paid["code"]), (400, &json!("ORDERPAID")));
    assert_eq!(shop.query("T2000002").await.1["trade_state"], "SUCCESS");
    let (status, missing) = shop.v3("POST", &close("T2000002"), Some(&json!({}))).await;
    assert_eq!((status, &missing["code"]), (400, &json!("PARAM_ERROR")));
}

#[tokio::test]
async fn a_dropped_notification_leaves_the_payment_made() {
    let shop = Shop::open().await;
    let prepay_id = shop.order("T3000001", 100).await;
    let dropped = shop
        .sim
        .post("/__sim/pay/complete", json!({"prepay_id": prepay_id, "mode": "drop"}))
        .await;
    assert_eq!(dropped["deliveries"], json!([]));
    assert!(shop.inbox.received().is_empty(), "no notification is ever sent");
    let (_, paid) = shop.query("T3000001").await;
    assert_eq!(paid["trade_state"], "SUCCESS");
    assert_eq!(paid["transaction_id"], dropped["transaction_id"]);
}

#[tokio::test]
async fn refunds_are_idempotent_and_never_exceed_the_order() {
    let shop = Shop::open().await;
    let transaction_id = shop.paid_order("T4000001", 100).await;
    let (status, first) = shop.refund(refund_request("T4000001", "R4000001", 30, 100)).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["status"], "PROCESSING");
    assert_eq!(first["out_trade_no"], "T4000001");
    assert_eq!(first["transaction_id"], transaction_id.as_str());
    assert_eq!(first["amount"]["refund"], 30);
    assert_eq!(first["amount"]["payer_refund"], 30);
    assert_eq!(first["amount"]["total"], 100);
    assert!(first.get("success_time").is_none());
    let (status, retried) = shop.refund(refund_request("T4000001", "R4000001", 30, 100)).await;
    assert_eq!(
        (status, &retried["refund_id"]),
        (200, &first["refund_id"]),
        "the same refund"
    );
    let (status, changed) = shop.refund(refund_request("T4000001", "R4000001", 40, 100)).await;
    assert_eq!(
        (status, &changed["code"]),
        (400, &json!("INVALID_REQUEST")),
        "{changed}"
    );

    let (status, too_much) = shop.refund(refund_request("T4000001", "R4000002", 71, 100)).await;
    assert_eq!(
        (status, &too_much["code"]),
        (400, &json!("INVALID_REQUEST")),
        "{too_much}"
    );
    let by_transaction = json!({
        "transaction_id": transaction_id, "out_refund_no": "R4000002",
        "amount": {"refund": 70, "total": 100, "currency": "CNY"},
    });
    assert_eq!(shop.refund(by_transaction).await.0, 200);
    let (status, nothing_left) = shop.refund(refund_request("T4000001", "R4000003", 1, 100)).await;
    assert_eq!((status, &nothing_left["code"]), (400, &json!("INVALID_REQUEST")));
    assert_eq!(shop.query("T4000001").await.1["trade_state"], "REFUND");

    shop.order("T4000002", 100).await;
    let (status, unpaid) = shop.refund(refund_request("T4000002", "R4000004", 1, 100)).await;
    assert_eq!((status, &unpaid["code"]), (404, &json!("RESOURCE_NOT_EXISTS")));
    let (status, unknown) = shop.refund(refund_request("T-none", "R4000005", 1, 100)).await;
    assert_eq!((status, &unknown["code"]), (404, &json!("RESOURCE_NOT_EXISTS")));
    let mut no_currency = refund_request("T4000001", "R4000006", 1, 100);
    no_currency["amount"]["currency"] = Value::Null;
    assert_eq!(shop.refund(no_currency).await.1["code"], "PARAM_ERROR");

    assert_eq!(shop.refund_query("R4000001").await.1["status"], "PROCESSING");
    let (status, missing) = shop.refund_query("R-none").await;
    assert_eq!((status, &missing["code"]), (404, &json!("RESOURCE_NOT_EXISTS")));
}

#[tokio::test]
async fn concurrent_retries_of_a_refund_refund_once() {
    let shop = Shop::open().await;
    shop.paid_order("T4100001", 100).await;
    let body = refund_request("T4100001", "R4100001", 60, 100).to_string();
    let url = format!("{}/v3/refund/domestic/refunds", shop.sim.server.base_url());
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let request = shop
            .sim
            .http
            .post(&url)
            .header("content-type", "application/json")
            .header(
                "authorization",
                shop.authorization("POST", "/v3/refund/domestic/refunds", &body),
            )
            .body(body.clone());
        calls.spawn(async move { request.send().await.unwrap().json::<Value>().await.unwrap() });
    }
    let mut ids = std::collections::HashSet::new();
    while let Some(answer) = calls.join_next().await {
        let answer = answer.unwrap();
        ids.insert(answer["refund_id"].as_str().expect("a refund").to_owned());
    }
    assert_eq!(ids.len(), 1, "one refund");
    let (status, rest) = shop.refund(refund_request("T4100001", "R4100002", 41, 100)).await;
    assert_eq!(
        (status, &rest["code"]),
        (400, &json!("INVALID_REQUEST")),
        "60 of 100 are taken"
    );
}

#[tokio::test]
async fn refunds_succeed_on_the_simulator_clock_and_notify() {
    let shop = Shop::open().await;
    let transaction_id = shop.paid_order("T5000001", 100).await;
    let mut request = refund_request("T5000001", "R5000001", 100, 100);
    request["notify_url"] = json!(shop.notify_url);
    let (status, refund) = shop.refund(request).await;
    assert_eq!((status, &refund["status"]), (200, &json!("PROCESSING")));
    assert_eq!(shop.inbox.received().len(), 1, "only the payment's notification so far");

    let early = shop.sim.post("/__sim/time", json!({"advance_secs": 59})).await;
    assert_eq!(early["refunds_settled"], json!([]));
    assert_eq!(shop.refund_query("R5000001").await.1["status"], "PROCESSING");
    let settled = shop.sim.post("/__sim/time", json!({"advance_secs": 1})).await;
    assert_eq!(settled["refunds_settled"][0]["out_refund_no"], "R5000001", "{settled}");
    assert_eq!(settled["refunds_settled"][0]["deliveries"][0]["status"], 204);

    let received = shop.inbox.received();
    assert_eq!(received.len(), 2);
    let (envelope, resource) = shop.unseal(&received[1]);
    assert_eq!(envelope["event_type"], "REFUND.SUCCESS");
    assert_eq!(envelope["resource_type"], "encrypt-resource");
    assert_eq!(envelope["resource"]["original_type"], "refund");
    assert_eq!(resource["mchid"], MCHID);
    assert_eq!(resource["out_trade_no"], "T5000001");
    assert_eq!(resource["transaction_id"], transaction_id.as_str());
    assert_eq!(resource["out_refund_no"], "R5000001");
    assert_eq!(resource["refund_id"], refund["refund_id"]);
    assert_eq!(resource["refund_status"], "SUCCESS");
    assert_eq!(
        resource["amount"],
        json!({"total": 100, "refund": 100, "payer_total": 100, "payer_refund": 100})
    );

    let (_, queried) = shop.refund_query("R5000001").await;
    assert_eq!(queried["status"], "SUCCESS");
    assert_eq!(queried["success_time"], resource["success_time"]);
    assert_eq!(shop.query("T5000001").await.1["trade_state"], "REFUND");
}

#[tokio::test]
async fn refund_outcomes_are_set_by_tests_and_notifications_retried_duplicated_or_dropped() {
    let shop = Shop::open().await;
    shop.paid_order("T6000001", 100).await;
    let before = shop.inbox.received().len();
    let mut request = refund_request("T6000001", "R6000001", 40, 100);
    request["notify_url"] = json!(shop.notify_url);
    shop.refund(request).await;
    shop.inbox.fail_next.store(2, std::sync::atomic::Ordering::SeqCst);
    let abnormal = shop
        .sim
        .post(
            "/__sim/pay/refund/settle",
            json!({"out_refund_no": "R6000001", "status": "ABNORMAL"}),
        )
        .await;
    assert_eq!(abnormal["refund"]["status"], "ABNORMAL");
    assert_eq!(abnormal["deliveries"][0]["attempts"], 3, "retried until acknowledged");
    let received = shop.inbox.received();
    assert_eq!(received.len(), before + 3);
    assert_eq!(shop.unseal(&received[before + 2]).0["event_type"], "REFUND.ABNORMAL");

    let duplicated = shop
        .sim
        .post(
            "/__sim/pay/refund/settle",
            json!({"out_refund_no": "R6000001", "status": "SUCCESS", "copies": 3}),
        )
        .await;
    assert_eq!(duplicated["deliveries"].as_array().unwrap().len(), 3);
    let received = shop.inbox.received();
    assert_eq!(received.len(), before + 6);
    for copy in &received[before + 3..] {
        let (envelope, resource) = shop.unseal(copy);
        assert_eq!(
            (&envelope["event_type"], &resource["refund_status"]),
            (&json!("REFUND.SUCCESS"), &json!("SUCCESS"))
        );
    }
    let (status, _) = shop
        .sim
        .post_status(
            "/__sim/pay/refund/settle",
            json!({"out_refund_no": "R6000001", "status": "CLOSED"}),
        )
        .await;
    assert_eq!(status, 409, "SUCCESS is final");

    let mut request = refund_request("T6000001", "R6000002", 60, 100);
    request["notify_url"] = json!(shop.notify_url);
    shop.refund(request).await;
    let dropped = shop
        .sim
        .post(
            "/__sim/pay/refund/settle",
            json!({"out_refund_no": "R6000002", "status": "CLOSED", "mode": "drop"}),
        )
        .await;
    assert_eq!(dropped["deliveries"], json!([]));
    assert_eq!(shop.inbox.received().len(), before + 6);
    assert_eq!(shop.refund_query("R6000002").await.1["status"], "CLOSED");
    let (status, again) = shop.refund(refund_request("T6000001", "R6000003", 60, 100)).await;
    assert_eq!(status, 200, "a closed refund gives its amount back: {again}");
}

#[tokio::test]
async fn an_order_takes_at_most_fifty_refunds() {
    let shop = Shop::open().await;
    shop.paid_order("T7000001", 100).await;
    for n in 0..50 {
        let (status, answer) = shop
            .refund(refund_request("T7000001", &format!("R70{n:02}"), 1, 100))
            .await;
        assert_eq!(status, 200, "{n}: {answer}");
    }
    let (status, refused) = shop.refund(refund_request("T7000001", "R7051", 1, 100)).await;
    assert_eq!((status, &refused["code"]), (400, &json!("INVALID_REQUEST")));
}

/// Shipping-info calls with an access token.
struct Shipping<'a> {
    shop: &'a Shop,
    token: String,
}

impl<'a> Shipping<'a> {
    /// With a valid stable token.
    async fn new(shop: &'a Shop) -> Shipping<'a> {
        let token = shop.sim.stable(false).await["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        Shipping { shop, token }
    }

    async fn call(&self, api: &str, body: &str) -> Value {
        let url = format!("{}/wxa/sec/order/{api}", self.shop.sim.server.base_url());
        let response = self
            .shop
            .sim
            .http
            .post(url)
            .query(&[("access_token", &self.token)])
            .body(body.to_owned());
        response.send().await.unwrap().json().await.unwrap()
    }

    async fn upload(&self, body: &Value) -> i64 {
        self.call("upload_shipping_info", &body.to_string()).await["errcode"]
            .as_i64()
            .unwrap()
    }

    async fn order(&self, transaction_id: &str) -> Value {
        let answer = self
            .call("get_order", &json!({"transaction_id": transaction_id}).to_string())
            .await;
        assert_eq!(answer["errcode"], 0, "{answer}");
        answer["order"].clone()
    }
}

/// An express shipment of one package for a payment named by its transaction_id.
fn shipment(transaction_id: &str, tracking_no: &str) -> Value {
    json!({
        "order_key": {"order_number_type": 2, "transaction_id": transaction_id},
        "logistics_type": 1, "delivery_mode": 1,
        "shipping_list": [{"tracking_no": tracking_no, "express_company": "SF", "item_desc": "a cup of tea*1",
                           "contact": {"receiver_contact": "189****1234"}}],
        "upload_time": "2026-11-26T12:00:00.120+08:00", "payer": {"openid": OPENID},
    })
}

#[tokio::test]
async fn shipping_info_is_uploaded_once_the_payment_shows_and_reshipped_once() {
    let shop = Shop::open().await;
    let shipping = Shipping::new(&shop).await;
    let transaction_id = shop.paid_order("T8000001", 100).await;
    let stale = Shipping {
        shop: &shop,
        token: "stale".into(),
    };
    assert_eq!(stale.upload(&shipment(&transaction_id, "SF1")).await, 40001);
    assert_eq!(
        shipping.call("upload_shipping_info", "not json").await["errcode"],
        47001
    );
    let mut not_a_list = shipment(&transaction_id, "SF1");
    not_a_list["shipping_list"] = not_a_list["shipping_list"][0].clone();
    assert_eq!(shipping.upload(&not_a_list).await, 47001);
    assert_eq!(
        shipping.upload(&shipment(&transaction_id, "SF1")).await,
        10060001,
        "not visible the moment it is paid"
    );
    shop.sim.post("/__sim/time", json!({"advance_secs": 60})).await;
    assert_eq!(shipping.upload(&shipment("4200000000000000", "SF1")).await, 10060001);
    assert_eq!(shipping.order(&transaction_id).await["order_state"], 1);
    assert_eq!(shipping.upload(&shipment(&transaction_id, "SF1")).await, 0);

    let order = shipping.order(&transaction_id).await;
    assert_eq!(order["order_state"], 2);
    assert_eq!(order["merchant_trade_no"], "T8000001");
    assert_eq!(order["merchant_id"], MCHID);
    assert_eq!(order["paid_amount"], 100);
    assert_eq!(order["openid"], OPENID);
    assert_eq!(order["shipping"]["finish_shipping"], true);
    assert_eq!(order["shipping"]["finish_shipping_count"], 1);
    assert_eq!(order["shipping"]["shipping_list"][0]["tracking_no"], "SF1");
    assert_eq!(order["shipping"]["shipping_list"][0]["goods_desc"], "a cup of tea*1");
    let by_merchant = json!({"merchant_id": MCHID, "merchant_trade_no": "T8000001"}).to_string();
    let same = shipping.call("get_order", &by_merchant).await;
    assert_eq!(same["order"]["transaction_id"], transaction_id.as_str());

    let mut by_merchant_key = shipment(&transaction_id, "SF2");
    by_merchant_key["order_key"] = json!({"order_number_type": 1, "mchid": MCHID, "out_trade_no": "T8000001"});
    assert_eq!(shipping.upload(&by_merchant_key).await, 0, "the one re-shipment");
    let order = shipping.order(&transaction_id).await;
    assert_eq!(order["shipping"]["shipping_list"][0]["tracking_no"], "SF2");
    assert_eq!(order["shipping"]["finish_shipping_count"], 2);
    assert_eq!(shipping.upload(&shipment(&transaction_id, "SF3")).await, 10060003);

    let now = shop.sim.post("/__sim/time", json!({"advance_secs": 0})).await["now"].clone();
    let remind = json!({"transaction_id": transaction_id, "received_time": now}).to_string();
    assert_eq!(shipping.call("notify_confirm_receive", &remind).await["errcode"], 0);
    assert_eq!(
        shipping.call("notify_confirm_receive", &remind).await["errcode"],
        10060030,
        "one reminder"
    );
    assert_eq!(
        shipping.order(&transaction_id).await["order_state"],
        2,
        "a reminder is not a receipt"
    );
    let confirmed = shop
        .sim
        .post(
            "/__sim/shipping/confirm-receive",
            json!({"transaction_id": transaction_id}),
        )
        .await;
    assert_eq!(confirmed["order_state"], 3);
    assert_eq!(shipping.order(&transaction_id).await["order_state"], 3);
    assert_eq!(shipping.upload(&shipment(&transaction_id, "SF4")).await, 10060004);
}

#[tokio::test]
async fn shipping_info_is_checked_like_wechat_checks_it() {
    let shop = Shop::open().await;
    let shipping = Shipping::new(&shop).await;
    let transaction_id = shop.paid_order("T9000001", 100).await;
    shop.sim.post("/__sim/time", json!({"advance_secs": 60})).await;
    let package = |n: usize| json!({"tracking_no": format!("SF{n}"), "express_company": "SF", "item_desc": "tea"});
    let split = |count: usize| {
        let mut body = shipment(&transaction_id, "SF0");
        body["delivery_mode"] = json!(2);
        body["is_all_delivered"] = json!(false);
        body["shipping_list"] = (0..count).map(package).collect();
        body
    };
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut body = shipment(&transaction_id, "SF0");
        edit(&mut body);
        body
    };
    let cases: [(Value, i64); 9] = [
        (split(16), 10060024),
        (
            with(&|b| b["shipping_list"] = json!([package(1), package(2)])),
            268485228,
        ),
        (with(&|b| b["delivery_mode"] = json!(3)), 268485224),
        (with(&|b| b["logistics_type"] = json!(5)), 10060005),
        (
            with(&|b| b["order_key"] = json!({"order_number_type": 1, "out_trade_no": "T9000001"})),
            268485196,
        ),
        (with(&|b| b["upload_time"] = json!("2026-11-26 12:00:00")), 268485216),
        (with(&|b| b["payer"]["openid"] = json!("o_someone_else")), 10060031),
        (with(&|b| b["shipping_list"][0]["item_desc"] = json!("")), 10060008),
        (with(&|b| b["shipping_list"][0]["tracking_no"] = json!("")), 268485226),
    ];
    for (body, errcode) in &cases {
        assert_eq!(shipping.upload(body).await, *errcode, "{body}");
    }
    let remind = json!({"transaction_id": transaction_id, "received_time": 0}).to_string();
    assert_eq!(
        shipping.call("notify_confirm_receive", &remind).await["errcode"],
        10060028,
        "nothing shipped yet"
    );
    let mut no_flag = split(2);
    no_flag.as_object_mut().unwrap().remove("is_all_delivered");
    assert_eq!(shipping.upload(&no_flag).await, 10060007);

    assert_eq!(
        shipping.upload(&split(15)).await,
        0,
        "15 packages, not all delivered yet"
    );
    let order = shipping.order(&transaction_id).await;
    assert_eq!(order["order_state"], 1);
    assert_eq!(order["shipping"]["shipping_list"].as_array().unwrap().len(), 15);
    let mut done = split(15);
    done["is_all_delivered"] = json!(true);
    assert_eq!(
        shipping.upload(&done).await,
        0,
        "finishing a split delivery is not a re-shipment"
    );
    assert_eq!(shipping.order(&transaction_id).await["order_state"], 2);

    shop.refund(refund_request("T9000001", "R9000001", 100, 100)).await;
    shop.sim
        .post("/__sim/pay/refund/settle", json!({"out_refund_no": "R9000001"}))
        .await;
    assert_eq!(shipping.order(&transaction_id).await["order_state"], 5, "refunded");

    shop.sim
        .post("/__sim/faults", json!({"api": "upload_shipping_info", "errcode": -1}))
        .await;
    assert_eq!(shipping.upload(&done).await, -1);
    let counts = shop.sim.get("/__sim/requests", &[]).await["counts"].clone();
    assert_eq!(counts["upload_shipping_info"], 13);
    assert_eq!(counts["get_shipping_order"], 3);
}
