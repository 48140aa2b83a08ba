//! CloudWatch metrics (EMF, `shared/src/metrics.rs`): a journey — logins, a session check,
//! open data that opens and data that does not (once, then to the failure budget), a payment
//! settled by its notification, a forged notification, a payment of another amount delivered
//! three times, a refund, a forged message push, a WeChat fault and a stale session key — emits
//! each metric of the contract where it should, with the dimensions CloudWatch alarms use; every
//! line is a valid EMF document, and none holds a secret, a token, an openid or a phone number.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use testkit::{APIV3_KEY, APP_SECRET, PUSH_AES_KEY, PUSH_TOKEN, Stack, authed_event, event_with_body, read};
use wxa_shared::handlers::{decrypt_phone, login, pay_sign, session, werun};
use wxa_shared::metrics::{self, Metric, NAMESPACE};

const PAID: &str = "T20261125000001";
const MISPAID: &str = "T20261125000002";

/// The properties a document may have besides its one metric: never anything about the user.
const PROPERTIES: [&str; 4] = ["_aws", "Function", "ErrCode", "request_id"];

/// Checks that `line` is one EMF document as CloudWatch extracts it, of one metric of the
/// contract with its dimensions; returns (metric, Function, ErrCode).
fn check_emf(line: &str) -> (String, String, Option<String>) {
    assert!(!line.contains('\n'), "one line: {line}");
    let document: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    let object = document.as_object().expect("a JSON object");
    let aws = &document["_aws"];
    let timestamp = aws["Timestamp"].as_u64().expect("Timestamp: unix milliseconds");
    let now_ms = wxa_shared::clock::now_unix() * 1000;
    assert!(timestamp.abs_diff(now_ms) < 600_000, "a Timestamp of now: {line}");
    let directives = aws["CloudWatchMetrics"].as_array().expect("CloudWatchMetrics");
    assert_eq!(directives.len(), 1, "{line}");
    let directive = &directives[0];
    assert_eq!(directive["Namespace"], NAMESPACE, "{line}");
    let metrics = directive["Metrics"].as_array().expect("Metrics");
    assert_eq!(metrics.len(), 1, "{line}");
    let name = metrics[0]["Name"].as_str().expect("a metric Name").to_owned();
    assert_eq!(metrics[0]["Unit"], "Count", "{line}");
    assert!(
        Metric::ALL.iter().any(|m| m.name() == name),
        "{name} is a metric of the contract"
    );
    // Every metric named is a top-level number (here: 1).
    assert_eq!(document[&name].as_f64(), Some(1.0), "{line}");
    // Every dimension key is a top-level string.
    let dimensions = directive["Dimensions"].as_array().expect("Dimensions");
    for set in dimensions {
        for key in set.as_array().expect("a dimension set") {
            let key = key.as_str().expect("a dimension key");
            assert!(
                document[key].is_string(),
                "dimension {key} is a top-level string: {line}"
            );
        }
    }
    let expected = if name == Metric::WechatErrors.name() {
        json!([["Function"], ["Function", "ErrCode"]])
    } else {
        json!([["Function"]])
    };
    assert_eq!(directive["Dimensions"], expected, "{line}");
    for key in object.keys() {
        assert!(
            PROPERTIES.contains(&key.as_str()) || *key == name,
            "an unexpected property {key}: {line}"
        );
    }
    if let Some(id) = document.get("request_id") {
        assert!(id.as_str().is_some_and(|id| !id.is_empty()), "{line}");
    }
    let function = document["Function"].as_str().expect("Function").to_owned();
    let err_code = document.get("ErrCode").map(|c| c.as_str().expect("ErrCode").to_owned());
    assert_eq!(err_code.is_some(), name == Metric::WechatErrors.name(), "{line}");
    (name, function, err_code)
}

async fn tampered_werun(stack: &Stack, openid: &str, token: &str) -> (u16, Value) {
    let (data, _) = stack
        .seal(
            openid,
            json!({"stepInfoList": [{"timestamp": 1_795_536_000u64, "step": 1}]}),
        )
        .await;
    // Another iv: the first block decrypts to garbage.
    let body = json!({"encryptedData": data, "iv": "AAAAAAAAAAAAAAAAAAAAAA=="});
    read(
        &werun::FUNCTION
            .handle(&stack.state, authed_event("werun.json", token, Some(&body)))
            .await,
    )
}

async fn session_check(stack: &Stack, token: &str) -> (u16, Value) {
    read(
        &session::FUNCTION
            .handle(&stack.state, authed_event("session.json", token, None))
            .await,
    )
}

/// A buyer's order placed with WeChat Pay by pay-sign; its prepay_id.
async fn prepay(stack: &Stack, token: &str, out_trade_no: &str) -> String {
    let body = json!({ "out_trade_no": out_trade_no });
    let (status, params) = read(
        &pay_sign::FUNCTION
            .handle(&stack.state, authed_event("pay-sign.json", token, Some(&body)))
            .await,
    );
    assert_eq!(status, 200, "{params}");
    params["package"]
        .as_str()
        .unwrap()
        .trim_start_matches("prepay_id=")
        .to_owned()
}

#[tokio::test]
async fn a_journey_emits_each_metric_as_valid_emf_and_nothing_secret() {
    // The only test of this binary: the capture takes every metric line of the process.
    let capture = metrics::capture();
    let stack = Stack::start().await;
    stack.enable_pay().await;

    // A login, and a session check.
    let code = stack.mint_code("o_alice").await;
    let (status, body) = read(
        &login::FUNCTION
            .handle(
                &stack.state,
                event_with_body("login.json", &json!({"code": code}).to_string()),
            )
            .await,
    );
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    let alice_key = stack.sim_session_key("o_alice").await;
    let (status, body) = session_check(&stack, &token).await;
    assert_eq!((status, body["valid"].as_bool()), (200, Some(true)), "{body}");

    // Open data: WeRun data that opens, a phone number, then WeRun data that does not.
    let (data, iv) = stack
        .seal(
            "o_alice",
            json!({"stepInfoList": [{"timestamp": 1_795_536_000u64, "step": 42}]}),
        )
        .await;
    let steps = json!({"encryptedData": data, "iv": iv});
    let (status, body) = read(
        &werun::FUNCTION
            .handle(&stack.state, authed_event("werun.json", &token, Some(&steps)))
            .await,
    );
    assert_eq!(status, 200, "{body}");
    let phone = stack
        .sim_post("/__sim/phone-code", json!({"phoneNumber": "13800138000"}))
        .await;
    let phone_body = json!({"code": phone["code"]});
    let (status, body) = read(
        &decrypt_phone::FUNCTION
            .handle(
                &stack.state,
                authed_event("decrypt-phone.json", &token, Some(&phone_body)),
            )
            .await,
    );
    assert_eq!(status, 200, "{body}");
    // Asking again in a container whose budget is one a minute: the second is throttled.
    let strict = stack.state_with(
        &decrypt_phone::FUNCTION,
        &[("CALLER_BUDGET_PER_MINUTE", "1"), ("CALLER_BUDGET_BURST", "1")],
    );
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let phone = stack
            .sim_post("/__sim/phone-code", json!({"phoneNumber": "13800138000"}))
            .await;
        let phone_body = json!({"code": phone["code"]});
        let request = authed_event("decrypt-phone.json", &token, Some(&phone_body));
        statuses.push(decrypt_phone::FUNCTION.handle(&strict, request).await.status().as_u16());
    }
    assert_eq!(statuses, [200, 429]);
    let (status, body) = tampered_werun(&stack, "o_alice", &token).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_open_data"))
    );

    // Another user spends the failure budget: the fifth failure revokes the session.
    let bob = stack.log_in("o_bob").await;
    let bob_key = stack.sim_session_key("o_bob").await;
    for _ in 0..5 {
        let (status, body) = tampered_werun(&stack, "o_bob", &bob).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_open_data"))
        );
    }
    assert_eq!(tampered_werun(&stack, "o_bob", &bob).await.0, 401, "revoked");

    // A payment settled by its notification, then a forged copy of it.
    stack.put_order(PAID, "o_alice", 1).await;
    let prepay_id = prepay(&stack, &token, PAID).await;
    let paid = stack
        .sim_post("/__sim/pay/complete", json!({"prepay_id": prepay_id}))
        .await;
    assert_eq!(paid["deliveries"][0]["status"], 204, "{paid}");
    let forged = stack
        .sim_post(
            "/__sim/pay/complete",
            json!({"prepay_id": prepay_id, "mode": "tampered"}),
        )
        .await;
    assert_eq!(forged["deliveries"][0]["status"], 401, "{forged}");

    // A payment of another amount, delivered three times at once: kept for attention once.
    stack.put_order(MISPAID, "o_alice", 100).await;
    let prepay_id = prepay(&stack, &token, MISPAID).await;
    let mispaid = stack
        .sim_post(
            "/__sim/pay/complete",
            json!({"prepay_id": prepay_id, "amount": 1, "copies": 3}),
        )
        .await;
    for delivery in mispaid["deliveries"].as_array().unwrap() {
        assert_eq!(delivery["status"], 204, "{mispaid}");
    }
    assert_eq!(stack.order(MISPAID).await["status"].as_s().unwrap(), "UNPAID");

    // The back office refunds the paid order.
    let refund = json!({"op": "refund", "out_trade_no": PAID, "out_refund_no": "R_METRICS_1", "amount": 1});
    let refunded = stack.merchant(refund.clone()).await;
    assert!(refunded.is_ok(), "{refunded:?}");
    assert!(stack.merchant(refund).await.is_ok(), "a retry is the same refund");

    // A forged message push.
    stack.enable_push("safe", "xml").await;
    let forged =
        json!({"message": {"FromUserName": "o_alice", "MsgType": "text", "Content": "hi"}, "tamper": "padding"});
    assert_eq!(
        stack.sim_post("/__sim/push/send", forged).await["deliveries"][0]["status"],
        401
    );

    // WeChat's rate limit on checksession; then the user logs in elsewhere: the key is stale.
    stack
        .sim_post("/__sim/faults", json!({"api": "checksession", "errcode": 45011}))
        .await;
    let (status, body) = session_check(&stack, &token).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("rate_limited")),
        "{body}"
    );
    stack.mint_code("o_alice").await;
    let (status, body) = session_check(&stack, &token).await;
    assert_eq!((status, body["valid"].as_bool()), (200, Some(false)), "{body}");
    assert_eq!(session_check(&stack, &token).await.0, 401, "revoked");

    let lines = capture.lines();
    drop(capture);
    let counted: Vec<(String, String, Option<String>)> = lines.iter().map(|l| check_emf(l)).collect();
    let count = |metric: Metric, function: &str, err_code: Option<&str>| {
        counted
            .iter()
            .filter(|(m, f, c)| m == metric.name() && f == function && (err_code.is_none() || c.as_deref() == err_code))
            .count()
    };
    let all = |metric: Metric| counted.iter().filter(|(m, _, _)| m == metric.name()).count();
    let summary = lines.join("\n");

    assert_eq!(all(Metric::Logins), 2, "alice and bob: {summary}");
    assert_eq!(count(Metric::Logins, "login", None), 2);
    assert_eq!(all(Metric::OpenDataFailures), 6, "alice's one, bob's five: {summary}");
    assert_eq!(count(Metric::OpenDataFailures, "werun", None), 6);
    assert_eq!(
        all(Metric::SessionsRevoked),
        2,
        "bob's budget, alice's stale key: {summary}"
    );
    assert_eq!(count(Metric::SessionsRevoked, "werun", None), 1);
    assert_eq!(count(Metric::SessionsRevoked, "session", None), 1);
    assert_eq!(all(Metric::PaymentsSettled), 1, "{summary}");
    assert_eq!(count(Metric::PaymentsSettled, "pay-notify", None), 1);
    assert_eq!(all(Metric::PaymentAnomalies), 1, "three copies, one anomaly: {summary}");
    assert_eq!(count(Metric::PaymentAnomalies, "pay-notify", None), 1);
    assert_eq!(all(Metric::NotificationsRejected), 2, "{summary}");
    assert_eq!(count(Metric::NotificationsRejected, "pay-notify", None), 1);
    assert_eq!(count(Metric::NotificationsRejected, "wechat-push", None), 1);
    assert_eq!(all(Metric::Refunds), 1, "a retry is not another refund: {summary}");
    assert_eq!(count(Metric::CallersThrottled, "decrypt-phone", None), 1, "{summary}");
    assert_eq!(count(Metric::Refunds, "merchant", None), 1);
    assert_eq!(count(Metric::WechatErrors, "session", Some("45011")), 1, "{summary}");
    assert_eq!(
        count(Metric::WechatErrors, "session", Some("87009")),
        1,
        "checksession's answer for a stale key: {summary}"
    );
    assert_eq!(all(Metric::WechatErrors), 2, "{summary}");
    let seen: BTreeSet<&str> = counted.iter().map(|(m, _, _)| m.as_str()).collect();
    let every: BTreeSet<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
    assert_eq!(seen, every, "the journey emits every metric");

    // The request id makes a line findable: API Gateway's, from the events.
    let login_line: Value = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|l| l.get("Logins").is_some())
        .unwrap();
    assert_eq!(login_line["request_id"], "JKJaXmPLvHcESHA=", "{login_line}");

    for (name, secret) in [
        ("app secret", APP_SECRET),
        ("APIv3 key", APIV3_KEY),
        ("push token", PUSH_TOKEN),
        ("push EncodingAESKey", PUSH_AES_KEY),
        ("alice's session_key", alice_key.as_str()),
        ("bob's session_key", bob_key.as_str()),
        ("alice's login token", token.as_str()),
        ("bob's login token", bob.as_str()),
        ("alice's openid", "o_alice"),
        ("bob's openid", "o_bob"),
        ("phone number", "13800138000"),
    ] {
        assert!(!summary.contains(secret), "the {name} appears in a metric line");
    }
}
